"""The grant ledger of a client."""

from ..auth import admin_read
from ..schemas import GrantPageSchema, GrantQuerySchema
from . import Blueprint, grants_service

blp = Blueprint("grants", __name__, description="Every credit grant, with its scope and status.")


@blp.route("/<client_id:client_id>/grants", methods=["GET"])
@admin_read
@blp.arguments(GrantQuerySchema, location="query")
@blp.response(200, GrantPageSchema)
def list_grants(query, client_id):
    """Grants newest first, optionally of one scope and/or status (active, expired, voided)."""
    return grants_service().list_grants(
        client_id, query["limit"], query["offset"], query.get("scope"), query.get("status")
    )
