"""The hot path's plumbing: the key check and the work share one connection and one transaction,
and a key found valid is not looked up again for a moment (revocation: tests/integration)."""

import threading
import time

import pytest
from sqlalchemy import text

from conftest import every_statement, listening, make_key
from credits_service import AUTOCOMMIT_BIND
from credits_service.extensions import db

USAGE = "/api/clients/acme/usage"


def app_engines(app):
    """The app's engine and, on PostgreSQL, its autocommit sibling: (engine, every engine)."""
    with app.app_context():
        return db.engine, list(db.engines.values())


@pytest.fixture
def database_events(app):
    """What the app's engines do during the test: checkouts, transactions, statements."""
    seen = []
    engine, engines = app_engines(app)
    listeners = [
        (target, name, listener)
        for each in engines
        for target, name, listener in [
            (each.pool, "checkout", lambda *_: seen.append("checkout")),
            (each, "begin", lambda *_: seen.append("begin")),
            (each, "commit", lambda *_: seen.append("commit")),
            (each, "rollback", lambda *_: seen.append("rollback")),
            (each, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement.split()[0])),
        ]
    ]
    with listening(*listeners):
        yield engine, seen


@pytest.fixture
def statements(app):
    """The SQL of every statement sent during the test."""
    sent = []

    def record(_connection, _cursor, statement, *_):
        sent.append(statement)

    with every_statement(app, record):
        yield sent


def test_consumption_checks_its_key_and_writes_in_one_transaction(api, app, acme, database_events):
    engine, seen = database_events
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite ends the key check's read transaction to BEGIN IMMEDIATE")
    key = make_key(app, "fresh-platform", "service")  # not checked yet by this process
    seen.clear()
    response = api.post(USAGE, json={"count": 2}, key=key)
    assert response.status_code == 200, response.get_json()
    assert seen == ["checkout", "begin", "SELECT", "SELECT", "INSERT", "commit"]


def test_a_key_found_valid_is_not_looked_up_again_at_once(api, app, acme, statements):
    key = make_key(app, "platform-2", "service")
    assert api.post(USAGE, key=key).status_code == 200
    statements.clear()
    assert api.post(USAGE, key=key).status_code == 200
    assert statements and not [statement for statement in statements if "api_keys" in statement]
    assert api.get("/api/clients/acme/quota-status", key=key).get_json()["generationsUsed"] == 2


def test_an_unknown_key_is_looked_up_every_time(api, acme, database_events):
    _, seen = database_events
    for _ in range(2):
        seen.clear()
        assert api.post(USAGE, key="cs_not-a-key").status_code == 401
        assert seen.count("SELECT") == 1


@pytest.fixture
def driver_modes(app):
    """For every statement the service sends: (first word, whether the driver is in autocommit).

    psycopg sends BEGIN before a statement only when autocommit is off, and COMMIT or ROLLBACK
    only then, so autocommit on means the statement was the request's only round trip.
    """
    seen = []
    engine, _ = app_engines(app)

    def record(connection, _cursor, statement, *_):
        seen.append((statement.split()[0], connection.connection.driver_connection.autocommit))

    with every_statement(app, record):
        yield engine, seen


@pytest.mark.parametrize("path", ["/api/clients/acme/quota-status", "/api/admin/clients/acme/quota"])
def test_reads_run_outside_a_transaction_on_postgresql(api, app, acme, driver_modes, path):
    engine, seen = driver_modes
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a read is a transaction")
    key = "service" if "quota-status" in path else "read"
    assert api.get(path, key=key).status_code == 200  # the key is checked (and cached) here
    seen.clear()
    assert api.get(path, key=key).status_code == 200
    expected = 1 if "quota-status" in path else 2  # the joined quota row; then the newest entries
    assert seen == [("SELECT", True)] * expected


