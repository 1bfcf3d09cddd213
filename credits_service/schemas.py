"""marshmallow schemas: what the API accepts (validated, unknown fields refused) and what it returns."""

import functools
from datetime import UTC

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from .models import AUDIT_ACTIONS, GRANT_SCOPES
from .months import iso_utc
from .plans import MAX_LIMIT, PLANS, UNLIMITED

# Anchored with ^...$ for the OpenAPI document (ECMA regex); FullMatch makes "$" strict in Python too.
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
NO_NUL = r"^[^\x00]*$"
# Not blank: at least one character other than NUL and ASCII white space.
NOT_BLANK = r"^[^\x00]*[^\x00 \t\n\r\f\v][^\x00]*$"
REASON_MAX = 500
# A usage month, YYYY-MM (years 1000 to 9999: four digits, so months compare as strings).
MONTH_PATTERN = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"
# Ledger ids are 64-bit on both databases.
MAX_ID = 2**63 - 1
GRANT_STATUSES = ("active", "expired", "voided")
# Entry ids are 64-bit; a larger `before` could not be compared on SQLite.
MAX_ENTRY_ID = 2**63 - 1
EXPORT_FORMATS = ("csv", "ndjson")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class StrictInteger(fields.Integer):
    """A JSON integer and nothing else: no floats (not even 100.0), booleans or numeric strings."""

    default_error_messages = {"invalid": "Must be an integer."}

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


class FullMatch(validate.Regexp):
    """Regexp over the whole string: a trailing newline does not slip past "$"."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class Text(fields.String):
    """A string both databases can store: PostgreSQL refuses NUL and unpaired surrogates.

    `pattern` (matched whole, and stated in the OpenAPI document) refuses NUL; unpaired
    surrogates cannot be stated there and are refused on their own.
    """

    default_error_messages = {"surrogate": "Must not contain unpaired surrogates."}

    def __init__(self, *, pattern=NO_NUL, pattern_error="Must not contain NUL characters.",
                 validate=(), **kwargs):
        extra = [validate] if callable(validate) else list(validate)
        super().__init__(validate=[FullMatch(pattern, error=pattern_error), *extra], **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            raise self.make_error("surrogate")
        return text


class UTCDateTime(fields.DateTime):
    """Instants as iso_utc writes them."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return iso_utc(value)


class Instant(fields.AwareDateTime):
    """An ISO 8601 instant with its offset, as UTC. One without an offset is refused: in an
    investigation, guessing the time zone would quietly select the wrong entries."""

    default_error_messages = {
        "invalid": "Not a valid ISO 8601 instant: give a date, a time and an offset, e.g. 2026-11-25T12:00:00Z.",
        "invalid_awareness": "Give the offset (Z or +hh:mm): an instant without one is ambiguous.",
        "range": "Must be an instant between the years 1 and 9999 in UTC.",
    }

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("range") from None


def _before() -> fields.Integer:
    return fields.Integer(
        validate=validate.Range(1, MAX_ENTRY_ID),
        metadata={"description": "Keyset paging: only entries older than this entry id (the previous page's nextBefore)."},
    )


def _reason() -> Text:
    return Text(validate=validate.Length(max=REASON_MAX), metadata={"description": "Why, for the audit log."})


def _limit_field(data_key: str) -> StrictInteger:
    return StrictInteger(
        data_key=data_key,
        validate=validate.Range(UNLIMITED, MAX_LIMIT),
        metadata={"description": "-1 means unlimited."},
    )


# ---- input -----------------------------------------------------------------


class ClientCreateSchema(StrictSchema):
    id = Text(
        pattern=CLIENT_ID_PATTERN,
        pattern_error="Must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'.",
        metadata={"description": "Generated when absent."},
    )
    name = Text(
        required=True,
        pattern=NOT_BLANK,
        pattern_error="Must not be blank or contain NUL characters.",
        validate=validate.Length(min=1, max=200),
    )
    plan = fields.String(validate=validate.OneOf(PLANS), metadata={"description": "Defaults to free."})


class PageQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 100))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, MAX_LIMIT))


class AuditLogQuerySchema(PageQuerySchema):
    action = fields.String(validate=validate.OneOf(AUDIT_ACTIONS))
    before = _before()

    @validates_schema
    def _one_way_of_paging(self, data, **kwargs):
        if data.get("before") is not None and data["offset"] > 0:
            raise ValidationError("Page with before or with offset, not both.", "before")


