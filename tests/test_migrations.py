"""The migrations build exactly what the models describe, and go down and up again cleanly."""

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from conftest import config_for, dispose_engines, make_key
from credits_service import create_app
from credits_service.extensions import db

TABLES = {"api_keys", "clients", "quota_limits", "usage_records", "credit_audit_log", "audit_heads",
          "idempotency_keys", "credit_grants", "audit_actions", "holds", "refunds",
          "webhook_endpoints", "webhook_events", "webhook_deliveries", "usage_thresholds"}


def schema_diff(app):
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def table_names(app):
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


@pytest.fixture
def fresh_app(request, database_url, tmp_path):
    """An app on a database of its own (empty, not migrated), on the same backend as database_url."""
    if database_url.startswith("sqlite"):
        url = "sqlite:///" + str(tmp_path / "fresh.sqlite3")
    else:
        url = request.getfixturevalue("make_postgres_database")()
    app = create_app(config_for(url))
    yield app
    dispose_engines(app)


def flask_db(app, *args):
    result = app.test_cli_runner().invoke(args=["db", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_models_and_migrations_agree(app):
    assert schema_diff(app) == []


def test_downgrade_to_base_then_upgrade(fresh_app):
    flask_db(fresh_app, "upgrade")
    assert TABLES <= table_names(fresh_app)
    assert schema_diff(fresh_app) == []

    flask_db(fresh_app, "downgrade", "base")
    assert table_names(fresh_app) == {"alembic_version"}

    flask_db(fresh_app, "upgrade")
    assert table_names(fresh_app) == TABLES | {"alembic_version"}
    assert schema_diff(fresh_app) == []


def add_entry(session, entry_id, client_id="acme", **chain):
    columns = {"id": entry_id, "client_id": client_id, "admin_id": "alice@example.com",
               "action": "limit_change", "details": '{"reason": "r"}', "previous_value": "1",
               "new_value": "2", "created_at": "2026-11-25 12:00:00.123456+00:00", **chain}
    session.execute(text(f"INSERT INTO credit_audit_log ({', '.join(columns)}) "
                         f"VALUES ({', '.join(':' + name for name in columns)})"), columns)


def add_client(session, client_id, head=True):
    """A client and, from revision 0002 on (head=True), its empty chain's head, which each entry advances."""
    session.execute(text("INSERT INTO clients (id, name, created_at, updated_at) "
                         "VALUES (:id, 'Acme', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": client_id})
    if head:
        session.execute(text("INSERT INTO audit_heads (client_id, entry_count, last_entry_id, hash, updated_at) "
                             "VALUES (:id, 0, NULL, :genesis, CURRENT_TIMESTAMP)"), {"id": client_id, "genesis": "0" * 64})


def test_upgrade_after_downgrade_restores_the_append_only_guard(fresh_app):
    flask_db(fresh_app, "upgrade")
    flask_db(fresh_app, "downgrade", "base")
    flask_db(fresh_app, "upgrade")
    with fresh_app.app_context():
        session = db.session()
        add_client(session, "acme")
        add_entry(session, 1, seq=1, previous_hash="0" * 64, hash="1" * 64, key_id="test")
        session.commit()
        for statement in ("UPDATE credit_audit_log SET admin_id = 'mallory'", "DELETE FROM credit_audit_log"):
            with pytest.raises(DatabaseError):
                session.execute(text(statement))
                session.commit()
            session.rollback()
        assert session.execute(text("SELECT admin_id FROM credit_audit_log")).scalars().all() == ["alice@example.com"]


def test_downgrade_to_0001_keeps_its_guard_against_updates(fresh_app):
    flask_db(fresh_app, "upgrade")
    flask_db(fresh_app, "downgrade", "0001")
    with fresh_app.app_context():
        session = db.session()
        add_client(session, "acme", head=False)
        add_entry(session, 1)
        session.commit()
        with pytest.raises(DatabaseError):
            session.execute(text("UPDATE credit_audit_log SET admin_id = 'mallory'"))
            session.commit()
        session.rollback()


def test_upgrade_chains_the_entries_that_already_exist(fresh_app):
    flask_db(fresh_app, "upgrade", "0001")
    with fresh_app.app_context():
        session = db.session()
        for client_id in ("acme", "other", "empty"):
            add_client(session, client_id, head=False)
        for entry_id, client_id in enumerate(["acme", "other", "acme", "acme", "other"], start=1):
            add_entry(session, entry_id, client_id)
        session.commit()
    flask_db(fresh_app, "upgrade")
    runner = fresh_app.test_cli_runner()
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "5 entries of 3 client(s)" in verified.output
    heads = [json.loads(line) for line in runner.invoke(args=["audit", "heads"]).output.splitlines()]
    assert [(h["clientId"], h["entryCount"], h["lastEntryId"]) for h in heads] == [
        ("acme", 3, 4), ("empty", 0, None), ("other", 2, 5)]
    with fresh_app.app_context():
        seqs = db.session().execute(text("SELECT id, seq FROM credit_audit_log ORDER BY id")).all()
    assert [tuple(row) for row in seqs] == [(1, 1), (2, 1), (3, 2), (4, 3), (5, 2)]



def test_data_from_before_the_grant_ledger_keeps_working(fresh_app, clock):
    """A grant made before 0003 stays in the limit and the audit log; the ledger starts empty."""
    flask_db(fresh_app, "upgrade", "0001")
    with fresh_app.app_context():
        session = db.session()
        now = "'2026-11-10 12:00:00'"
        session.execute(text(f"INSERT INTO clients (id, name, created_at, updated_at) VALUES ('acme', 'Acme', {now}, {now})"))
        session.execute(text("INSERT INTO quota_limits (client_id, plan, monthly_generation_limit, storage_quota_mb, "
                             f"created_at, updated_at) VALUES ('acme', 'free', 150, 1000, {now}, {now})"))
        session.execute(text("INSERT INTO usage_records (client_id, month, generation_count, created_at, updated_at) "
                             f"VALUES ('acme', '2026-11', 120, {now}, {now})"))
        session.execute(text("INSERT INTO credit_audit_log (client_id, admin_id, action, details, previous_value, "
                             "new_value, created_at) VALUES ('acme', 'alice@example.com', 'credit_grant', "
                             f"'{{\"amount\": 50, \"reason\": null}}', '100', '150', {now})"))
        session.commit()
    flask_db(fresh_app, "upgrade")
    assert schema_diff(fresh_app) == []

    fresh_app.config["CLOCK"] = clock
    clock.set("2026-11-15T12:00:00+00:00")
    key = make_key(fresh_app, "alice@example.com", "write")
    headers = {"Authorization": f"Bearer {key}"}
    client = fresh_app.test_client()
    grants = client.get("/api/admin/clients/acme/grants", headers=headers)
    assert (grants.status_code, grants.get_json()["items"]) == (200, [])
    void = client.post("/api/admin/clients/acme/credits", json={"action": "void", "grantId": 1}, headers=headers)
    assert void.status_code == 404
    status = client.get("/api/clients/acme/quota-status", headers=headers).get_json()
    assert (status["generationsUsed"], status["generationsLimit"], status["baseLimit"],
            status["grantedThisMonth"]) == (120, 150, 150, 0)
    month = client.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5, "scope": "month"},
                        headers=headers)
    assert (month.status_code, month.get_json()["newLimit"]) == (200, 155)
    history = client.get("/api/admin/clients/acme/usage", headers=headers).get_json()
    # Usage from before the counters is counted as consumed.
    assert history["items"] == [{"month": "2026-11", "generationCount": 120, "grantedThisMonth": 5,
                                 "consumedCount": 120, "capturedCount": 0, "refundedCount": 0}]


def test_down_to_0001_and_up_again_keeps_data_and_the_append_only_guard(fresh_app):
    flask_db(fresh_app, "upgrade")
    flask_db(fresh_app, "downgrade", "0002")
    assert "credit_grants" not in table_names(fresh_app)
    flask_db(fresh_app, "upgrade")
    assert schema_diff(fresh_app) == []
    with fresh_app.app_context():
        session = db.session()
        add_client(session, "acme")
        add_entry(session, 1, action="credit_void", seq=1, previous_hash="0" * 64, hash="1" * 64, key_id="test")
        session.commit()
        with pytest.raises(DatabaseError):
            session.execute(text("UPDATE credit_audit_log SET admin_id = 'mallory'"))
            session.commit()
        session.rollback()
    # A downgrade would have to delete the credit_void entry: it refuses instead.
    result = fresh_app.test_cli_runner().invoke(args=["db", "downgrade", "0002"])
    assert result.exit_code != 0
    assert "credit_void entries" in result.output
    assert "credit_grants" in table_names(fresh_app)
