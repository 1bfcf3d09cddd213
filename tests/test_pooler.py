"""DATABASE_POOLER=pgbouncer: the service behind PgBouncer in transaction mode.

The tests about PgBouncer itself run when the suite does, through scripts/with-pgbouncer.sh
(TEST_DATABASE_POOLER=pgbouncer); the whole PostgreSQL suite then runs through it too, and
conftest's SESSION_BOUND check fails any test whose SQL would need a server session to last.
"""

import os

import pytest

from conftest import POOLER, SESSION_BOUND, config_for, dispose_engines, issue_keys
from credits_service import create_app
from credits_service.config import ConfigurationError, Config

behind_pgbouncer = pytest.mark.skipif(
    POOLER != "pgbouncer", reason="runs through PgBouncer: scripts/with-pgbouncer.sh .venv/bin/pytest")


@pytest.mark.parametrize("statement", [
    "SELECT pg_advisory_lock(1)", "SELECT pg_try_advisory_lock(1)", "SELECT pg_advisory_lock_shared(1)",
    "SET statement_timeout = 0", "set session search_path = x", "LISTEN deliveries",
    "DECLARE export CURSOR WITH HOLD FOR SELECT 1", "SELECT set_config('a.b', 'c', false)",
])
def test_the_check_refuses_what_needs_a_session(statement):
    assert SESSION_BOUND.search(statement)


@pytest.mark.parametrize("statement", [
    "SET LOCAL statement_timeout = 1000", "SELECT pg_advisory_xact_lock(1)", "SELECT pg_try_advisory_xact_lock(1)",
    "UPDATE quota_limits\nSET storage_used_bytes = 0", "SELECT set_config('a.b', 'c', true)",
])
def test_the_check_lets_transaction_scoped_sql_pass(statement):
    assert not SESSION_BOUND.search(statement)


def test_an_unknown_pooler_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("DATABASE_POOLER", "pgpool")
    with pytest.raises(ConfigurationError, match="DATABASE_POOLER='pgpool' is not a pooler the service knows"):
        Config.from_environment()


def test_behind_a_pooler_psycopg_prepares_nothing(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    app = create_app(config_for(database_url, DATABASE_POOLER="pgbouncer"))
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["prepare_threshold"] is None
    assert "prepare_threshold" not in create_app(config_for(database_url, DATABASE_POOLER="none")) \
        .config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]


def _consume_from_two_apps(database_url, pooler: str) -> list[int]:
    """Two apps (two connection pools) take turns consuming through PgBouncer, whose pool hands
    each of their transactions to either server connection; the statuses, in order."""
    apps = [create_app(config_for(database_url, DATABASE_POOLER=pooler)) for _ in range(2)]
    keys = issue_keys(database_url, admin="write", platform="service")
    statuses = []
    try:
        write = {"Authorization": f"Bearer {keys['admin']}"}
        service = {"Authorization": f"Bearer {keys['platform']}"}
        client_id = f"pooled-{pooler}-{os.getpid()}"
        created = apps[0].test_client().post("/api/admin/clients", json={"id": client_id, "name": "Pooled"},
                                             headers=write)
        assert created.status_code == 201, created.get_json()
        for turn in range(24):
            client = apps[turn % 2].test_client()
            statuses.append(client.post(f"/api/clients/{client_id}/usage", json={"count": 1}, headers=service).status_code)
            statuses.append(client.get(f"/api/clients/{client_id}/quota-status", headers=service).status_code)
    finally:
        for app in apps:
            dispose_engines(app)
    return statuses


@behind_pgbouncer
def test_through_pgbouncer_every_request_answers(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PgBouncer fronts PostgreSQL")
    assert set(_consume_from_two_apps(database_url, "pgbouncer")) == {200}


@behind_pgbouncer
def test_without_the_setting_prepared_statements_break_through_pgbouncer(database_url, caplog):
    """Why the setting exists: psycopg prepares a statement on its fifth use, on whichever server
    connection PgBouncer lent it, and the next transaction may get another."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PgBouncer fronts PostgreSQL")
    statuses = _consume_from_two_apps(database_url, "none")
    assert any(status >= 500 for status in statuses), statuses