class AuditFilterSchema(StrictSchema):
    """What an investigation across clients selects; every filter is optional."""

    client_id = Text(
        data_key="clientId",
        pattern=CLIENT_ID_PATTERN,
        pattern_error="Must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'.",
    )
    admin_id = Text(data_key="adminId", validate=validate.Length(1, 200),
                    metadata={"description": "The name of the key that made the change."})
    action = fields.List(
        fields.String(validate=validate.OneOf(AUDIT_ACTIONS)),
        validate=validate.Length(min=1),
        metadata={"description": "One or several actions: repeat the parameter, action=credit_grant&action=usage_reset."},
    )
    since = Instant(metadata={"description": "Entries created at or after this instant (with its offset)."})
    until = Instant(metadata={"description": "Entries created before this instant (with its offset); after since."})

    @validates_schema
    def _since_before_until(self, data, **kwargs):
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ValidationError("Must be after since: the range is since (inclusive) to until (exclusive).", "until")


class AuditSearchQuerySchema(AuditFilterSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 100))
    before = _before()


class AuditExportQuerySchema(AuditFilterSchema):
    format = fields.String(load_default="csv", validate=validate.OneOf(EXPORT_FORMATS))


class GrantQuerySchema(PageQuerySchema):
    scope = fields.String(validate=validate.OneOf(GRANT_SCOPES))
    status = fields.String(validate=validate.OneOf(GRANT_STATUSES))


def _month_field(data_key: str, description: str) -> Text:
    return Text(data_key=data_key, pattern=MONTH_PATTERN, pattern_error="Must be a month as YYYY-MM.",
                metadata={"description": description})


class UsageHistoryQuerySchema(StrictSchema):
    from_month = _month_field("from", "The first month (YYYY-MM); defaults to 11 months before to.")
    to_month = _month_field("to", "The last month (YYYY-MM); defaults to this UTC month.")


class QuotaUpdateSchema(StrictSchema):
    plan = fields.String(validate=validate.OneOf(PLANS))
    monthly_generation_limit = _limit_field("monthlyGenerationLimit")
    storage_quota_mb = _limit_field("storageQuotaMb")
    reason = _reason()

    # The OpenAPI document states this rule too (see openapi.py).
    AT_LEAST_ONE_OF = ("plan", "monthly_generation_limit", "storage_quota_mb")

    @validates_schema
    def _changes_something(self, data, **kwargs):
        if not set(self.AT_LEAST_ONE_OF) & data.keys():
            raise ValidationError(
                "Give at least one of plan, monthlyGenerationLimit, storageQuotaMb.", "_schema"
            )


class GrantCreditsSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.Equal("grant"))
    amount = StrictInteger(required=True, validate=validate.Range(1, 1_000_000_000))
    reason = _reason()
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
    reason = _reason()


class ResetUsageSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.Equal("reset"))
    reason = _reason()


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
    """One instance per schema class: building one copies its fields, and loading keeps no state."""
    return schema_cls()


class UsageConsumeSchema(StrictSchema):
    count = StrictInteger(load_default=1, validate=validate.Range(1, 10_000))


# ---- output ----------------------------------------------------------------


class ClientSchema(Schema):
    id = fields.String()
    name = fields.String()
    plan = fields.String()
    created_at = UTCDateTime(data_key="createdAt")


class QuotaSchema(Schema):
    client_id = fields.String(data_key="clientId")
    plan = fields.String()
    monthly_generation_limit = fields.Integer(data_key="monthlyGenerationLimit")
    storage_quota_mb = fields.Integer(data_key="storageQuotaMb")
    updated_at = UTCDateTime(data_key="updatedAt")


class UsageSchema(Schema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer(metadata={"description": "The effective limit: baseLimit + grantedThisMonth."})
    base_limit = fields.Integer(data_key="baseLimit", metadata={"description": "The stored monthly limit."})
    granted_this_month = fields.Integer(
        data_key="grantedThisMonth", metadata={"description": "This month's live month-grants."}
    )
    remaining = fields.Integer(allow_none=True)
    is_unlimited = fields.Boolean(data_key="isUnlimited")
    reset_date = UTCDateTime(data_key="resetDate")


class AuditEntrySchema(Schema):
    id = fields.Integer()
    client_id = fields.String(data_key="clientId")
    admin_id = fields.String(data_key="adminId")
    action = fields.String()
    details = fields.Dict()
    previous_value = fields.String(data_key="previousValue", allow_none=True)
    new_value = fields.String(data_key="newValue", allow_none=True)
    created_at = UTCDateTime(data_key="createdAt")
    seq = fields.Integer(metadata={"description": "The entry's place in its client's hash chain, from 1."})
    hash = fields.String(
        metadata={"description": "HMAC-SHA256 (hex) over the previous entry's hash and this entry's "
                                 "canonical encoding: `flask audit verify` recomputes it."}
    )


class QuotaOverviewSchema(Schema):
    quota = fields.Nested(QuotaSchema)
    usage = fields.Nested(UsageSchema)
    audit_log = fields.List(fields.Nested(AuditEntrySchema), data_key="auditLog")


def _page_schema(name: str, item: type[Schema]) -> type[Schema]:
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item)),
            "limit": fields.Integer(),
            "offset": fields.Integer(),
            "next_offset": fields.Integer(data_key="nextOffset", allow_none=True),
        },
        name=name,
    )


