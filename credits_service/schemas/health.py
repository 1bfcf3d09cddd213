"""Liveness and readiness answers."""

from marshmallow import Schema, fields

from .common import ErrorSchema


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


class CheckSchema(Schema):
    status = fields.String(metadata={"description": "ok or unavailable; the replica may also be lagging"})
    duration_ms = fields.Float(data_key="durationMs")
    error = fields.String(allow_none=True, metadata={"description": "The kind of failure, e.g. OperationalError."})
    fatal = fields.Boolean(metadata={"description": "Whether this check failing makes the instance not ready."})
    detail = fields.String(allow_none=True, metadata={"description": "What a failure means for requests."})
    lag_seconds = fields.Float(data_key="lagSeconds", allow_none=True,
                               metadata={"description": "The replica's: seconds behind the primary, 0 when caught up."})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema),
                         metadata={"description": "database; rateLimitStorage when rate limits use Redis; replica when DATABASE_REPLICA_URL is set."})


class NotReadySchema(ErrorSchema):
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema))
