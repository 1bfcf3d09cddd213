"""A change and its audit entry commit together or not at all, under a real database failure.

A trigger makes every INSERT into credit_audit_log fail; the change made in the same
transaction must then be rolled back with it.
"""

import pytest
from sqlalchemy import text

from credits_service.extensions import db
from helpers import consumed, granted

CREDITS = "/api/admin/clients/acme/credits"

SQLITE_INSTALL = [
    "CREATE TRIGGER audit_boom BEFORE INSERT ON credit_audit_log BEGIN SELECT RAISE(ABORT, 'boom'); END",
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS audit_boom"]
POSTGRES_INSTALL = [
    "CREATE FUNCTION audit_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$",
    "CREATE TRIGGER audit_boom BEFORE INSERT ON credit_audit_log FOR EACH ROW EXECUTE FUNCTION audit_boom()",
]
POSTGRES_DROP = ["DROP TRIGGER IF EXISTS audit_boom ON credit_audit_log", "DROP FUNCTION IF EXISTS audit_boom()"]


class FailingAuditLog:
    """Installs the trigger; drop() removes it (idempotent, and always run at teardown)."""

    def __init__(self, app):
        self.app = app

    def _run(self, statements_by_dialect):
        with self.app.app_context():
            session = db.session()
            statements = statements_by_dialect[db.engine.dialect.name]
            for statement in statements:
                session.execute(text(statement))
            session.commit()

    def install(self):
        self._run({"sqlite": SQLITE_INSTALL, "postgresql": POSTGRES_INSTALL})

    def drop(self):
        self._run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP})


@pytest.fixture
def failing_audit_log(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    trigger = FailingAuditLog(app)
    trigger.install()
    try:
        yield trigger
    finally:
        trigger.drop()


@pytest.fixture
def acme(api):
    """A client with some usage and one earlier audit entry."""
    api.create_client("acme", "Acme Corp")
    consumed(api, 7)
    granted(api, 20)


def snapshot(api):
    overview = api.get("/api/admin/clients/acme/quota", key="read").get_json()
    audit = api.get("/api/admin/clients/acme/audit-log?limit=100", key="read").get_json()["items"]
    return overview, audit


def assert_server_error_leaking_nothing(response):
    assert 500 <= response.status_code < 600, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert set(body) <= {"error", "fields"}
    assert isinstance(body["error"], str) and body["error"]
    lowered = response.get_data(as_text=True).lower()
    for leak in ("boom", "insert", "credit_audit_log", "sql", "traceback", "trigger"):
        assert leak not in lowered


MUTATIONS = {
    "plan-change": ("PUT", "/api/admin/clients/acme/quota", {"plan": "pro", "reason": "upgrade"}),
    "limit-change": ("PUT", "/api/admin/clients/acme/quota", {"monthlyGenerationLimit": 5}),
    "grant": ("POST", CREDITS, {"action": "grant", "amount": 10, "reason": "bonus"}),
    "reset": ("POST", CREDITS, {"action": "reset", "reason": "support"}),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_change_is_rolled_back_when_its_audit_entry_fails(api, acme, failing_audit_log, mutation):
    method, path, body = MUTATIONS[mutation]
    before = snapshot(api)
    assert before[0]["quota"]["monthlyGenerationLimit"] == 120
    assert before[0]["usage"]["generationCount"] == 7
    assert len(before[1]) == 1

    assert_server_error_leaking_nothing(api.request(method, path, json=body))

    failing_audit_log.drop()
    assert snapshot(api) == before

    # Without the trigger the same request goes through, with exactly one new entry.
    assert api.request(method, path, json=body).status_code == 200
    overview, audit = snapshot(api)
    assert len(audit) == 2
    assert overview != before[0]


def test_failed_idempotent_grant_stores_no_answer(api, acme, failing_audit_log):
    headers = {"Idempotency-Key": "grant-once"}
    grant = {"action": "grant", "amount": 10}
    assert_server_error_leaking_nothing(api.post(CREDITS, json=grant, headers=headers))
    failing_audit_log.drop()

    retry = api.post(CREDITS, json=grant, headers=headers)
    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.get_json()["newLimit"] == 130
    overview, audit = snapshot(api)
    assert overview["quota"]["monthlyGenerationLimit"] == 130
    assert len(audit) == 2


def test_usage_writes_no_audit_entry_so_it_is_unaffected(api, acme, failing_audit_log):
    assert consumed(api, 3)["generationCount"] == 10
