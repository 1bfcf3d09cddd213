"""Unbound extensions; create_app binds them to an app."""

import os

import click
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session

# Stable constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects keep the values their own transaction wrote after it commits: an answer built after
# the commit must not re-read a row another request has changed since.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


class LazySession:
    """The request's ORM session (db.session's), made when something first needs it.

    A request whose key check is answered from the key cache and whose work is one autocommit
    statement (quota-status, the quota read, a consumption) never needs one: until the session is
    made it has no transaction, and its engine is known without it. Making and removing a session
    is about 5 % of such a request's instructions. Everything else is the session's own.
    Like db.session, it stands for the session of the app context it is used in: make one per
    request (request_session) and use it there.
    """

    __slots__ = ("_engine", "_scoped")

    def __init__(self, scoped: scoped_session, engine: Engine):
        self._scoped = scoped
        self._engine = engine

    def in_transaction(self) -> bool:
        return self._scoped.registry.has() and self._scoped().in_transaction()

    def get_bind(self, *args, **kwargs):
        if args or kwargs or self._scoped.registry.has():
            return self._scoped().get_bind(*args, **kwargs)
        return self._engine  # what the session's get_bind() answers: the default engine

    def __getattr__(self, name: str):
        return getattr(self._scoped(), name)


def request_session() -> Session:
    """db.session for a service, made on first use (LazySession); typed as what it stands for."""
    return LazySession(db.session, db.engine)  # type: ignore[return-value]


# Routes name their own key function (the authenticated principal); unauthenticated
# traffic falls back to the remote address.
limiter = Limiter(key_func=get_remote_address)

MIGRATIONS_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def enable_migrations(app: Flask) -> None:
    """Flask-Migrate for this app, where migrations run (`flask db`, tests, benchmarks).

    Imported here rather than at start-up: it brings alembic, which a web worker never uses,
    and which alone adds about 15 MB to every worker's memory.
    """
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        Migrate(app, db, directory=MIGRATIONS_DIRECTORY)


class MigrationsGroup(click.Group):
    """`flask db ...`: Flask-Migrate's command group, loaded when a `db` command is asked for."""

    def __init__(self, app: Flask):
        super().__init__("db", help="Perform database migrations (Flask-Migrate).")
        self.app = app

    def _commands(self) -> click.Group:
        enable_migrations(self.app)  # registers Flask-Migrate's own group as `db` from now on
        from flask_migrate.cli import db as commands

        return commands

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # The real group parses its own options (--directory, -x) and runs its commands.
        return self._commands().make_context(info_name, args, parent=parent, **extra)
