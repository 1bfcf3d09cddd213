"""The grant ledger of a client."""

from .. import services
from ..auth import admin_read
from ..schemas.credits import GrantPageSchema, GrantQuerySchema
from . import Blueprint

blp = Blueprint("grants", __name__, description="Every credit grant, with its scope and status.")


@blp.route("/<client_id:client_id>/grants", methods=["GET"])
@admin_read
@blp.arguments(GrantQuerySchema, location="query")
@blp.response(200, GrantPageSchema)
def list_grants(query, client_id):
    """Grants newest first, optionally of one scope and/or status (active, expired, voided)."""
    return services.grants(replica=True).list_grants(
        client_id, query["limit"], query["offset"], query.get("scope"), query.get("status")
    )
