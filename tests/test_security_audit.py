"""The audit log's defences against someone with database access or an old key.

- The database refuses TRUNCATE, and the role the service runs as cannot change or remove an
  entry, disable a trigger or change the schema (PostgreSQL).
- A chain never goes back to an older key, and a retired key signs nothing after its date.
- Start-up errors about a secret name its position, never its content.
"""

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DatabaseError

from conftest import config_for, dispose_engines
from credits_service import create_app
from credits_service.audit.keys import AuditKeys
from credits_service.config import ConfigurationError, TestConfig
from credits_service.extensions import db
from helpers import set_limit

ROOT = Path(__file__).resolve().parents[1]
SECRET_OLD = "old-audit-key-kept-to-verify-0123456789"
SECRET_NEW = "new-audit-key-signing-from-now-0123456789"


def verify(runner, *args):
    return runner.invoke(args=["audit", "verify", *args])


@pytest.fixture
def postgresql(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("roles and TRUNCATE triggers are PostgreSQL's; SQLite has neither (docs/audit-log.md)")
    return database_url


# ---- TRUNCATE ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["credit_audit_log", "audit_heads"])
def test_truncate_of_an_audit_table_is_refused(app, api, acme, postgresql, table):
    set_limit(api, 5)
    with app.app_context():
        session = db.session()
        with pytest.raises(DatabaseError, match="append-only|advance by one"):
            session.execute(text(f"TRUNCATE {table} CASCADE"))
        session.rollback()
    assert len(api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"]) == 1


# ---- the runtime role -------------------------------------------------------------------


@pytest.fixture
def runtime_url(postgresql):
    """A login role that is a member of credits_runtime (made by migration 0006), and its URL."""
    role = f"credits_app_{uuid.uuid4().hex[:8]}"
    url = make_url(postgresql)
    owner = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(owner, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'runtime-pw' IN ROLE credits_runtime")
    yield url.set(username=role, password="runtime-pw").render_as_string(hide_password=False)
    with psycopg.connect(owner, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        connection.execute(f"DROP ROLE {role}")


FORBIDDEN = {
    "update an entry": "UPDATE credit_audit_log SET admin_id = 'mallory'",
    "delete an entry": "DELETE FROM credit_audit_log",
    "truncate the log": "TRUNCATE credit_audit_log",
    "update a head": "UPDATE audit_heads SET entry_count = 0",
    "delete a head": "DELETE FROM audit_heads",
    "truncate the heads": "TRUNCATE audit_heads",
    "add an action": "INSERT INTO audit_actions (name) VALUES ('forged')",
    "disable a trigger": "ALTER TABLE credit_audit_log DISABLE TRIGGER USER",
    "switch triggers off": "SET session_replication_role = replica",
    "create a table": "CREATE TABLE shadow (id int)",
    "drop a table": "DROP TABLE clients",
    "change the schema": "ALTER TABLE quota_limits ADD COLUMN note text",
    "replace a trigger function": "CREATE OR REPLACE FUNCTION audit_heads_start_empty() RETURNS trigger "
                                  "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
}


@pytest.mark.parametrize("attempt", FORBIDDEN)
def test_the_runtime_role_cannot(app, api, acme, runtime_url, attempt):
    set_limit(api, 5)
    with psycopg.connect(runtime_url.replace("+psycopg", "")) as connection:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute(FORBIDDEN[attempt])


def test_the_service_runs_as_the_runtime_role(app, runtime_url, clock):
    """(app: the owner's, which empties the tables after the test.)"""
    app = create_app(config_for(runtime_url, CLOCK=clock))
    api_client = app.test_client()
    with app.app_context():
        from credits_service import services

        key = services.api_keys().create("runtime-admin", "write")
        service_key = services.api_keys().create("runtime-platform", "service")
    write = {"Authorization": f"Bearer {key}"}
    assert api_client.post("/api/admin/clients", json={"id": "rt", "name": "Runtime"}, headers=write).status_code == 201
    assert api_client.post("/api/admin/clients/rt/credits", json={"action": "grant", "amount": 5},
                           headers=write).status_code == 200
    assert api_client.post("/api/clients/rt/usage", json={"count": 2},
                           headers={"Authorization": f"Bearer {service_key}"}).status_code == 200
    assert api_client.delete("/api/admin/clients/rt", headers=write).status_code == 204
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    dispose_engines(app)


def test_migrations_run_as_the_owner_and_the_service_as_the_runtime_role(make_postgres_database, runtime_url):
    """`flask db upgrade` uses DATABASE_MIGRATION_URL; as the runtime role alone it could not."""
    database = make_postgres_database()  # empty: no tables yet
    owner = make_url(database).render_as_string(hide_password=False)
    runtime = make_url(runtime_url).set(database=make_url(database).database).render_as_string(hide_password=False)
    env = {"PATH": "/usr/bin:/bin", "AUDIT_HMAC_KEYS": TestConfig.AUDIT_HMAC_KEYS, "LOG_LEVEL": "WARNING",
           "DATABASE_URL": runtime}
    flask = [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"]
    alone = subprocess.run(flask, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode != 0
    assert "permission denied" in alone.stderr
    upgraded = subprocess.run(flask, cwd=ROOT, env={**env, "DATABASE_MIGRATION_URL": owner},
                              capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    with psycopg.connect(runtime.replace("+psycopg", "")) as connection:
        assert connection.execute("SELECT count(*) FROM audit_actions").fetchone()[0] >= 6
        owner_name = connection.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'clients'").fetchone()[0]
    assert owner_name == make_url(database).username


# ---- key rotation: never back to an older key, nothing signed after retirement -----------


def keys_value(*pairs: str) -> str:
    return ",".join(pairs)


def test_rotation_end_to_end_keeps_every_chain_verifiable(app, database_url, clock):
    """Sign with the old key; add a new one first (the old one still verifies); retire the old.
    (app: the test's own, which empties the tables after the test.)"""
    old_only = create_app(config_for(database_url, CLOCK=clock, AUDIT_HMAC_KEYS=f"k1:{SECRET_OLD}"))
    clock.set("2027-01-10T12:00:00+00:00")
    admin = old_only.test_client()
    with old_only.app_context():
        from credits_service import services

        key = services.api_keys().create("rotator", "write")
    headers = {"Authorization": f"Bearer {key}"}
    assert admin.post("/api/admin/clients", json={"id": "rot", "name": "Rotation"}, headers=headers).status_code == 201
    assert admin.put("/api/admin/clients/rot/quota", json={"monthlyGenerationLimit": 7},
                     headers=headers).status_code == 200
    dispose_engines(old_only)

    clock.set("2027-02-10T12:00:00+00:00")
    rotated = create_app(config_for(database_url, CLOCK=clock,
                                    AUDIT_HMAC_KEYS=keys_value(f"k2:{SECRET_NEW}", f"k1@2027-02-01:{SECRET_OLD}")))
    assert rotated.test_client().put("/api/admin/clients/rot/quota", json={"monthlyGenerationLimit": 8},
                                     headers=headers).status_code == 200
    result = rotated.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    dispose_engines(rotated)


@pytest.fixture
def two_keys_app(database_url, clock):
    """Both keys listed, the newer first; the app signs with the newer."""
    app = create_app(config_for(database_url, CLOCK=clock,
                                AUDIT_HMAC_KEYS=keys_value(f"k2:{SECRET_NEW}", f"k1:{SECRET_OLD}")))
    yield app
    dispose_engines(app)


def test_an_entry_signed_with_an_older_key_after_a_newer_one_fails_verify(database_url, clock, two_keys_app, api,
                                                                          acme, runner):
    """A leaked old key and write access: appending with it no longer verifies."""
    newer = two_keys_app.test_client()
    headers = {"Authorization": f"Bearer {api.keys['write']}"}
    assert newer.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 6},
                     headers=headers).status_code == 200
    old_again = create_app(config_for(database_url, CLOCK=clock, AUDIT_HMAC_KEYS=f"k1:{SECRET_OLD}"))
    assert old_again.test_client().put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 7},
                                       headers=headers).status_code == 200
    dispose_engines(old_again)
    result = two_keys_app.test_cli_runner().invoke(args=["audit", "verify", "--client", "acme"])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("client 'acme'")]
    assert "older key" in line and "'k1'" in line and "'k2'" in line


def test_an_entry_signed_with_a_retired_key_fails_verify(database_url, clock, api, acme):
    clock.set("2027-03-05T12:00:00+00:00")
    late = create_app(config_for(database_url, CLOCK=clock, AUDIT_HMAC_KEYS=f"k1:{SECRET_OLD}"))
    headers = {"Authorization": f"Bearer {api.keys['write']}"}
    assert late.test_client().put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 7},
                                  headers=headers).status_code == 200
    dispose_engines(late)
    checker = create_app(config_for(database_url, CLOCK=clock,
                                    AUDIT_HMAC_KEYS=keys_value(f"k2:{SECRET_NEW}", f"k1@2027-03-01:{SECRET_OLD}")))
    result = checker.test_cli_runner().invoke(args=["audit", "verify", "--client", "acme"])
    dispose_engines(checker)
    assert result.exit_code == 1
    assert "retired key: entry 1 was signed with key 'k1' at 2027-03-05T12:00:00.000Z, after its retirement on " \
           "2027-03-01T00:00:00.000Z" in result.output


