"""Round-trip budgets of the hot paths, and how writers wait for each other on PostgreSQL.

The platform's two calls per generation are one statement each on PostgreSQL (its key already
checked): quota-status one SELECT, a consumption one INSERT ... ON CONFLICT under the quota row
lock, each outside a transaction. Everything that writes more than one row is one transaction.
"""

import threading
import time

import pytest
from sqlalchemy import create_engine, text

from conftest import config_for, every_statement, listening, make_key
from credits_service.extensions import db
from credits_service.transactions import read_connection, write_transaction

USAGE = "/api/clients/acme/usage"
STATUS = "/api/clients/acme/quota-status"


@pytest.fixture
def app_config(database_url, clock):
    # A key found valid stays trusted for the whole test, whatever the machine's speed: the
    # statement counts below are of the request's own work.
    return config_for(database_url, CLOCK=clock, API_KEY_CACHE_SECONDS=3600)


@pytest.fixture
def engine(app):
    with app.app_context():
        return db.engine


@pytest.fixture
def postgresql(engine):
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises writers with IMMEDIATE transactions; no statement stands alone")
    return engine


@pytest.fixture
def database_events(app, engine):
    """What the engine does during the test: checkouts, transactions, statements."""
    seen = []
    listeners = [
        (engine.pool, "checkout", lambda *_: seen.append("checkout")),
        (engine, "begin", lambda *_: seen.append("begin")),
        (engine, "commit", lambda *_: seen.append("commit")),
        (engine, "rollback", lambda *_: seen.append("rollback")),
        (engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement.split()[0])),
    ]
    with listening(*listeners):
        yield seen


@pytest.fixture
def driver_modes(app):
    """For every statement the service sends: (first word, whether the driver is in autocommit).

    psycopg sends BEGIN before a statement only when autocommit is off, and COMMIT or ROLLBACK
    only then, so autocommit on means the statement was the request's only round trip.
    """
    seen = []

    def record(connection, _cursor, statement, *_):
        seen.append((statement.split()[0], connection.connection.driver_connection.autocommit))

    with every_statement(app, record):
        yield seen


def test_a_fresh_keys_check_and_its_consumption_share_one_transaction(api, app, acme, postgresql, database_events):
    key = make_key(app, "fresh-platform", "service")  # not checked yet by this process
    database_events.clear()
    response = api.post(USAGE, json={"count": 2}, key=key)
    assert response.status_code == 200, response.get_json()
    # The key, the quota row lock, the month's row (none yet: nothing held to count), the upsert.
    assert database_events == ["checkout", "begin", "SELECT", "SELECT", "SELECT", "INSERT", "commit"]


def test_a_key_found_valid_is_not_looked_up_again_while_cached(api, app, acme):
    key = make_key(app, "platform-2", "service")
    sent = []
    assert api.post(USAGE, key=key).status_code == 200
    with every_statement(app, lambda _c, _cur, statement, *_: sent.append(statement)):
        assert api.post(USAGE, key=key).status_code == 200
    assert sent and not [statement for statement in sent if "api_keys" in statement]
    assert api.get(STATUS, key=key).get_json()["generationsUsed"] == 2


def test_an_unknown_key_is_looked_up_once_while_its_refusal_is_cached(api, acme, database_events):
    """A storm of one bad key costs one lookup per cache interval, not one per request."""
    lookups = []
    for _ in range(3):
        database_events.clear()
        assert api.post(USAGE, key="cs_not-a-key").status_code == 401
        lookups.append(database_events.count("SELECT"))
    assert lookups == [1, 0, 0]


@pytest.mark.parametrize(("method", "path", "key", "statements"), [
    ("GET", STATUS, "service", [("SELECT", True)]),
    ("GET", "/api/admin/clients/acme/quota", "read", [("SELECT", True), ("SELECT", True)]),
    ("POST", USAGE, "service", [("WITH", True)]),
])
def test_a_hot_request_is_its_statements_alone_on_one_pooled_connection(
        api, app, acme, postgresql, driver_modes, database_events, method, path, key, statements):
    """Its key cached, such a request borrows one connection of the engine's one pool, runs its
    statements in autocommit (no BEGIN, COMMIT or ROLLBACK round trips) and gives it back."""
    assert api.request(method, path, key=key).status_code == 200  # the key is checked (and cached) here
    driver_modes.clear()
    database_events.clear()
    assert api.request(method, path, key=key).status_code == 200
    assert driver_modes == statements
    # SQLAlchemy's own begin/rollback bookkeeping on an autocommit connection sends nothing.
    assert [step for step in database_events if step not in ("begin", "rollback")][0] == "checkout"
    assert database_events.count("checkout") == 1
    assert postgresql.pool.checkedout() == 0
    with postgresql.connect() as connection:  # what it gave back is out of autocommit again
        assert connection.connection.driver_connection.autocommit is False


