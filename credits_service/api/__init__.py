"""HTTP blueprints: each view is guard -> schema -> service -> response."""

import json
from datetime import timedelta

from flask import abort, current_app
from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.routing import BaseConverter

from ..auth import auth
from ..extensions import request_session
from ..schemas import CLIENT_ID_PATTERN
from ..services.audit import AuditTrail
from ..services.audit_log import AuditLogReader
from ..services.credits import CreditsService
from ..services.grants import GrantsService
from ..services.idempotency import IdempotencyKeys


class JsonParser(FlaskParser):
    """400 for invalid input, unknown query parameters refused too, 415 for a non-JSON body."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,  # None: the schema's own RAISE applies
        "querystring": None,
    }

    def _raw_load_json(self, req):
        if req.mimetype and not is_json_request(req):
            abort(415)
        if not req.get_data(cache=True):
            return missing
        try:
            return super()._raw_load_json(req)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise  # webargs answers these itself
        except (RecursionError, ValueError) as error:  # nested too deep; an integer too long
            self._handle_invalid_json_error(error, req)


class ClientIdConverter(BaseConverter):
    """A path segment that can be a client id; anything else is a 404 before any query."""

    regex = CLIENT_ID_PATTERN.removeprefix("^").removesuffix("$")

    @staticmethod
    def openapi_schema(converter) -> dict:
        return {"type": "string", "pattern": CLIENT_ID_PATTERN}


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint, documenting the refusals every route of a kind can give."""

    ARGUMENTS_PARSER = JsonParser()

    def route(self, rule, **options):
        register = super().route(rule, **options)

        def decorator(view):
            if "<client_id:client_id>" in rule:
                view = self.doc(responses={"404": "NOT_FOUND"})(view)
            return register(view)

        return decorator

    def arguments(self, schema, *, location="json", **kwargs):
        # One instance per route, made here: given the class, webargs would make one per request.
        if isinstance(schema, type):
            schema = schema()
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return parse
        body_refusals = self.doc(
            responses={"413": "REQUEST_ENTITY_TOO_LARGE", "415": "UNSUPPORTED_MEDIA_TYPE"}
        )
        return lambda view: body_refusals(parse(view))


def audit_trail() -> AuditTrail:
    return AuditTrail(request_session(), current_app.extensions["audit_keys"])


def credits_service() -> CreditsService:
    return CreditsService(request_session(), current_app.config["CLOCK"], audit_trail())


def grants_service() -> GrantsService:
    return GrantsService(request_session(), current_app.config["CLOCK"], audit_trail())


def audit_log_reader() -> AuditLogReader:
    return AuditLogReader(request_session())


def idempotency_keys() -> IdempotencyKeys:
    config = current_app.config
    return IdempotencyKeys(
        request_session(),
        config["CLOCK"],
        ttl=timedelta(hours=config["IDEMPOTENCY_TTL_HOURS"]),
        lock_timeout=timedelta(seconds=config["IDEMPOTENCY_LOCK_SECONDS"]),
    )


def actor() -> str:
    """The calling key's name: what the audit log records as adminId."""
    return auth.current_user().name
