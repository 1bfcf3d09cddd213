"""HTTP blueprints: each view is guard -> schema -> service -> response."""

from flask import Flask, abort
from flask_smorest import Blueprint as SmorestBlueprint
from flask_swagger_ui import get_swaggerui_blueprint
from marshmallow import missing
from webargs.core import parse_json
from webargs.flaskparser import FlaskParser, is_json_request
from webargs.flaskparser import abort as refuse
from werkzeug.routing import BaseConverter

from ..auth import auth
from ..openapi import CreditsApi
from ..schemas.fields import CLIENT_ID_PATTERN, MAX_ID


class JsonParser(FlaskParser):
    """400 for invalid input, unknown query parameters refused too, 415 for a non-JSON body."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,  # None: the schema's own RAISE applies
        "querystring": None,
    }

    def load_json(self, req, schema):
        # webargs' documented hook for a parser's own JSON handling: a body sent as another media
        # type is refused rather than ignored, and JSON Python cannot hold (nested too deep, an
        # integer too long) is invalid JSON like any other.
        if req.mimetype and not is_json_request(req):
            abort(415)
        body = req.get_data(cache=True)
        if not body:
            return missing
        try:
            return parse_json(body)
        except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError included
            refuse(400, exc=error, messages={"json": ["Invalid JSON body."]})


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
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return parse
        body_refusals = self.doc(responses={"413": "REQUEST_ENTITY_TOO_LARGE", "415": "UNSUPPORTED_MEDIA_TYPE"})
        return lambda view: body_refusals(parse(view))


def path_id(name: str) -> str:
    """A URL part for a row id: a positive 64-bit integer, so anything else is 404 before any query."""
    return f"<int(min=1, max={MAX_ID}):{name}>"


def actor() -> str:
    """The calling key's name: what the audit log records as adminId."""
    return auth.current_user().name


def init_app(app: Flask) -> None:
    """Every resource's blueprint, the OpenAPI document at /openapi.json and Swagger UI at /docs."""
    from . import (
        audit,
        clients,
        credits,
        grants,
        health,
        holds,
        quotas,
        refunds,
        storage,
        usage,
        usage_history,
        webhooks,
    )

    app.url_map.converters["client_id"] = ClientIdConverter
    api = CreditsApi(app)
    api.register_converter(ClientIdConverter, ClientIdConverter.openapi_schema)
    for admin_resource in (clients, quotas, credits, audit, grants, usage_history):
        api.register_blueprint(admin_resource.blp, url_prefix="/api/admin/clients")
    for admin_resource in (refunds, storage):
        api.register_blueprint(admin_resource.admin_blp, url_prefix="/api/admin/clients")
    api.register_blueprint(audit.search_blp, url_prefix="/api/admin/audit-log")
    api.register_blueprint(webhooks.blp, url_prefix="/api/admin/webhooks")
    for platform_resource in (usage, holds, refunds, storage):
        api.register_blueprint(platform_resource.blp, url_prefix="/api/clients")
    api.register_blueprint(health.blp)
    app.register_blueprint(
        get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "credits-service", "validatorUrl": None})
    )
