"""`flask db ...`: Flask-Migrate, loaded only when a migration command runs.

Flask-Migrate brings alembic, which a web worker never uses and which alone adds about 15 MB
to each worker's memory, so create_app registers this stand-in instead of Flask-Migrate itself.
"""

import os

import click
from flask import Flask

from ..extensions import db

MIGRATIONS_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "migrations")


def enable_migrations(app: Flask) -> None:
    """Flask-Migrate for this app: for `flask db`, the tests and the benchmarks."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        Migrate(app, db, directory=MIGRATIONS_DIRECTORY)


class MigrationsGroup(click.Group):
    """Stands in `flask --help` for Flask-Migrate's `db` group, and hands a `flask db ...` call to it."""

    def __init__(self, app: Flask):
        super().__init__("db", help="Perform database migrations (Flask-Migrate).")
        self.app = app

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        enable_migrations(self.app)
        from flask_migrate.cli import db as commands

        # Flask-Migrate's group parses its own options (--directory, -x) and runs its commands.
        return commands.make_context(info_name, args, parent=parent, **extra)
