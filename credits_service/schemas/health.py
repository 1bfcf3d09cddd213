"""Liveness and readiness answers."""

from marshmallow import Schema, fields

from .common import ErrorSchema


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