def test_a_write_after_an_autocommit_read_gets_a_real_transaction(app, acme, postgresql):
    with app.app_context():
        session = db.session()
        with read_connection(session) as connection:
            assert connection.connection.driver_connection.autocommit is True
            connection.exec_driver_sql("SELECT 1")
        with write_transaction(session):
            assert session.connection().connection.driver_connection.autocommit is False
        db.session.remove()


def test_a_refused_consumption_is_worded_in_a_transaction_and_writes_nothing(api, acme, postgresql, driver_modes):
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 4},
                   key="write").status_code == 200
    assert api.get(STATUS, key="service").status_code == 200  # caches the key
    driver_modes.clear()
    response = api.post(USAGE, json={"count": 5}, key="service")
    assert response.status_code == 402
    assert response.get_json()["error"].startswith("Not enough credits: 5 requested, 4 left")
    # The one statement found nothing to do; the transaction that words the refusal rolled back.
    assert driver_modes[0] == ("WITH", True)
    assert [mode for _, mode in driver_modes[1:]] == [False] * (len(driver_modes) - 1)
    assert api.get("/api/admin/clients/acme/usage", key="read").get_json()["items"] == []  # no month row


def test_a_month_grant_lets_a_new_months_count_past_the_stored_limit_in_one_statement(
        api, acme, postgresql, driver_modes):
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 4},
                   key="write").status_code == 200
    assert api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 6, "scope": "month"},
                    key="write").status_code == 200
    assert api.get(STATUS, key="service").status_code == 200  # caches the key
    driver_modes.clear()
    # Above 4, within 4 + 6, and short of the first threshold (80 %: a crossing takes the transaction).
    response = api.post(USAGE, json={"count": 7}, key="service")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"month": response.get_json()["month"], "generationCount": 7, "limit": 10,
                                   "remaining": 3}
    assert driver_modes == [("WITH", True)]  # the month's row (made by the grant) let the one statement count it


def test_a_grant_is_one_transaction_writing_limit_ledger_and_audit_entry(api, acme, postgresql, database_events):
    assert api.get("/api/admin/clients/acme/quota", key="write").status_code == 200  # caches the key
    database_events.clear()
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 7}, key="write")
    assert response.status_code == 200, response.get_json()
    assert database_events[:2] == ["checkout", "begin"] and database_events[-1] == "commit"
    assert database_events.count("begin") == database_events.count("commit") == 1
    body = response.get_json()
    assert (body["previousLimit"], body["newLimit"]) == (100, 107)
    ledger = api.get("/api/admin/clients/acme/grants", key="read").get_json()["items"]
    assert [(grant["id"], grant["amount"]) for grant in ledger] == [(body["grantId"], 7)]
    entry = api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"][0]
    assert (entry["action"], entry["details"]["grantId"], entry["newValue"]) == ("credit_grant", body["grantId"], "107")


class LockHolder:
    """Another writer holding a client's quota row lock while the test sends a request that needs it.

    run(send) starts the request in a thread, waits until PostgreSQL shows it waiting for a
    lock (bounded), commits the holder's change, and returns the request's response: the wait
    is observed, not assumed from elapsed time.
    """

    def __init__(self, app_engine, client_id: str = "acme"):
        # An engine of its own: nothing it sends is counted as the app's.
        self.engine = create_engine(app_engine.url)
        self.connection = self.engine.connect()
        self.connection.execute(text("SELECT 1 FROM quota_limits WHERE client_id = :id FOR UPDATE"),
                                {"id": client_id})

    def execute(self, sql: str, **parameters) -> None:
        self.connection.execute(text(sql), parameters)

    def _someone_waits_for_a_lock(self) -> bool:
        # Asked on the holder's own connection, so a pooler's two server connections (the suite
        # through PgBouncer) suffice; the snapshot is cleared, or the transaction's first is kept.
        self.connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return bool(self.connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())

    def run(self, send):
        answer = {}
        request = threading.Thread(target=lambda: answer.setdefault("response", send()))
        request.start()
        try:
            deadline = time.monotonic() + 10
            while not self._someone_waits_for_a_lock():
                assert time.monotonic() < deadline, "the request never waited for the quota row lock"
                assert request.is_alive(), "the request finished without waiting for the lock"
                time.sleep(0.01)
            self.connection.commit()
        finally:
            request.join(timeout=30)
            self.connection.close()
            self.engine.dispose()
        return answer["response"]


