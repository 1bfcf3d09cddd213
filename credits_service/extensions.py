"""Unbound extensions; create_app binds them to an app."""

import os

import click
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

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
