"""Schemas every resource uses: the error shape, and offset paging."""

from marshmallow import Schema, fields, validate

from ..plans import MAX_LIMIT
from .fields import StrictSchema


class ErrorSchema(Schema):
    error = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")


class PageQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 100))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, MAX_LIMIT))


def page_schema(name: str, item: type[Schema]) -> type[Schema]:
    """A page of items, as every offset-paged list answers."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item)),
            "limit": fields.Integer(),
            "offset": fields.Integer(),
            "next_offset": fields.Integer(data_key="nextOffset", allow_none=True),
        },
        name=name,
    )