@pytest.mark.parametrize(("method", "path", "key", "statements"), [
    ("GET", "/api/clients/acme/quota-status", "service", ["SELECT"]),
    ("GET", "/api/admin/clients/acme/quota", "read", ["SELECT", "SELECT"]),
    ("POST", USAGE, "service", ["WITH"]),
])
def test_an_autocommit_request_borrows_one_connection_and_no_session_transaction(
        api, app, acme, database_events, method, path, key, statements):
    """With its key already checked, such a request borrows one connection of the autocommit pool
    for its statements and gives it back; the ORM session begins no transaction for it, and the
    engine's own pool is not touched."""
    engine, seen = database_events
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite every request is a transaction of the session")
    with app.app_context():
        autocommit_engine = db.engines[AUTOCOMMIT_BIND]
    checkouts = {engine: 0, autocommit_engine: 0}

    def count_checkout(target):
        def counted(*_):
            checkouts[target] += 1
        return counted

    session_transactions = []

    def record(*_):
        session_transactions.append("after_begin")

    assert api.request(method, path, key=key).status_code == 200  # the key is checked (and cached) here
    seen.clear()
    listeners = [(db.session, "after_begin", record)] + [
        (target.pool, "checkout", count_checkout(target)) for target in checkouts]
    with listening(*listeners):
        assert api.request(method, path, key=key).status_code == 200
    # SQLAlchemy's own begin/rollback bookkeeping on an autocommit connection sends nothing.
    assert [step for step in seen if step not in ("begin", "rollback")] == ["checkout", *statements]
    assert session_transactions == []
    assert checkouts == {engine: 0, autocommit_engine: 1}
    assert engine.pool.checkedout() == autocommit_engine.pool.checkedout() == 0
    with engine.connect() as connection:  # the engine's connections are not in autocommit
        assert connection.connection.driver_connection.autocommit is False
    with autocommit_engine.connect() as connection:  # the sibling's stay in it
        assert connection.connection.driver_connection.autocommit is True


def test_the_autocommit_engine_reaches_the_same_database_at_the_same_level_and_timeout(app):
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            assert AUTOCOMMIT_BIND not in db.engines  # SQLite reads in the session's transaction
            return
        autocommit_engine = db.engines[AUTOCOMMIT_BIND]
    assert autocommit_engine.url == engine.url
    with engine.connect() as connection, autocommit_engine.connect() as sibling:
        def facts(conn):
            return conn.exec_driver_sql(
                "SELECT current_database(), current_setting('transaction_isolation'),"
                " (SELECT setting FROM pg_settings WHERE name = 'application_name')").one()
        assert facts(sibling) == facts(connection)
        # The connect timeout the service sets applies to both pools.
        assert (sibling.connection.driver_connection.info.get_parameters()["connect_timeout"]
                == connection.connection.driver_connection.info.get_parameters()["connect_timeout"]
                == str(app.config["DATABASE_CONNECT_TIMEOUT_SECONDS"]))


def test_an_autocommit_engine_must_reach_the_same_database(app):
    from sqlalchemy import create_engine

    from credits_service.services.transactions import use_autocommit_engine

    with app.app_context():
        engine = db.engine
    other = create_engine("sqlite://", isolation_level="AUTOCOMMIT")
    with pytest.raises(ValueError, match="same database"):
        use_autocommit_engine(engine, other)


def test_a_session_bound_to_a_connection_reads_on_that_connection(app):
    """A session joined to an outer connection (and its transaction) is not given another one."""
    from sqlalchemy.orm import Session

    from credits_service.services.transactions import read_connection

    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a read is a transaction of the session anyway")
    with engine.connect() as outer:
        session = Session(bind=outer)
        with read_connection(session) as connection:
            assert connection.connection.dbapi_connection is outer.connection.dbapi_connection
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        session.close()


def test_a_write_after_an_autocommit_read_gets_a_real_transaction(app, acme, api):
    """read_connection's autocommit must never leak into a write of the same session."""
    from credits_service.services.transactions import read_connection, write_transaction

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            pytest.skip("on SQLite a read is a transaction")
        session = db.session()
        with read_connection(session) as connection:
            assert connection.connection.driver_connection.autocommit is True
            connection.exec_driver_sql("SELECT 1")
        with write_transaction(session):
            assert session.connection().connection.driver_connection.autocommit is False
        db.session.remove()


