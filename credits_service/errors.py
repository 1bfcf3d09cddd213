"""One error shape for every refusal: {"error": message, "fields": {...}?}."""

import logging
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A rule of the service refused the request; views never catch these."""

    status = 400

    def __init__(self, message: str, fields: dict[str, Any] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.extra)
        return body


class InvalidRequest(DomainError):
    status = 400


class NotFound(DomainError):
    status = 404

    @classmethod
    def client(cls, client_id: str) -> "NotFound":
        return cls(f"There is no client with id {client_id!r}.")


class Conflict(DomainError):
    status = 409


class QuotaExceeded(DomainError):
    status = 402


class IdempotencyKeyReused(DomainError):
    status = 422


class TooManyRequests(DomainError):
    status = 429


class NotReady(DomainError):
    status = 503


# Messages a person can act on, for the HTTP errors raised outside our views.
HTTP_MESSAGES = {
    400: "The request is malformed.",
    401: "A valid API key is required: send 'Authorization: Bearer <key>'.",
    403: "This API key's role does not allow this operation.",
    404: "There is no such resource.",
    405: "This method is not allowed on this resource.",
    413: "The request body is larger than 65536 bytes.",
    415: "The request body must be JSON, sent with 'Content-Type: application/json'.",
    429: "Too many requests.",
    500: "Internal server error.",
}

LOCATION_NAMES = {"json": "request body", "query": "query parameters", "headers": "headers"}


def error_response(status: int, message: str, fields: dict[str, Any] | None = None, headers=None):
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _validation_details(error: HTTPException) -> tuple[str, dict[str, Any] | None]:
    """webargs puts the marshmallow messages, by location, in error.data."""
    messages = (getattr(error, "data", None) or {}).get("messages")
    if not messages:
        return HTTP_MESSAGES.get(error.code, error.description), None
    location, fields = next(iter(messages.items()))
    if isinstance(fields, list):  # invalid JSON: webargs gives a plain list
        return "The request body is not valid JSON.", None
    where = LOCATION_NAMES.get(location, location)
    return f"Invalid {where}: see fields for what to fix.", fields


def handle_http_exception(error: HTTPException):
    headers = dict(error.get_response().headers)
    headers.pop("Content-Type", None)
    headers.pop("Content-Length", None)
    headers.update((getattr(error, "data", None) or {}).get("headers") or {})
    if error.code == 400:
        message, fields = _validation_details(error)
        return error_response(400, message, fields, headers)
    if error.code == 429:
        limit = getattr(error, "limit", None)  # Flask-Limiter's refusal names the limit it met
        if limit is not None and limit.error_message:
            return error_response(429, error.description, headers=headers)
        return error_response(429, f"Too many requests: the limit is {error.description}. Retry after the time in Retry-After.", headers=headers)
    message = HTTP_MESSAGES.get(error.code) or error.description or error.name
    return error_response(error.code or 500, message, headers=headers)


def handle_domain_error(error: DomainError):
    response = jsonify(error.payload())
    response.status_code = error.status
    return response


def handle_database_error(error: DBAPIError | PoolTimeout):
    """503 when the database cannot be reached or the connection broke: the request may be retried.

    A connection lost mid-request surfaces as OperationalError or InterfaceError (or any DBAPI
    error SQLAlchemy recognised as a disconnect); any other database error is a bug: 500.
    """
    unavailable = isinstance(error, (OperationalError, InterfaceError, PoolTimeout)) or getattr(
        error, "connection_invalidated", False
    )
    if not unavailable:
        return handle_unexpected(error)
    log.error("database unavailable: %s", error.__class__.__name__, exc_info=error)
    return error_response(503, "The database is unavailable; retry shortly.", headers={"Retry-After": "5"})


def handle_unexpected(error: Exception):
    log.exception("unhandled error")
    return error_response(500, HTTP_MESSAGES[500])


def init_app(app: Flask) -> None:
    """Handlers for everything but HTTP errors, which flask-smorest's Api routes to
    handle_http_exception (openapi.CreditsApi)."""
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(PoolTimeout, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