def test_a_retired_key_cannot_be_the_signing_one(clock):
    clock.set("2027-03-05T12:00:00+00:00")
    with pytest.raises(ConfigurationError, match=r"entry 1 \(key 'k1'\) was retired on 2027-03-01"):
        create_app(config_for("sqlite://", CLOCK=clock, AUDIT_HMAC_KEYS=f"k1@2027-03-01:{SECRET_OLD}"))


# ---- secrets at start-up: the entry's position, never its content --------------------------


@pytest.mark.parametrize(("value", "problem"), [
    ("a-secret-without-any-id-at-all-0123456789", "entry 1 of 1 is not an id:secret pair"),
    (f"k1:{SECRET_OLD},tail-of-a-secret-with-a-comma-0123456789", "entry 2 of 2 is not an id:secret pair"),
    (f"k1:{SECRET_OLD},:{SECRET_NEW}", "entry 2 of 2 has an id that is not"),
    (f"bad id:{SECRET_NEW}", "entry 1 of 1 has an id that is not"),
    ("k1@someday:" + SECRET_NEW, "entry 1 of 1 has a retirement date that is not YYYY-MM-DD"),
    ("k1:short-secret", "entry 1 of 1 (key 'k1') has a secret shorter than 32 characters"),
])
def test_a_malformed_audit_key_is_named_by_position_never_shown(value, problem):
    with pytest.raises(ConfigurationError) as refused:
        create_app(config_for("sqlite://", AUDIT_HMAC_KEYS=value))
    message = str(refused.value)
    assert message.startswith(f"Invalid configuration: AUDIT_HMAC_KEYS {problem}")
    for fragment in (SECRET_OLD[:12], SECRET_NEW[:12], "a-secret-without", "tail-of-a-secret", "short-secret", "bad id"):
        assert fragment not in message


def test_audit_keys_parse_ids_and_retirements():
    keys = AuditKeys.parse(keys_value(f"k2:{SECRET_NEW}", f"k1@2027-03-01:{SECRET_OLD}"))
    assert (keys.signing_id, list(keys.secrets)) == ("k2", ["k2", "k1"])
    assert keys.is_older("k1", "k2") and not keys.is_older("k2", "k1")
    assert keys.retired["k1"].isoformat() == "2027-03-01T00:00:00+00:00"
