"""The Idempotency-Key header on POSTs that change money-like numbers."""

import re
from functools import wraps

from flask import jsonify, request

from ..auth import auth
from ..errors import DomainError, InvalidRequest
from ..services.idempotency import StoredResponse, fingerprint
from . import idempotency_keys

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def idempotent(schema):
    """Let a view be retried safely: the view gets `idempotency` (a claim, or None without the header).

    A repeat of the same request answers what the first got, with Idempotent-Replayed: true.
    """
    render = schema().dump

    def decorate(view):
        @wraps(view)
        def wrapper(payload, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                return view(payload, *args, idempotency=None, **kwargs)
            if not VALID_KEY.fullmatch(key):
                raise InvalidRequest(
                    f"The {HEADER} header is invalid.",
                    fields={HEADER: ["Must be 1 to 255 printable ASCII characters."]},
                )
            keys = idempotency_keys()
            outcome = keys.claim(
                auth.current_user().name, key, fingerprint(request.method, request.path, payload), render
            )
            if isinstance(outcome, StoredResponse):
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

        return wrapper

    return decorate
