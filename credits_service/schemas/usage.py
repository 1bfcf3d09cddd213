"""Usage: the platform's consumption and quota status, and the admins' month-by-month history."""

from marshmallow import Schema, fields, validate

from .common import ErrorSchema
from .fields import Instant, StrictInteger, StrictSchema, month_field


class UsageConsumeSchema(StrictSchema):
    count = StrictInteger(load_default=1, validate=validate.Range(1, 10_000))


class UsageResultSchema(Schema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True, metadata={"description": "Left once used and held are counted."})


class QuotaExceededSchema(ErrorSchema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True, metadata={"description": "Left once used and held are counted."})
    generations_held = fields.Integer(data_key="generationsHeld", metadata={"description": "What open holds reserve."})


class QuotaStatusSchema(Schema):
    plan = fields.String()
    month = fields.String()
    generations_used = fields.Integer(data_key="generationsUsed")
    generations_held = fields.Integer(data_key="generationsHeld",
                                      metadata={"description": "What open holds reserve; counted as used below."})
    generations_limit = fields.Integer(data_key="generationsLimit")
    generations_remaining = fields.Integer(data_key="generationsRemaining", allow_none=True)
    base_limit = fields.Integer(data_key="baseLimit")
    granted_this_month = fields.Integer(data_key="grantedThisMonth")
    usage_percent = fields.Float(data_key="usagePercent")
    is_unlimited = fields.Boolean(data_key="isUnlimited")
    is_at_limit = fields.Boolean(data_key="isAtLimit")
    is_near_limit = fields.Boolean(data_key="isNearLimit")
    reset_date = Instant(data_key="resetDate")
    storage_used_bytes = fields.Integer(data_key="storageUsedBytes", metadata={"description": "What the client stores."})
    storage_quota_mb = fields.Integer(data_key="storageQuotaMb", metadata={"description": "-1 means unlimited."})
    storage_remaining_bytes = fields.Integer(data_key="storageRemainingBytes", allow_none=True,
                                             metadata={"description": "Null when unlimited."})
    is_storage_at_limit = fields.Boolean(data_key="isStorageAtLimit",
                                         metadata={"description": "No positive delta fits until some is freed."})


class UsageHistoryQuerySchema(StrictSchema):
    from_month = month_field("from", "The first month (YYYY-MM); defaults to 11 months before to.")
    to_month = month_field("to", "The last month (YYYY-MM); defaults to this UTC month.")


class UsageMonthSchema(Schema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount",
                                      metadata={"description": "consumedCount + capturedCount - refundedCount."})
    granted_this_month = fields.Integer(data_key="grantedThisMonth")
    consumed_count = fields.Integer(data_key="consumedCount", metadata={"description": "Consumed directly."})
    captured_count = fields.Integer(data_key="capturedCount", metadata={"description": "Captured from holds."})
    refunded_count = fields.Integer(data_key="refundedCount", metadata={"description": "Given back by refunds."})


class UsageHistorySchema(Schema):
    from_month = fields.String(data_key="from")
    to_month = fields.String(data_key="to")
    items = fields.List(fields.Nested(UsageMonthSchema))
