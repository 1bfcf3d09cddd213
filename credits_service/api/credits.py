"""Credits: grant extra generations, or reset this month's usage."""

from ..auth import admin_write
from ..schemas import CreditActionSchema, CreditResultSchema
from . import Blueprint, actor, credits_service
from .idempotency import idempotent

blp = Blueprint("credits", __name__, description="Grant credits or reset usage.")


@blp.route("/<client_id:client_id>/credits", methods=["POST"])
@admin_write
@blp.arguments(CreditActionSchema)
@blp.response(200, CreditResultSchema)
@idempotent(CreditResultSchema)
def change_credits(body, client_id, idempotency):
    """grant raises the monthly limit by amount; reset sets this UTC month's usage to 0."""
    service = credits_service()
    if body["action"] == "grant":
        return service.grant_credits(actor(), client_id, body["amount"], body.get("reason"), idempotency)
    return service.reset_usage(actor(), client_id, body.get("reason"), idempotency)
