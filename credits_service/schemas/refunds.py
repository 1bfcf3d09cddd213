"""Refunds: give back a month's usage, and the list of them."""

from marshmallow import Schema, fields, validate

from .common import ErrorSchema, page_schema
from .fields import Instant, StrictInteger, StrictSchema, month_field, reason_field


class RefundCreateSchema(StrictSchema):
    count = StrictInteger(required=True, validate=validate.Range(1, 10_000))
    month = month_field("month", "The usage month to refund (YYYY-MM): this UTC month (default) or the one before.")
    reason = reason_field()


class RefundResultSchema(Schema):
    refund_id = fields.Integer(data_key="refundId")
    month = fields.String()
    count = fields.Integer()
    generation_count = fields.Integer(data_key="generationCount", metadata={"description": "The month's usage now."})
    generations_remaining = fields.Integer(data_key="generationsRemaining", allow_none=True)


class RefundConflictSchema(ErrorSchema):
    generation_count = fields.Integer(data_key="generationCount",
                                      metadata={"description": "What the month counts, when that is the refusal."})


class RefundSchema(Schema):
    id = fields.Integer()
    month = fields.String()
    count = fields.Integer()
    reason = fields.String(allow_none=True)
    key_name = fields.String(data_key="keyName")
    created_at = Instant(data_key="createdAt")


RefundPageSchema = page_schema("RefundPage", RefundSchema)
