"""A client's usage month by month."""

from .. import services
from ..auth import admin_read
from ..schemas.usage import UsageHistoryQuerySchema, UsageHistorySchema
from . import Blueprint

blp = Blueprint("usage_history", __name__, description="Generations used and granted, month by month.")


@blp.route("/<client_id:client_id>/usage", methods=["GET"])
@admin_read
@blp.arguments(UsageHistoryQuerySchema, location="query")
@blp.response(200, UsageHistorySchema)
def usage_history(query, client_id):
    """Each month from..to that had usage or month-grants, oldest first (default: the last 12 months);
    400 when from is after to or the range is over 120 months."""
    return services.consumption(replica=True).usage_history(client_id, query.get("from_month"), query.get("to_month"))