class GrantSchema(Schema):
    id = fields.Integer()
    amount = fields.Integer()
    scope = fields.String()
    month = fields.String(allow_none=True)
    expires_at = UTCDateTime(data_key="expiresAt", allow_none=True)
    reason = fields.String(allow_none=True)
    admin_id = fields.String(data_key="adminId")
    created_at = UTCDateTime(data_key="createdAt")
    status = fields.String(metadata={"description": "active, expired (its month is over) or voided."})
    voided_at = UTCDateTime(data_key="voidedAt", allow_none=True)
    voided_by = fields.String(data_key="voidedBy", allow_none=True)
    void_reason = fields.String(data_key="voidReason", allow_none=True)


class UsageMonthSchema(Schema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    granted_this_month = fields.Integer(data_key="grantedThisMonth")


class UsageHistorySchema(Schema):
    from_month = fields.String(data_key="from")
    to_month = fields.String(data_key="to")
    items = fields.List(fields.Nested(UsageMonthSchema))


ClientPageSchema = _page_schema("ClientPage", ClientSchema)


def _next_before() -> fields.Integer:
    return fields.Integer(data_key="nextBefore", allow_none=True,
                          metadata={"description": "Give it as before for the next page; null on the last page."})


class AuditLogPageSchema(_page_schema("OffsetAuditLogPage", AuditEntrySchema)):
    next_before = _next_before()


class AuditSearchPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    limit = fields.Integer()
    next_before = _next_before()


GrantPageSchema = _page_schema("GrantPage", GrantSchema)


class CreditResultSchema(Schema):
    """The answer to a grant, a void or a reset; each action fills its own fields.

    previousLimit, newLimit and limit are this month's effective limits.
    """

    action = fields.String()
    grant_id = fields.Integer(data_key="grantId")
    scope = fields.String()
    month = fields.String(allow_none=True, metadata={"description": "A month grant's month; null for permanent."})
    expires_at = UTCDateTime(
        data_key="expiresAt", allow_none=True,
        metadata={"description": "A month grant's end (the next month's start); null for permanent."},
    )
    current_usage = fields.Integer(data_key="currentUsage")
    previous_limit = fields.Integer(data_key="previousLimit")
    new_limit = fields.Integer(data_key="newLimit")
    previous_usage = fields.Integer(data_key="previousUsage")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True)


class UsageResultSchema(Schema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True)


class QuotaStatusSchema(Schema):
    plan = fields.String()
    month = fields.String()
    generations_used = fields.Integer(data_key="generationsUsed")
    generations_limit = fields.Integer(data_key="generationsLimit")
    generations_remaining = fields.Integer(data_key="generationsRemaining", allow_none=True)
    base_limit = fields.Integer(data_key="baseLimit")
    granted_this_month = fields.Integer(data_key="grantedThisMonth")
    usage_percent = fields.Float(data_key="usagePercent")
    is_unlimited = fields.Boolean(data_key="isUnlimited")
    is_at_limit = fields.Boolean(data_key="isAtLimit")
    is_near_limit = fields.Boolean(data_key="isNearLimit")
    reset_date = UTCDateTime(data_key="resetDate")


class ErrorSchema(Schema):
    error = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")


class QuotaExceededSchema(ErrorSchema):
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount")
    limit = fields.Integer()
    remaining = fields.Integer(allow_none=True)


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


class CheckSchema(Schema):
    status = fields.String(metadata={"description": "ok or unavailable"})
    duration_ms = fields.Float(data_key="durationMs")
    error = fields.String(allow_none=True, metadata={"description": "The kind of failure, e.g. OperationalError."})
    fatal = fields.Boolean(metadata={"description": "Whether this check failing makes the instance not ready."})
    detail = fields.String(allow_none=True, metadata={"description": "What a failure means for requests."})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema),
                         metadata={"description": "database; rateLimitStorage when rate limits use Redis."})


class NotReadySchema(ErrorSchema):
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema))
