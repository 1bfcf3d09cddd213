"""The audit log: one client's page, the search across clients, the export, and an entry."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..models import AUDIT_ACTIONS
from .common import PageQuerySchema, page_schema
from .fields import MAX_ID, Instant, StrictSchema, Text, client_id_field

EXPORT_FORMATS = ("csv", "ndjson")


def _before() -> fields.Integer:
    return fields.Integer(
        validate=validate.Range(1, MAX_ID),
        metadata={"description": "Keyset paging: only entries older than this entry id (the previous page's nextBefore)."},
    )


def _next_before() -> fields.Integer:
    return fields.Integer(data_key="nextBefore", allow_none=True,
                          metadata={"description": "Give it as before for the next page; null on the last page."})


class AuditLogQuerySchema(PageQuerySchema):
    action = fields.String(validate=validate.OneOf(AUDIT_ACTIONS))
    before = _before()

    @validates_schema
    def _one_way_of_paging(self, data, **kwargs):
        if data.get("before") is not None and data["offset"] > 0:
            raise ValidationError("Page with before or with offset, not both.", "before")


class AuditFilterSchema(StrictSchema):
    """What an investigation across clients selects; every filter is optional."""

    client_id = client_id_field(data_key="clientId")
    admin_id = Text(data_key="adminId", min_length=1, max_length=200,
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
    before = _before()


class AuditEntrySchema(Schema):
    id = fields.Integer()
    client_id = fields.String(data_key="clientId")
    admin_id = fields.String(data_key="adminId")
    action = fields.String()
    details = fields.Dict()
    previous_value = fields.String(data_key="previousValue", allow_none=True)
    new_value = fields.String(data_key="newValue", allow_none=True)
    created_at = Instant(data_key="createdAt")
    seq = fields.Integer(metadata={"description": "The entry's place in its client's hash chain, from 1."})
    hash = fields.String(
        metadata={"description": "HMAC-SHA256 (hex) over the previous entry's hash and this entry's "
                                 "canonical encoding: `flask audit verify` recomputes it."}
    )


class AuditLogPageSchema(page_schema("OffsetAuditLogPage", AuditEntrySchema)):
    next_before = _next_before()


class AuditSearchPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    limit = fields.Integer()
    next_before = _next_before()
