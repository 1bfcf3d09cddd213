"""The Idempotency-Key header on POSTs that change money-like numbers."""

import re
from functools import wraps

from flask import jsonify, request
from flask_smorest import Blueprint

from .. import metrics, services
from ..auth import auth
from ..errors import DomainError, InvalidRequest
from ..services.idempotency import StoredResponse, fingerprint

HEADER = "Idempotency-Key"
# Printable ASCII, at most 255 characters, no white space at either end (HTTP trims it).
KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
VALID_KEY = re.compile(KEY_PATTERN)


def idempotent(schema, status: int = 200, required: bool = False, conflict: tuple | None = None):
    """Let a view be retried safely: the view gets `idempotency` (a claim, or None without the header;
    required documents the header as the service's rule for that route requires it; conflict,
    (schema, description), documents the route's own 409 beside the key's).

    A repeat of the same request answers what the first got, with Idempotent-Replayed: true.
    """
    render = schema().dump
    documented = Blueprint.doc(
        parameters=[
            {
                "in": "header",
                "name": HEADER,
                "required": required,
                "description": "Makes a retry safe: the same key and body within 24 hours replays the first answer."
                               + (" Required here: without it, a retry could do this twice." if required else ""),
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
            }
        ],
        responses={
            "409": "CONFLICT" if conflict is None else {
                "description": f"{conflict[1]} Or: the Idempotency-Key's first request is still running.",
                "content": {"application/json": {"schema": conflict[0]}},
            },
            "422": "UNPROCESSABLE_ENTITY",
        },
    )

    def decorate(view):
        @wraps(view)
        def wrapper(payload, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                return view(payload, *args, idempotency=None, **kwargs)
            if not VALID_KEY.fullmatch(key):
                raise InvalidRequest(
                    f"The {HEADER} header is invalid.",
                    fields={HEADER: ["Must be 1 to 255 printable ASCII characters, not starting or ending with a space."]},
                )
            keys = services.idempotency_keys()
            outcome = keys.claim(
                auth.current_user().name, key, fingerprint(request.method, request.path, payload), render, status
            )
            if isinstance(outcome, StoredResponse):
                metrics.idempotent_replayed()
                response = jsonify(outcome.body)
                response.status_code = outcome.status
                response.headers["Idempotent-Replayed"] = "true"
                return response
            try:
                return view(payload, *args, idempotency=outcome, **kwargs)
            except DomainError as refusal:
                keys.finish(outcome, refusal.status, refusal.payload())
                raise
            except Exception:
                keys.release(outcome)
                raise

        return documented(wrapper)

    return decorate
