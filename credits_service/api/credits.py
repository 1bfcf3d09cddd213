"""Credits: grant extra generations, void a grant, or reset this month's usage."""

from .. import services
from ..auth import admin_write
from ..schemas.credits import CreditActionSchema, CreditResultSchema
from . import Blueprint, actor
from .idempotency import idempotent

blp = Blueprint("credits", __name__, description="Grant credits, void a grant, or reset usage.")


@blp.route("/<client_id:client_id>/credits", methods=["POST"])
@admin_write
@blp.arguments(CreditActionSchema)
@blp.response(200, CreditResultSchema)
@idempotent(CreditResultSchema)
def change_credits(body, client_id, idempotency):
    """grant adds amount to the monthly limit (scope permanent) or to this UTC month only (scope
    month); void undoes a grant by its grantId; reset sets this UTC month's usage to 0."""
    action, reason = body["action"], body.get("reason")
    if action == "grant":
        scope = body.get("scope", "permanent")
        return services.grants().grant_credits(actor(), client_id, body["amount"], scope, reason, idempotency)
    if action == "void":
        return services.grants().void_grant(actor(), client_id, body["grant_id"], reason, idempotency)
    return services.consumption().reset_usage(actor(), client_id, reason, idempotency)
