"""Refunds: the platform gives back usage it consumed; admins list them."""

from .. import services
from ..auth import admin_read, service_write
from ..schemas.common import PageQuerySchema
from ..schemas.refunds import (
    RefundConflictSchema,
    RefundCreateSchema,
    RefundPageSchema,
    RefundResultSchema,
)
from . import Blueprint, actor
from .idempotency import idempotent

blp = Blueprint("refunds", __name__, description="Usage given back by the platform.")
admin_blp = Blueprint("refund-ledger", __name__, description="Every refund of a client, for finance.")


@blp.route("/<client_id:client_id>/usage/refunds", methods=["POST"])
@service_write
@blp.arguments(RefundCreateSchema)
@blp.response(200, RefundResultSchema)
@idempotent(RefundResultSchema, required=True, conflict=(
    RefundConflictSchema, "Past what the month counts, or a month that takes no refunds; nothing changed."))
def refund_usage(body, client_id, idempotency):
    """Lower a month's usage (this UTC month or the one before) by count; 409 past what it counts.
    An Idempotency-Key is required."""
    return services.refunds().refund(actor(), client_id, body["count"], body.get("month"), body.get("reason"),
                                     idempotency)


@admin_blp.route("/<client_id:client_id>/refunds", methods=["GET"])
@admin_read
@admin_blp.arguments(PageQuerySchema, location="query")
@admin_blp.response(200, RefundPageSchema)
def list_refunds(query, client_id):
    """The client's refunds, newest first; nextOffset is null on the last page."""
    return services.refunds(replica=True).list(client_id, query["limit"], query["offset"])
