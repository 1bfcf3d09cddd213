"""HTTP blueprints: each view is guard -> schema -> service -> response."""

from datetime import timedelta

from flask import abort, current_app
from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import missing
from webargs.flaskparser import FlaskParser, is_json_request

from ..auth import auth
from ..extensions import db
from ..services.credits import CreditsService
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
        if not req.get_data(cache=True):
            return missing
        if not is_json_request(req):
            abort(415)
        return super()._raw_load_json(req)


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint, documenting the refusals every route of a kind can give."""

    ARGUMENTS_PARSER = JsonParser()

    def route(self, rule, **options):
        register = super().route(rule, **options)

        def decorator(view):
            if "<client_id>" in rule:
                view = self.doc(responses={"404": "NOT_FOUND"})(view)
            return register(view)

        return decorator

    def arguments(self, schema, *, location="json", **kwargs):
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return parse
        body_refusals = self.doc(
            responses={"413": "REQUEST_ENTITY_TOO_LARGE", "415": "UNSUPPORTED_MEDIA_TYPE"}
        )
        return lambda view: body_refusals(parse(view))


def credits_service() -> CreditsService:
    return CreditsService(db.session(), current_app.config["CLOCK"])


def idempotency_keys() -> IdempotencyKeys:
    config = current_app.config
    return IdempotencyKeys(
        db.session(),
        config["CLOCK"],
        ttl=timedelta(hours=config["IDEMPOTENCY_TTL_HOURS"]),
        lock_timeout=timedelta(seconds=config["IDEMPOTENCY_LOCK_SECONDS"]),
    )


def actor() -> str:
    """The calling key's name: what the audit log records as adminId."""
    return auth.current_user().name