def test_a_consumption_without_idempotency_key_is_one_statement_on_postgresql(api, acme, driver_modes):
    engine, seen = driver_modes
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a consumption is an IMMEDIATE transaction")
    assert api.post(USAGE, json={"count": 2}, key="service").status_code == 200  # the key, checked and cached
    seen.clear()
    response = api.post(USAGE, json={"count": 3}, key="service")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["generationCount"] == 5
    assert seen == [("WITH", True)]  # the quota row lock and the upsert, committed by themselves


def test_a_refused_consumption_is_worded_in_a_transaction_and_writes_nothing(api, app, acme, driver_modes):
    engine, seen = driver_modes
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a consumption is an IMMEDIATE transaction")
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 4},
                   key="write").status_code == 200
    assert api.get("/api/clients/acme/quota-status", key="service").status_code == 200  # caches the key
    seen.clear()
    response = api.post(USAGE, json={"count": 5}, key="service")
    assert response.status_code == 402
    assert response.get_json()["error"].startswith("Not enough credits: 5 requested, 4 left")
    # The one statement found nothing to do; the transaction that words the refusal rolled back.
    assert seen[0] == ("WITH", True) and [mode for _, mode in seen[1:]] == [False] * (len(seen) - 1)
    history = api.get("/api/admin/clients/acme/usage", key="read").get_json()
    assert history["items"] == []  # no month row made by the refusal


def test_a_month_grant_lets_a_new_months_count_past_the_stored_limit_in_one_statement(api, acme, driver_modes):
    engine, seen = driver_modes
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a consumption is an IMMEDIATE transaction")
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 4},
                   key="write").status_code == 200
    assert api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 6, "scope": "month"},
                    key="write").status_code == 200
    assert api.get("/api/clients/acme/quota-status", key="service").status_code == 200  # caches the key
    seen.clear()
    response = api.post(USAGE, json={"count": 9}, key="service")  # above 4, within 4 + 6
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"month": response.get_json()["month"], "generationCount": 9, "limit": 10,
                                   "remaining": 1}
    assert seen == [("WITH", True)]  # the month's row (made by the grant) let the one statement count it


@pytest.mark.parametrize("new_limit, expected_status", [(2, 402), (10, 200)])
def test_a_consumption_waits_for_a_limit_change_in_progress_and_counts_against_it(
        api, app, acme, driver_modes, new_limit, expected_status):
    """Another writer holds the quota row lock and changes the limit; the one statement must wait
    for its commit and check against the new limit, not the one its snapshot saw."""
    engine, seen = driver_modes
    if engine.dialect.name == "sqlite":
        pytest.skip("on SQLite a consumption is an IMMEDIATE transaction")
    assert api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 12 - new_limit},
                   key="write").status_code == 200  # 10 before a lowering to 2, 2 before a raise to 10
    assert api.get("/api/clients/acme/quota-status", key="service").status_code == 200  # caches the key
    writer = engine.connect()
    try:
        writer.execute(text("SELECT 1 FROM quota_limits WHERE client_id = 'acme' FOR UPDATE"))
        writer.execute(text("UPDATE quota_limits SET monthly_generation_limit = :limit WHERE client_id = 'acme'"),
                       {"limit": new_limit})
        commit = threading.Timer(0.5, writer.commit)
        seen.clear()
        started = time.monotonic()
        commit.start()
        response = api.post(USAGE, json={"count": 5}, key="service")
        waited = time.monotonic() - started
        commit.join()
    finally:
        writer.close()
    assert waited >= 0.4  # it waited for the lock
    assert response.status_code == expected_status, response.get_json()
    assert seen[0] == ("WITH", True)
    if expected_status == 200:
        assert response.get_json()["limit"] == 10
        assert seen == [("WITH", True)]  # counted by the one statement, against the limit it locked
    else:
        assert response.get_json()["limit"] == 2
        status = api.get("/api/clients/acme/quota-status", key="service").get_json()
        assert status["generationsUsed"] == 0


