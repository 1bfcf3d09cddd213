"""Holds: place, capture, read; and the answers."""

from marshmallow import Schema, fields, validate

from .common import ErrorSchema, PageQuerySchema, page_schema
from .fields import Instant, StrictInteger, StrictSchema, Text
from .usage import QuotaExceededSchema

HOLD_STATUSES = ("held", "captured", "released", "expired")
MAX_TTL_SECONDS = 86400


class HoldCreateSchema(StrictSchema):
    count = StrictInteger(required=True, validate=validate.Range(1, 10_000))
    ttl_seconds = StrictInteger(data_key="ttlSeconds", load_default=900, validate=validate.Range(1, MAX_TTL_SECONDS),
                                metadata={"description": "How long the hold counts unless resolved; default 900."})
    reference = Text(max_length=200, metadata={"description": "Yours to match it with your job, e.g. its id."})


class HoldCaptureSchema(StrictSchema):
    count = StrictInteger(validate=validate.Range(0, 10_000),
                          metadata={"description": "How many of the hold to pay for; default all of it. The rest "
                                                   "is released."})


class HoldReleaseSchema(StrictSchema):
    """A release takes no fields (an empty body, or none)."""


class HoldQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(HOLD_STATUSES))


class HoldSchema(Schema):
    hold_id = fields.Integer(data_key="holdId")
    status = fields.String(metadata={"description": "held, captured, released or expired (as of now)."})
    count = fields.Integer(metadata={"description": "The credits the hold reserved."})
    captured_count = fields.Integer(data_key="capturedCount")
    released_count = fields.Integer(data_key="releasedCount")
    month = fields.String(metadata={"description": "The usage month the hold belongs to (where a capture counts)."})
    reference = fields.String(allow_none=True)
    created_at = Instant(data_key="createdAt")
    expires_at = Instant(data_key="expiresAt")
    resolved_at = Instant(data_key="resolvedAt", allow_none=True)


class HoldPlacedSchema(Schema):
    hold_id = fields.Integer(data_key="holdId")
    status = fields.String()
    count = fields.Integer()
    month = fields.String()
    expires_at = Instant(data_key="expiresAt")
    reference = fields.String(allow_none=True)
    generations_held = fields.Integer(data_key="generationsHeld", metadata={"description": "The month's open holds."})
    generations_remaining = fields.Integer(data_key="generationsRemaining", allow_none=True,
                                           metadata={"description": "What is left once used and held are counted."})


class HoldResolvedSchema(Schema):
    hold_id = fields.Integer(data_key="holdId")
    status = fields.String()
    count = fields.Integer()
    captured_count = fields.Integer(data_key="capturedCount")
    released_count = fields.Integer(data_key="releasedCount")
    month = fields.String()
    generation_count = fields.Integer(data_key="generationCount", metadata={"description": "The hold's month's usage."})
    generations_held = fields.Integer(data_key="generationsHeld")
    generations_remaining = fields.Integer(data_key="generationsRemaining", allow_none=True)


class HoldExceededSchema(QuotaExceededSchema):
    generations_held = fields.Integer(data_key="generationsHeld")


class HoldConflictSchema(ErrorSchema):
    status = fields.String(metadata={"description": "The hold's status: captured, released or expired; held when a capture asked for more than it."})


HoldPageSchema = page_schema("HoldPage", HoldSchema)
