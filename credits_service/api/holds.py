"""Holds: the platform reserves credits while a generation runs, then captures or releases them."""

from .. import services
from ..auth import service_write, status_read
from ..schemas.holds import (
    HoldCaptureSchema,
    HoldConflictSchema,
    HoldCreateSchema,
    HoldExceededSchema,
    HoldPageSchema,
    HoldPlacedSchema,
    HoldQuerySchema,
    HoldReleaseSchema,
    HoldResolvedSchema,
    HoldSchema,
)
from . import Blueprint, actor, path_id
from .idempotency import idempotent

blp = Blueprint("holds", __name__, description="Credits reserved while a generation runs, captured or released once.")

RESOLVED = ("The hold is already captured, released or expired (its status says which), or a capture asks for"
            " more than the hold (status held); nothing changed.")
# A hold's id as the path names it: a positive 64-bit integer; anything else is a 404 before any query.
HOLD = f"<client_id:client_id>/holds/{path_id('hold_id')}"


@blp.route("/<client_id:client_id>/holds", methods=["POST"])
@service_write
@blp.arguments(HoldCreateSchema)
@blp.response(201, HoldPlacedSchema)
@blp.alt_response(402, schema=HoldExceededSchema, description="Used, held and this count would pass the limit; nothing held.")
@idempotent(HoldPlacedSchema, status=201)
def place_hold(body, client_id, idempotency):
    """Reserve count of this UTC month's limit for ttlSeconds, all or nothing; 409 when the client has
    HOLDS_MAX_OPEN open holds."""
    return services.holds().place(actor(), client_id, body["count"], body["ttl_seconds"], body.get("reference"),
                                  idempotency)


@blp.route(f"/{HOLD}/capture", methods=["POST"])
@service_write
@blp.arguments(HoldCaptureSchema, required=False)
@blp.response(200, HoldResolvedSchema)
@idempotent(HoldResolvedSchema, conflict=(HoldConflictSchema, RESOLVED))
def capture_hold(body, client_id, hold_id, idempotency):
    """Add count (default: all of the hold) to the hold's month's usage and release the rest, in one go."""
    return services.holds().capture(client_id, hold_id, body.get("count"), idempotency)


@blp.route(f"/{HOLD}/release", methods=["POST"])
@service_write
@blp.arguments(HoldReleaseSchema, required=False)
@blp.response(200, HoldResolvedSchema)
@idempotent(HoldResolvedSchema, conflict=(HoldConflictSchema, RESOLVED))
def release_hold(body, client_id, hold_id, idempotency):
    """Give the whole hold back: nothing of it is used."""
    return services.holds().release(client_id, hold_id, idempotency)


@blp.route(f"/{HOLD}", methods=["GET"])
@status_read
@blp.response(200, HoldSchema)
def get_hold(client_id, hold_id):
    """One hold, with its status as of now."""
    return services.holds().get(client_id, hold_id)


@blp.route("/<client_id:client_id>/holds", methods=["GET"])
@status_read
@blp.arguments(HoldQuerySchema, location="query")
@blp.response(200, HoldPageSchema)
def list_holds(query, client_id):
    """The client's holds, newest first, optionally of one status as of now; nextOffset is null on the last page."""
    return services.holds().list(client_id, query["limit"], query["offset"], query.get("status"))
