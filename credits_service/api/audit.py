"""The append-only credit audit log: one client's, a search across clients, and an export."""

from flask import Response, current_app

from .. import services
from ..audit.export import MEDIA_TYPES, export_chunks, filename
from ..audit.reader import AuditFilter
from ..auth import admin_read
from ..extensions import db
from ..schemas.audit import (
    AuditExportQuerySchema,
    AuditLogPageSchema,
    AuditLogQuerySchema,
    AuditSearchPageSchema,
    AuditSearchQuerySchema,
)
from . import Blueprint

blp = Blueprint("audit", __name__, description="Every admin change to a client's credits.")
search_blp = Blueprint("audit-search", __name__, description="The audit log of every client: search and export.")


@blp.route("/<client_id:client_id>/audit-log", methods=["GET"])
@admin_read
@blp.arguments(AuditLogQuerySchema, location="query")
@blp.response(200, AuditLogPageSchema)
def list_audit_log(query, client_id):
    """Entries newest first, optionally of one action; page with offset or with before (nextBefore), not both."""
    return services.audit_log().client_page(
        client_id, query["limit"], query["offset"], query.get("before"), query.get("action")
    )


@search_blp.route("", methods=["GET"])
@admin_read
@search_blp.arguments(AuditSearchQuerySchema, location="query")
@search_blp.response(200, AuditSearchPageSchema)
def search_audit_log(query):
    """Entries of every client newest first, filtered; nextBefore is null on the last page."""
    return services.audit_log().search(AuditFilter.of(query), query["limit"], query.get("before"))


@search_blp.route("/export", methods=["GET"])
@admin_read
@search_blp.arguments(AuditExportQuerySchema, location="query")
@search_blp.doc(responses={"200": {
    "description": "Every selected entry, newest first, as an attachment.",
    "content": {media_type: {"schema": {"type": "string"}} for media_type in MEDIA_TYPES.values()},
}})
def export_audit_log(query):
    """Every entry the filters select, newest first, streamed as CSV (with a header row) or NDJSON."""
    export_format = query["format"]
    name = filename(export_format, current_app.config["CLOCK"]())
    return Response(
        export_chunks(db.engine, AuditFilter.of(query), export_format),
        mimetype=MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