def test_a_grant_is_three_statements_in_one_transaction_on_postgresql(api, acme, database_events, statements):
    engine, seen = database_events
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no data-modifying CTEs: a grant's writes are statements of their own there")
    assert api.get("/api/admin/clients/acme/quota", key="write").status_code == 200  # caches the key
    seen.clear()
    statements.clear()
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 7}, key="write")
    assert response.status_code == 200, response.get_json()
    # The quota row lock; the head, usage and ids under it; the raise, ledger row, entry and head's advance.
    assert seen == ["checkout", "begin", "SELECT", "SELECT", "WITH", "commit"]
    assert all(table in statements[-1] for table in ("quota_limits", "credit_grants", "credit_audit_log",
                                                     "audit_heads"))
    body = response.get_json()
    assert (body["previousLimit"], body["newLimit"]) == (100, 107)
    ledger = api.get("/api/admin/clients/acme/grants", key="read").get_json()["items"]
    assert [(grant["id"], grant["amount"]) for grant in ledger] == [(body["grantId"], 7)]
    entry = api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"][0]
    assert (entry["action"], entry["details"]["grantId"], entry["newValue"]) == ("credit_grant", body["grantId"], "107")


@pytest.mark.parametrize("scope", ["permanent", "month"])
def test_a_grant_waits_for_a_usage_change_in_progress_and_reports_it(api, app, acme, scope):
    """Another writer holds the quota row lock and changes this month's usage row; the grant must
    read the usage and month-grants as that writer left them, not as they were when it began."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite's write transactions are serial: nothing is in progress beside one")
    month = api.get("/api/clients/acme/quota-status", key="service").get_json()["month"]
    writer = engine.connect()
    try:
        writer.execute(text("SELECT 1 FROM quota_limits WHERE client_id = 'acme' FOR UPDATE"))
        writer.execute(text("INSERT INTO usage_records (client_id, month, generation_count, granted, created_at, "
                            "updated_at) VALUES ('acme', :month, 30, 20, now(), now())"), {"month": month})
        commit = threading.Timer(0.5, writer.commit)
        started = time.monotonic()
        commit.start()
        response = api.post("/api/admin/clients/acme/credits",
                            json={"action": "grant", "amount": 5, "scope": scope}, key="write")
        waited = time.monotonic() - started
        commit.join()
    finally:
        writer.close()
    assert waited >= 0.4  # it waited for the lock
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["currentUsage"], body["previousLimit"], body["newLimit"], body["remaining"]) == (30, 120, 125, 95)
    status = api.get("/api/clients/acme/quota-status", key="service").get_json()
    assert (status["generationsUsed"], status["generationsLimit"]) == (30, 125)


def test_a_grant_whose_ledger_row_fails_writes_nothing(api, app, acme, runner):
    """The raise, the ledger row, the entry and the head's advance are one statement on
    PostgreSQL: a failure in any of them leaves every other one unwritten."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite takes the grant's id from the ledger itself: no collision to force")
    first = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5}, key="write")
    assert first.status_code == 200
    with engine.begin() as connection:  # the next grant id is one the ledger already holds
        connection.execute(text("SELECT setval('credit_grants_id_seq', :id, false)"),
                           {"id": first.get_json()["grantId"]})
    before = api.get("/api/admin/clients/acme/quota", key="read").get_json()
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 7}, key="write")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error."}
    after = api.get("/api/admin/clients/acme/quota", key="read").get_json()
    assert after == before  # the limit and the newest audit entries as they were
    assert len(api.get("/api/admin/clients/acme/grants", key="read").get_json()["items"]) == 1
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("parameters, message", [
    ({"amount": 2}, "'amount' has two values"),
    ({"hash": "x"}, r"\['hash'\] are named after audit_heads columns"),
])
def test_a_write_whose_parameters_would_clash_in_one_statement_is_refused(parameters, message):
    from credits_service.services.audit import _merged

    with pytest.raises(ValueError, match=message):
        _merged([{"amount": 1}, parameters])


