"""Fixtures: the app on each database backend, a test client, keys per role, a test clock.

Every test that takes `client` runs once on SQLite and, when TEST_DATABASE_URL is set,
once more on PostgreSQL (a database created for this run and dropped after it).
Migrations build the schema; every table is emptied between tests.

TEST_DATABASE_POOLER=pgbouncer says TEST_DATABASE_URL goes through PgBouncer in transaction
mode; every statement of every test is checked for what would need a server session to last
beyond its transaction (see SESSION_BOUND).
"""

import os
import re
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from flask_migrate import upgrade
from sqlalchemy import Engine, event, make_url, text

from credits_service import create_app
from credits_service import services
from credits_service.cli.db import enable_migrations
from credits_service.config import TestConfig
from credits_service.extensions import db

BACKENDS = ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]
POOLER = os.environ.get("TEST_DATABASE_POOLER", "none")
if POOLER != "none":
    os.environ["DATABASE_POOLER"] = POOLER  # the servers the integration tests start, too

# Behind a pooler in transaction mode, the next transaction may run on another server session:
# session advisory locks, SET without LOCAL, set_config(..., false), LISTEN and WITH HOLD
# cursors would all be left behind on the old one.
SESSION_BOUND = re.compile(
    r"pg_(try_)?advisory_lock(_shared)?\s*\(|\A\s*SET\s+(?!LOCAL\b)|\A\s*LISTEN\b|\bWITH\s+HOLD\b"
    r"|set_config\s*\([^)]*,\s*false\s*\)",
    re.IGNORECASE,
)
_session_bound_statements: list[str] = []


@event.listens_for(Engine, "before_cursor_execute")
def _note_session_bound(_connection, _cursor, statement, *_args) -> None:
    if SESSION_BOUND.search(statement):
        _session_bound_statements.append(statement)


@pytest.fixture(autouse=True)
def nothing_session_bound():
    """Fails a test whose SQL (any engine's) would break behind PgBouncer in transaction mode."""
    _session_bound_statements.clear()
    yield
    assert not _session_bound_statements, (
        "SQL that needs a server session beyond its transaction (breaks behind PgBouncer): "
        + " | ".join(_session_bound_statements)
    )


def pytest_unconfigure(config):
    """Cancel the threading.Timer threads libraries leave waiting (the limits library's memory
    storage starts one per app): under a faked system clock (make test-calendar) their timed
    wait never ends, and the interpreter would wait for them at exit forever."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def _psycopg_dsn(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url():
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set")
    return make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))


@pytest.fixture(scope="session")
def make_postgres_database(postgres_server_url):
    """Create fresh PostgreSQL databases for this run; all are dropped at the end."""
    created = []

    def make() -> str:
        name = f"credits_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_psycopg_dsn(postgres_server_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_server_url.set(database=name).render_as_string(hide_password=False)

    yield make
    with psycopg.connect(_psycopg_dsn(postgres_server_url), autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dispose_engines(app) -> None:
    """Close the pooled connections of app's engines (the replica's too)."""
    with app.app_context():
        db.engine.dispose()
    replica = app.extensions["read_replica"].engine
    if replica is not None:
        replica.dispose()


@contextmanager
def listening(*listeners):
    """Inside the block, each (target, event name, function) of listeners is listened to."""
    for target, name, function in listeners:
        event.listen(target, name, function)
    try:
        yield
    finally:
        for target, name, function in listeners:
            event.remove(target, name, function)


def every_statement(app, record):
    """Inside the block, record(connection, cursor, statement, parameters, context, executemany)
    hears every statement app's engine sends."""
    with app.app_context():
        engine = db.engine
    return listening((engine, "before_cursor_execute", record))


def config_for(database_url: str, **overrides) -> type[TestConfig]:
    return type("Config", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": database_url, "DATABASE_POOLER": POOLER,
                                          **overrides})


