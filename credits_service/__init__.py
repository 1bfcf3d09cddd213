"""credits-service: admin credit management and credit consumption, with an append-only audit log."""

import os
import re
import secrets
from types import FunctionType, MethodType

from flask import Flask, g, request
from flask_smorest import Api
from flask_swagger_ui import get_swaggerui_blueprint
from sqlalchemy import event

from . import metrics
from .audit_keys import load_audit_keys
from .config import Config
from .errors import register_error_handlers
from .extensions import MigrationsGroup, db, limiter
from .logs import configure_logging, register_access_log
from .openapi import SchemaPlugin
from .pool import ping_idle_connections
from .schemas import ErrorSchema
from .services.transactions import AUTOCOMMIT, use_autocommit_engine

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
AUTOCOMMIT_BIND = "autocommit"


class CreditsApi(Api):
    """flask-smorest's Api, answering errors in this service's one shape."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self):
        register_error_handlers(self._app)


class CreditsFlask(Flask):
    """Flask, asking once per function (not on every call) whether a view or hook is a coroutine
    function.

    Flask, flask-smorest and flask-httpauth pass every hook and every layer of a view through
    ensure_sync on every request, and each time inspect unwraps the function to read its code
    flags: about 2.5 % of a quota-status request's instructions. The answer never changes for a
    function, nor for a method bound to it (inspect asks the function), so the functions found
    synchronous are kept, at most SYNC_FUNCTIONS_KEPT of them (a closure made per call would
    only be asked again). Methods are not kept themselves (a MethodView binds one per request),
    and any other callable is asked every time, as Flask does.
    """

    SYNC_FUNCTIONS_KEPT = 1024

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_functions: set[FunctionType] = set()

    def ensure_sync(self, func):
        kept = self._sync_functions
        try:
            if func in kept:
                return func
        except TypeError:  # an unhashable callable object
            return super().ensure_sync(func)
        function = func.__func__ if type(func) is MethodType else func
        if type(function) is not FunctionType:
            return super().ensure_sync(func)
        if function in kept:
            return func
        sync = super().ensure_sync(func)
        if sync is func:
            if len(kept) >= self.SYNC_FUNCTIONS_KEPT:
                kept.clear()
            kept.add(function)
        return sync


def create_app(config: type[Config] | None = None) -> Flask:
    app = CreditsFlask(__name__, instance_relative_config=True)
    app.config.from_object(config or Config.from_environment())
    _configure_database_url(app)
    configure_logging(app)
    register_access_log(app)
    metrics.init_app(app)
    # Refuse to start (ConfigurationError) rather than write an audit log nobody can prove.
    app.extensions["audit_keys"] = load_audit_keys(app)
    _register_request_id(app)

    db.init_app(app)
    app.cli.add_command(MigrationsGroup(app))
    with app.app_context():
        _tune_sqlite(app)
        for engine in db.engines.values():
            if engine.dialect.name != "sqlite":
                ping_idle_connections(engine)
        if AUTOCOMMIT_BIND in db.engines:
            use_autocommit_engine(db.engine, db.engines[AUTOCOMMIT_BIND])
    limiter.init_app(app)

    from . import purger
    from .api import ClientIdConverter, audit, clients, credits, grants, health, quota, usage, usage_history

    app.url_map.converters["client_id"] = ClientIdConverter
    api = CreditsApi(app, spec_kwargs={"marshmallow_plugin": SchemaPlugin()})
    api.register_converter(ClientIdConverter, ClientIdConverter.openapi_schema)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_blueprint(clients.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(quota.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(credits.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(audit.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(grants.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(usage_history.blp, url_prefix="/api/admin/clients")
    api.register_blueprint(audit.search_blp, url_prefix="/api/admin/audit-log")
    api.register_blueprint(usage.blp, url_prefix="/api/clients")
    api.register_blueprint(health.blp)
    app.register_blueprint(
        get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "credits-service", "validatorUrl": None})
    )

    purger.init_app(app)

    from .cli import audit_cli, idempotency_cli, keys_cli

    app.cli.add_command(keys_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(idempotency_cli)
    return app


def _configure_database_url(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "credits.sqlite3")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
            "connect_args": {"connect_timeout": app.config["DATABASE_CONNECT_TIMEOUT_SECONDS"]},
        }
        # A second pool of the same database whose connections stay in autocommit, for the
        # one-statement reads and consumption (services/transactions.py, autocommit_connection).
        # No model is bound to it: everything else uses the default engine.
        app.config["SQLALCHEMY_BINDS"] = {
            **app.config.get("SQLALCHEMY_BINDS", {}),
            AUTOCOMMIT_BIND: {**options, "url": app.config["SQLALCHEMY_DATABASE_URI"], "isolation_level": AUTOCOMMIT},
        }


def _tune_sqlite(app: Flask) -> None:
    """Foreign keys on, WAL, a busy timeout, and explicit BEGIN (IMMEDIATE for writers)."""
    engine = db.engine
    if engine.dialect.name != "sqlite":
        return
    busy_timeout = int(app.config["SQLITE_BUSY_TIMEOUT_MS"])

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN; pysqlite's own handling defers it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _new_request_id() -> str:
    """128 random bits in 32 hex digits, the shape of a UUID's hex without its version bits."""
    return secrets.token_hex(16)


def _register_request_id(app: Flask) -> None:
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
