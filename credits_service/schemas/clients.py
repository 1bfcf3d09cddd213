"""Clients: create, and what a client looks like."""

from marshmallow import Schema, fields, validate

from ..plans import PLANS
from .common import page_schema
from .fields import NOT_BLANK, Instant, StrictSchema, Text, client_id_field


class ClientCreateSchema(StrictSchema):
    id = client_id_field(metadata={"description": "Generated when absent."})
    name = Text(
        required=True,
        min_length=1,
        max_length=200,
        pattern=NOT_BLANK,
        pattern_error="Must not be blank or contain NUL characters.",
    )
    plan = fields.String(validate=validate.OneOf(PLANS), metadata={"description": "Defaults to free."})


class ClientSchema(Schema):
    id = fields.String()
    name = fields.String()
    plan = fields.String()
    created_at = Instant(data_key="createdAt")


ClientPageSchema = page_schema("ClientPage", ClientSchema)
