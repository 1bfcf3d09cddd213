"""The database the app talks to: its URL, SQLite's pragmas, and a ping for connections that sat idle."""

import os
import time

from flask import Flask
from sqlalchemy import Engine, event, exc

from .extensions import db

# A connection returned to the pool less than this long ago was working a moment ago.
PING_AFTER_IDLE_SECONDS = 1.0


def configure_database(app: Flask) -> None:
    """Before db.init_app: SQLite under the instance folder when DATABASE_URL is unset, and
    PostgreSQL's connect timeout (requests answer 503 after it instead of hanging)."""
    config = app.config
    if not config["SQLALCHEMY_DATABASE_URI"]:
        os.makedirs(app.instance_path, exist_ok=True)
        config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "credits.sqlite3")
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **config["SQLALCHEMY_ENGINE_OPTIONS"],
            "connect_args": postgresql_connect_args(config),
        }


def postgresql_connect_args(config) -> dict:
    """psycopg's connection arguments. Behind a pooler in transaction mode (DATABASE_POOLER),
    whose server connections change hands after every transaction, psycopg prepares nothing: a
    statement prepared on one server connection is unknown to the next (PgBouncer 1.18 does not
    track them)."""
    connect_args = {"connect_timeout": config["DATABASE_CONNECT_TIMEOUT_SECONDS"]}
    if config["DATABASE_POOLER"] != "none":
        connect_args["prepare_threshold"] = None
    return connect_args


def init_engine(app: Flask) -> None:
    """After db.init_app: the engine's per-database hooks."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine, int(app.config["SQLITE_BUSY_TIMEOUT_MS"]))
    else:
        _ping_idle_connections(engine)


def _tune_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """Foreign keys on, WAL, a busy timeout, and explicit BEGIN (IMMEDIATE for writers)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN; pysqlite's own handling defers it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _ping_idle_connections(engine: Engine) -> None:
    """pool_pre_ping, but only for a connection idle longer than PING_AFTER_IDLE_SECONDS.

    pool_pre_ping would cost every request a round trip. One idle for longer (the database may
    have restarted meanwhile) is pinged at checkout and, when dead, replaced before the request
    sees it; one that breaks while in use is invalidated by SQLAlchemy and that request is 503.
    """

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection, record, proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError(str(error)) from error  # the pool connects afresh
            raise