def migrated(database_url: str) -> None:
    app = create_app(config_for(database_url))
    enable_migrations(app)
    with app.app_context():
        upgrade()
    dispose_engines(app)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory):
    """A migrated database per backend, shared by the tests of this run."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "credits.sqlite3")
    else:
        url = request.getfixturevalue("make_postgres_database")()
    migrated(url)
    return url


# Where the test clock stands until a test moves it: mid-month and mid-day, so that what a test
# does at one instant never straddles a month, whatever the date the suite runs on.
START = "2026-11-15T12:00:00+00:00"


class Clock:
    """The service's clock in tests: stopped at START until a test sets or advances it, so no test
    reads the date, or the speed, of the machine it runs on."""

    def __init__(self):
        self.now = datetime.fromisoformat(START)

    def __call__(self) -> datetime:
        return self.now

    def set(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso).astimezone(UTC)

    def advance(self, **delta: float) -> None:
        """Move on by timedelta's arguments: clock.advance(days=2)."""
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app_config(database_url, clock):
    """Override by a fixture of the same name in a test module to change settings."""
    return config_for(database_url, CLOCK=clock)


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    empty_tables(app)
    dispose_engines(app)


# Rows the migrations write, which every test needs.
SEEDED_TABLES = {"audit_actions"}


@contextmanager
def triggers_disabled(app):
    """A session in which no trigger fires, as a database owner could arrange: for tampering with
    the audit log on purpose, bulk-writing placeholder chains, and emptying the tables. On
    PostgreSQL (the tests connect as a superuser) triggers are off for the transaction; SQLite's
    are set aside and put back. Commits at the end."""
    with app.app_context():
        session = db.session()
        if db.engine.dialect.name == "postgresql":
            session.execute(text("SET LOCAL session_replication_role = replica"))
            yield session
        else:
            triggers = session.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in triggers:
                session.execute(text(f'DROP TRIGGER "{name}"'))
            yield session
            for _, sql in triggers:
                session.execute(text(sql))
        session.commit()


def empty_tables(app) -> None:
    """Every table emptied for the next test, the append-only audit tables included."""
    with triggers_disabled(app) as session:
        tables = [table for table in db.metadata.sorted_tables if table.name not in SEEDED_TABLES]
        if db.engine.dialect.name == "postgresql":
            session.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY"))
        else:
            for table in reversed(tables):
                session.execute(table.delete())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def make_key(app, name: str, role: str, expires_in_days: int | None = None) -> str:
    with app.app_context():
        return services.api_keys().create(name, role, expires_in_days)


def issue_keys(database_url: str, **roles_by_name: str) -> dict[str, str]:
    """Keys for a database that real server processes use: {name: key}."""
    app = create_app(config_for(database_url))
    keys = {name: make_key(app, name, role) for name, role in roles_by_name.items()}
    dispose_engines(app)
    return keys


@pytest.fixture
def keys(app):
    """One key per role; the write key's name is what audit entries record as adminId."""
    return {
        "write": make_key(app, "alice@example.com", "write"),
        "read": make_key(app, "reader@example.com", "read"),
        "service": make_key(app, "platform", "service"),
    }


def assert_error(response, status, field=None):
    """The one error shape, {"error": message, "fields"?}; with field, a validation error naming it."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert isinstance(body, dict) and set(body) <= {"error", "fields"}, body
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert field in body["fields"], body
    return body


@pytest.fixture
def acme(api):
    """The client most tests work on, on the free plan."""
    return api.create_client("acme", "Acme Corp")


class Api:
    """The test client with a key: api.post(path, json=..., key="read")."""

    def __init__(self, client, keys):
        self.client = client
        self.keys = keys

    def request(self, method, path, key="write", headers=None, **kwargs):
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def create_client(self, client_id="acme", name="Acme Corp", **extra):
        response = self.post("/api/admin/clients", json={"id": client_id, "name": name, **extra})
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def api(client, keys):
    return Api(client, keys)
