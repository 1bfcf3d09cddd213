"""Every request gets an id: the caller's X-Request-ID when it is sane, else a new one; echoed back."""

import re
import secrets

from flask import Flask, g, request

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _new_request_id() -> str:
    """128 random bits in 32 hex digits."""
    return secrets.token_hex(16)


def init_app(app: Flask) -> None:
    @app.before_request
    def _assign_request_id():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else _new_request_id()

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id") or _new_request_id()
        # Flask-Limiter adds Retry-After to every response; it only means something on a refusal.
        if response.status_code not in (429, 503):
            response.headers.pop("Retry-After", None)
        return response