@pytest.mark.parametrize("new_limit, expected_status", [(2, 402), (10, 200)])
def test_a_consumption_waits_for_a_limit_change_in_progress_and_counts_against_it(
        api, acme, postgresql, driver_modes, new_limit, expected_status):
    """The one statement waits for the writer's commit and checks against the new limit, not the
    one its snapshot saw."""
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 12 - new_limit},
                   key="write").status_code == 200  # 10 before a lowering to 2, 2 before a raise to 10
    assert api.get(STATUS, key="service").status_code == 200  # caches the key
    holder = LockHolder(postgresql)
    holder.execute("UPDATE quota_limits SET monthly_generation_limit = :limit WHERE client_id = 'acme'",
                   limit=new_limit)
    driver_modes.clear()
    response = holder.run(lambda: api.post(USAGE, json={"count": 5}, key="service"))
    assert response.status_code == expected_status, response.get_json()
    assert driver_modes[0] == ("WITH", True)
    if expected_status == 200:
        assert response.get_json()["limit"] == 10
        assert driver_modes == [("WITH", True)]  # counted by the one statement, against the limit it locked
    else:
        assert response.get_json()["limit"] == 2
        assert api.get(STATUS, key="service").get_json()["generationsUsed"] == 0


@pytest.mark.parametrize("scope", ["permanent", "month"])
def test_a_grant_waits_for_a_usage_change_in_progress_and_reports_it(api, acme, postgresql, scope):
    """The grant reads the usage and month-grants as the writer left them, not as they were when it began."""
    month = api.get(STATUS, key="service").get_json()["month"]
    holder = LockHolder(postgresql)
    holder.execute("INSERT INTO usage_records (client_id, month, generation_count, granted, created_at, "
                   "updated_at) VALUES ('acme', :month, 30, 20, now(), now())", month=month)
    response = holder.run(lambda: api.post("/api/admin/clients/acme/credits",
                                           json={"action": "grant", "amount": 5, "scope": scope}, key="write"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["currentUsage"], body["previousLimit"], body["newLimit"], body["remaining"]) == (30, 120, 125, 95)
    status = api.get(STATUS, key="service").get_json()
    assert (status["generationsUsed"], status["generationsLimit"]) == (30, 125)


def test_a_grant_whose_ledger_row_fails_writes_nothing(api, acme, postgresql, runner):
    """The raise, the ledger row, the entry and the head's advance are one transaction: a failure
    in any of them leaves every other one unwritten."""
    first = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5}, key="write")
    assert first.status_code == 200
    with postgresql.begin() as connection:  # the next grant id is one the ledger already holds
        connection.execute(text("SELECT setval('credit_grants_id_seq', :id, false)"),
                           {"id": first.get_json()["grantId"]})
    before = api.get("/api/admin/clients/acme/quota", key="read").get_json()
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 7}, key="write")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error."}
    assert api.get("/api/admin/clients/acme/quota", key="read").get_json() == before
    assert len(api.get("/api/admin/clients/acme/grants", key="read").get_json()["items"]) == 1
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output


def test_a_requests_session_and_connection_are_given_back_at_teardown(api, app, acme, engine):
    key = make_key(app, "never-checked", "service")  # its check makes the request's session, and
    # the read goes on in that session's transaction: only the teardown ends it
    ended = []
    with listening((db.session, "after_transaction_end", lambda _session, transaction: ended.append(transaction))):
        assert api.get(STATUS, key=key).status_code == 200
    assert ended, "the request's session transaction never ended"
    assert engine.pool.checkedout() == 0