def test_flask_asks_whether_a_hook_or_view_is_a_coroutine_once_not_per_request(api, acme, monkeypatch):
    import flask.app

    asked = []
    real = flask.app.iscoroutinefunction
    monkeypatch.setattr(flask.app, "iscoroutinefunction", lambda func: asked.append(func) or real(func))
    for path in ("/api/clients/acme/quota-status", "/api/admin/clients/acme/quota"):
        key = "service" if "quota-status" in path else "read"
        assert api.get(path, key=key).status_code == 200
        asked.clear()
        assert api.get(path, key=key).status_code == 200
        assert asked == []
    assert api.post(USAGE, json={"count": 1}, key="service").status_code == 200
    asked.clear()
    assert api.post(USAGE, json={"count": 1}, key="service").status_code == 200
    assert asked == []


def test_a_coroutine_function_is_still_made_sync_or_refused(app):
    async def view():
        return "async"

    for _ in range(2):  # asked again, not taken for a sync function the second time
        with pytest.raises(RuntimeError, match="async"):  # Flask needs its async extra, not installed here
            app.ensure_sync(view)


def test_callables_that_are_not_plain_functions_are_made_sync_as_flask_does(app):
    class Unhashable:
        __hash__ = None

        def __call__(self):
            return "called"

    class View:
        def dispatch(self):
            return "dispatched"

        async def dispatch_later(self):
            return "later"

    unhashable = Unhashable()
    assert app.ensure_sync(unhashable) is unhashable
    for _ in range(3):  # a bound method made per call, as a MethodView's is per request
        method = View().dispatch
        assert app.ensure_sync(method) is method
        with pytest.raises(RuntimeError, match="async"):
            app.ensure_sync(View().dispatch_later)
    # What is kept is the class's function, once: no instance is held.
    assert View.dispatch in app._sync_functions
    assert not [kept for kept in app._sync_functions if hasattr(kept, "__self__")]
    assert View.dispatch_later not in app._sync_functions


def test_the_functions_kept_by_ensure_sync_are_bounded(app):
    def make(i):
        return lambda: i

    for i in range(app.SYNC_FUNCTIONS_KEPT * 3):
        func = make(i)
        assert app.ensure_sync(func) is func
    assert len(app._sync_functions) <= app.SYNC_FUNCTIONS_KEPT


@pytest.mark.parametrize(("method", "path", "key"), [
    ("GET", "/api/clients/acme/quota-status", "service"),
    ("GET", "/api/admin/clients/acme/quota", "read"),
    ("POST", USAGE, "service"),
])
def test_an_autocommit_request_with_a_cached_key_makes_no_orm_session(api, app, acme, monkeypatch, method, path, key):
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            pytest.skip("on SQLite every request is a transaction of the session")
    made = []
    make = db.session.registry.createfunc
    monkeypatch.setattr(db.session.registry, "createfunc", lambda: made.append(1) or make())
    assert api.request(method, path, key=key).status_code == 200  # the key is looked up: a session
    assert made == [1]
    made.clear()
    assert api.request(method, path, key=key).status_code == 200
    assert made == []
    # A grant needs one, and gets it on first use.
    assert api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 1},
                    key="write").status_code == 200
    assert made


def test_a_lazy_session_knows_its_engine_without_being_made(app):
    from credits_service.extensions import request_session

    with app.app_context():
        session = request_session()
        engine = session.get_bind()
        assert session.in_transaction() is False
        assert not db.session.registry.has()
        assert engine is db.session().get_bind()
        session.execute(text("SELECT 1"))  # made now: the session's own transaction
        assert session.in_transaction() is True and db.session().in_transaction() is True
        db.session.remove()


def test_a_session_made_by_a_request_is_removed_with_its_connection_at_teardown(api, app, acme):
    key = make_key(app, "never-checked", "service")  # its check makes the request's session, and
    # the read goes on in that session's transaction: only the teardown ends it
    ended = []

    def record(_session, transaction):
        ended.append(transaction)

    with listening((db.session, "after_transaction_end", record)):
        assert api.get("/api/clients/acme/quota-status", key=key).status_code == 200
    _, engines = app_engines(app)
    assert ended, "the request's session transaction never ended"
    assert all(each.pool.checkedout() == 0 for each in engines)
