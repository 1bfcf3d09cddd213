"""A client's quota: plan, monthly generation limit and storage quota."""

from .. import services
from ..auth import admin_read, admin_write
from ..schemas.quotas import QuotaOverviewSchema, QuotaSchema, QuotaUpdateSchema
from . import Blueprint, actor

blp = Blueprint("quota", __name__, description="Plans and limits, with this month's usage.")


@blp.route("/<client_id:client_id>/quota", methods=["GET"])
@admin_read
@blp.response(200, QuotaOverviewSchema)
def get_quota(client_id):
    """The quota, this UTC month's usage (with its effective limit) and the 10 newest audit entries."""
    return services.quotas().quota_overview(client_id)


@blp.route("/<client_id:client_id>/quota", methods=["PUT"])
@admin_write
@blp.arguments(QuotaUpdateSchema)
@blp.response(200, QuotaSchema)
def update_quota(changes, client_id):
    """Change the plan and/or limits; a new plan brings its defaults for the limits not given."""
    return services.quotas().update_quota(actor(), client_id, **changes)
