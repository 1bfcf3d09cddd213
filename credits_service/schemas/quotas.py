"""Quotas: a plan and limit change, and the quota read with this month's usage."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..plans import MAX_LIMIT, PLANS, UNLIMITED
from .audit import AuditEntrySchema
from .fields import Instant, StrictInteger, StrictSchema, reason_field


def _limit_field(data_key: str) -> StrictInteger:
    return StrictInteger(
        data_key=data_key,
        validate=validate.Range(UNLIMITED, MAX_LIMIT),
        metadata={"description": "-1 means unlimited."},
    )


class QuotaUpdateSchema(StrictSchema):
    plan = fields.String(validate=validate.OneOf(PLANS))
    monthly_generation_limit = _limit_field("monthlyGenerationLimit")
    storage_quota_mb = _limit_field("storageQuotaMb")
    reason = reason_field()

    # The OpenAPI document states this rule too (see openapi.py).
    AT_LEAST_ONE_OF = ("plan", "monthly_generation_limit", "storage_quota_mb")

    @validates_schema
    def _changes_something(self, data, **kwargs):
        if not set(self.AT_LEAST_ONE_OF) & data.keys():
            raise ValidationError(
                "Give at least one of plan, monthlyGenerationLimit, storageQuotaMb.", "_schema"
            )


class QuotaSchema(Schema):
    client_id = fields.String(data_key="clientId")
    plan = fields.String()
    monthly_generation_limit = fields.Integer(data_key="monthlyGenerationLimit")
    storage_quota_mb = fields.Integer(data_key="storageQuotaMb")
    updated_at = Instant(data_key="updatedAt")


class UsageSchema(Schema):
    """This UTC month's usage against its effective limit."""

    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer(metadata={"description": "The effective limit: baseLimit + grantedThisMonth."})
    base_limit = fields.Integer(data_key="baseLimit", metadata={"description": "The stored monthly limit."})
    granted_this_month = fields.Integer(
        data_key="grantedThisMonth", metadata={"description": "This month's live month-grants."}
    )
    held = fields.Integer(metadata={"description": "What this month's open holds reserve: counted as used."})
    remaining = fields.Integer(allow_none=True, metadata={"description": "limit - generationCount - held."})
    is_unlimited = fields.Boolean(data_key="isUnlimited")
    reset_date = Instant(data_key="resetDate")
    storage_used_bytes = fields.Integer(data_key="storageUsedBytes",
                                        metadata={"description": "What the client stores now (a level, not this "
                                                                 "month's); shown with the quota read only."})


class QuotaOverviewSchema(Schema):
    quota = fields.Nested(QuotaSchema)
    usage = fields.Nested(UsageSchema)
    audit_log = fields.List(fields.Nested(AuditEntrySchema), data_key="auditLog")
