"""Storage: the platform's deltas, an admin's reconciliation, and what a client stores."""

from marshmallow import Schema, fields, validate

from .common import ErrorSchema
from .fields import StrictInteger, StrictSchema, Text

MAX_DELTA = 10**12
# The most a level may be (an exabyte): far past any storage, and far below the 64-bit column's top.
MAX_LEVEL = 10**18


class StorageDeltaSchema(StrictSchema):
    delta_bytes = StrictInteger(
        data_key="deltaBytes", required=True,
        validate=[validate.Range(-MAX_DELTA, MAX_DELTA), validate.NoneOf([0], error="Must not be 0.")],
        metadata={"description": "Bytes stored (positive) or freed (negative); at most 10^12 either way, never 0.",
                  "not": {"enum": [0]}},
    )
    reference = Text(max_length=200, metadata={"description": "Yours to match the delta with your own records; "
                                                              "logged with a refusal."})


class StorageReconcileSchema(StrictSchema):
    used_bytes = StrictInteger(data_key="usedBytes", required=True, validate=validate.Range(0, MAX_LEVEL),
                               metadata={"description": "What the storage system holds for the client, in bytes."})
    reason = Text(required=True, min_length=1, max_length=500, metadata={"description": "Why, for the audit log."})


class StorageSchema(Schema):
    used_bytes = fields.Integer(data_key="usedBytes")
    quota_mb = fields.Integer(data_key="quotaMb", metadata={"description": "-1 means unlimited."})
    remaining_bytes = fields.Integer(data_key="remainingBytes", allow_none=True,
                                     metadata={"description": "quotaMb x 1,048,576 - usedBytes, never below 0; "
                                                              "null when unlimited."})
    is_unlimited = fields.Boolean(data_key="isUnlimited")


class StorageExceededSchema(ErrorSchema):
    used_bytes = fields.Integer(data_key="usedBytes")
    quota_mb = fields.Integer(data_key="quotaMb")
    remaining_bytes = fields.Integer(data_key="remainingBytes", allow_none=True)


class StorageBelowZeroSchema(ErrorSchema):
    used_bytes = fields.Integer(data_key="usedBytes")
