"""Credits: a grant, a void or a reset (one body, chosen by its action), and the grant ledger."""

import functools

from marshmallow import Schema, ValidationError, fields, validate

from ..models import GRANT_SCOPES
from .common import PageQuerySchema, page_schema
from .fields import MAX_ID, Instant, StrictInteger, StrictSchema, reason_field

GRANT_STATUSES = ("active", "expired", "voided")


class GrantCreditsSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.Equal("grant"))
    amount = StrictInteger(required=True, validate=validate.Range(1, 1_000_000_000))
    reason = reason_field()
    # No load_default: a body without scope keeps the Idempotency-Key fingerprint it had
    # before scopes existed, so a retry across the upgrade still replays.
    scope = fields.String(
        validate=validate.OneOf(GRANT_SCOPES),
        metadata={"default": "permanent",
                  "description": "permanent raises the monthly limit; month adds to this UTC month only."},
    )


class VoidGrantSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.Equal("void"))
    grant_id = StrictInteger(required=True, data_key="grantId", validate=validate.Range(1, MAX_ID))
    reason = reason_field()


class ResetUsageSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.Equal("reset"))
    reason = reason_field()


class CreditActionSchema(StrictSchema):
    """A grant, a void or a reset, validated by the schema its action names (documented as oneOf)."""

    ONE_OF = {"grant": GrantCreditsSchema, "void": VoidGrantSchema, "reset": ResetUsageSchema}

    def load(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError({"_schema": ["Invalid input type."]})
        if "action" not in data:
            raise ValidationError({"action": ["Missing data for required field."]})
        chosen = self.ONE_OF.get(data["action"]) if isinstance(data["action"], str) else None
        if chosen is None:
            raise ValidationError({"action": [f"Must be one of: {', '.join(self.ONE_OF)}."]})
        return _instance(chosen).load(data, **kwargs)


@functools.cache
def _instance(schema_cls: type[Schema]) -> Schema:
    """One instance per schema class: loading keeps no state."""
    return schema_cls()


class CreditResultSchema(Schema):
    """The answer to a grant, a void or a reset; each action fills its own fields.

    previousLimit, newLimit and limit are this month's effective limits.
    """

    action = fields.String()
    grant_id = fields.Integer(data_key="grantId")
    scope = fields.String()
    month = fields.String(allow_none=True, metadata={"description": "A month grant's month; null for permanent."})
    expires_at = Instant(
        data_key="expiresAt", allow_none=True,
        metadata={"description": "A month grant's end (the next month's start); null for permanent."},
    )
    current_usage = fields.Integer(data_key="currentUsage")
    previous_limit = fields.Integer(data_key="previousLimit")
    new_limit = fields.Integer(data_key="newLimit")
    previous_usage = fields.Integer(data_key="previousUsage")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True)


class GrantQuerySchema(PageQuerySchema):
    scope = fields.String(validate=validate.OneOf(GRANT_SCOPES))
    status = fields.String(validate=validate.OneOf(GRANT_STATUSES))


class GrantSchema(Schema):
    id = fields.Integer()
    amount = fields.Integer()
    scope = fields.String()
    month = fields.String(allow_none=True)
    expires_at = Instant(data_key="expiresAt", allow_none=True)
    reason = fields.String(allow_none=True)
    admin_id = fields.String(data_key="adminId")
    created_at = Instant(data_key="createdAt")
    status = fields.String(metadata={"description": "active, expired (its month is over) or voided."})
    voided_at = Instant(data_key="voidedAt", allow_none=True)
    voided_by = fields.String(data_key="voidedBy", allow_none=True)
    void_reason = fields.String(data_key="voidReason", allow_none=True)


GrantPageSchema = page_schema("GrantPage", GrantSchema)
