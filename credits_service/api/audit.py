"""The append-only credit audit log."""

from ..auth import admin_read
from ..schemas import AuditLogPageSchema, AuditLogQuerySchema
from . import Blueprint, credits_service

blp = Blueprint("audit", __name__, description="Every admin change to a client's credits.")


@blp.route("/<client_id:client_id>/audit-log", methods=["GET"])
@admin_read
@blp.arguments(AuditLogQuerySchema, location="query")
@blp.response(200, AuditLogPageSchema)
def list_audit_log(query, client_id):
    """Entries newest first, optionally of one action."""
    return credits_service().audit_log(client_id, query["limit"], query["offset"], query.get("action"))
