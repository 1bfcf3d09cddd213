"""The platform's side: consume credits and read quota status."""

from .. import services
from ..auth import service_write, status_read
from ..schemas.usage import (
    QuotaExceededSchema,
    QuotaStatusSchema,
    UsageConsumeSchema,
    UsageResultSchema,
)
from . import Blueprint
from .idempotency import idempotent

blp = Blueprint("usage", __name__, description="Credit consumption by the generation platform.")


@blp.route("/<client_id:client_id>/usage", methods=["POST"])
@service_write
@blp.arguments(UsageConsumeSchema, required=False)
@blp.response(200, UsageResultSchema)
@blp.alt_response(402, schema=QuotaExceededSchema, description="Over the monthly limit; nothing was consumed.")
@idempotent(UsageResultSchema)
def consume_usage(body, client_id, idempotency):
    """Add count generations to this UTC month, all or nothing; 402 when over the effective limit."""
    return services.consumption().consume(client_id, body["count"], idempotency)


@blp.route("/<client_id:client_id>/quota-status", methods=["GET"])
@status_read
@blp.response(200, QuotaStatusSchema)
def quota_status(client_id):
    """Usage against this month's effective limit: baseLimit (the stored one) plus grantedThisMonth."""
    return services.consumption().quota_status(client_id)
