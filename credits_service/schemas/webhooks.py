"""Webhooks: endpoints, their deliveries, and what each answer holds."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..models import DELIVERY_STATUSES
from ..services.events import SUBSCRIBABLE
from .common import ErrorSchema, PageQuerySchema, page_schema
from .fields import Instant, StrictBoolean, StrictSchema, Text

# What a delivery can be sent to, stated whole so that the document and the check agree: a host
# name or IPv4 address (no user:password, no [IPv6]), a port up to 65535, then printable ASCII.
_HOST = r"[A-Za-z0-9._~%!$&'()*+,;=-]+"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = rf"^https?://{_HOST}(?::{_PORT})?(?:[/?#][!-~]*)?$"
URL_MAX_LENGTH = 2000
EVERY_EVENT = "*"


def _url_field(**kwargs) -> Text:
    return Text(max_length=URL_MAX_LENGTH, pattern=URL_PATTERN,
                pattern_error="Must be an http:// or https:// URL with a host, e.g. https://platform.internal/hooks:"
                              " printable ASCII, no spaces, no user:password.",
                metadata={"description": "Where events are POSTed; http or https, redirects not followed."}, **kwargs)


class _EventTypes(fields.List):
    """Event types, each once, in the order first given."""

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        return list(dict.fromkeys(super()._deserialize(value, attr, data, **kwargs)))


def _events_field(**kwargs) -> fields.List:
    return _EventTypes(
        fields.String(validate=validate.OneOf((*SUBSCRIBABLE, EVERY_EVENT))), validate=validate.Length(min=1),
        metadata={"description": f"Event types to receive, or ['{EVERY_EVENT}'] for all of them."}, **kwargs)


class WebhookCreateSchema(StrictSchema):
    url = _url_field(required=True)
    events = _events_field(required=True)
    description = Text(max_length=500)


class WebhookUpdateSchema(StrictSchema):
    url = _url_field()
    events = _events_field()
    description = Text(max_length=500, allow_none=True)
    enabled = StrictBoolean(metadata={"description": "false pauses deliveries; they wait until true again."})

    AT_LEAST_ONE_OF = ("url", "events", "description", "enabled")

    @validates_schema
    def _changes_something(self, data, **kwargs):
        if not set(self.AT_LEAST_ONE_OF) & data.keys():
            raise ValidationError("Give at least one of url, events, description, enabled.", "_schema")


class WebhookSchema(Schema):
    id = fields.Integer()
    url = fields.String()
    events = fields.List(fields.String())
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    created_at = Instant(data_key="createdAt")
    updated_at = Instant(data_key="updatedAt")


class WebhookWithSecretSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "whsec_ + base64: verify deliveries with it. Shown only here."})


class DeliveryQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliverySchema(Schema):
    id = fields.Integer()
    event_id = fields.String(data_key="eventId", metadata={"description": "The webhook-id header of every attempt."})
    event_type = fields.String(data_key="eventType")
    status = fields.String(metadata={"description": "pending, succeeded or failed."})
    attempts = fields.Integer()
    last_status_code = fields.Integer(data_key="lastStatusCode", allow_none=True)
    last_error = fields.String(data_key="lastError", allow_none=True)
    next_attempt_at = Instant(data_key="nextAttemptAt", allow_none=True)
    created_at = Instant(data_key="createdAt")
    delivered_at = Instant(data_key="deliveredAt", allow_none=True)


class DeliveryConflictSchema(ErrorSchema):
    status = fields.String(metadata={"description": "The delivery's status: pending or succeeded."})


WebhookPageSchema = page_schema("WebhookPage", WebhookSchema)
DeliveryPageSchema = page_schema("DeliveryPage", DeliverySchema)
