"""What a security review found, each attack shown not to work at the HTTP boundary.

The audit log's own defences (history kept past a client's deletion, the database's refusals,
the runtime role, key rotation) are in tests/test_security_audit.py; secrets at start-up in
tests/test_config.py and tests/test_security_audit.py.
"""

import csv
import io
import json
import logging
import re
import time

import pytest
from sqlalchemy import text

from conftest import assert_error, config_for, every_statement
from credits_service.extensions import db

CREDITS = "/api/admin/clients/acme/credits"
EXPORT = "/api/admin/audit-log/export"
# Under the 64 KiB body limit once JSON-encoded, far over every field's length.
LONG = 65000


# ---- patterns run only on text of their field's length, in linear time ------------------

WORST_INPUTS = {
    # The name's not-blank pattern took ~15 s on this before: every split of the run was tried.
    "name": ("POST", "/api/admin/clients", {"json": {"id": "x", "name": "a" * LONG + "\x00"}}, "name"),
    "name-blank": ("POST", "/api/admin/clients", {"json": {"id": "x", "name": " " * LONG + "\x00"}}, "name"),
    "client id": ("POST", "/api/admin/clients", {"json": {"id": "a" * LONG + "!", "name": "n"}}, "id"),
    "reason": ("POST", CREDITS, {"json": {"action": "grant", "amount": 1, "reason": "a" * LONG + "\x00"}}, "reason"),
    "admin id": ("GET", "/api/admin/audit-log?adminId=" + "a" * LONG + "%00", {}, "adminId"),
    "audit client id": ("GET", "/api/admin/audit-log?clientId=" + "a" * LONG + "!", {}, "clientId"),
    "month": ("GET", "/api/admin/clients/acme/usage?from=" + "1" * LONG, {}, "from"),
    "idempotency key": ("POST", "/api/clients/acme/usage",
                        {"json": {"count": 1}, "headers": {"Idempotency-Key": "a" * LONG + "\x01"}}, "Idempotency-Key"),
}


@pytest.mark.parametrize("name", WORST_INPUTS)
def test_the_worst_input_for_each_pattern_is_refused_at_once(api, acme, name):
    method, path, kwargs, field = WORST_INPUTS[name]
    key = "service" if path.startswith("/api/clients") else "write"
    started = time.process_time()
    response = api.request(method, path, key=key, **kwargs)
    spent = time.process_time() - started
    assert_error(response, 400, field)
    assert spent < 0.5, f"{spent:.2f} s of CPU for one refusal"


def test_a_name_that_is_blank_or_holds_nul_is_still_refused_and_a_padded_one_accepted(api):
    for name in (" \t\n", "a\x00b", "\x00"):
        assert_error(api.post("/api/admin/clients", json={"id": "x", "name": name}), 400, "name")
    assert api.post("/api/admin/clients", json={"id": "x", "name": "  Acme  "}).status_code == 201


# ---- the audit export: bounded per answer, continued by a link, its own rate limit -------


class TestExportInPages:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, EXPORT_MAX_ROWS=3)

    @pytest.fixture
    def seven_entries(self, api, acme):
        for amount in range(1, 8):
            assert api.post(CREDITS, json={"action": "grant", "amount": amount}).status_code == 200
        return [entry["id"] for entry in api.get("/api/admin/audit-log", key="read").get_json()["items"]]

    def test_an_export_without_a_range_answers_200_and_links_to_the_rest(self, api, seven_entries):
        seen, pages, path = [], 0, f"{EXPORT}?format=ndjson&clientId=acme&action=credit_grant"
        while path:
            response = api.get(path, key="read")
            assert response.status_code == 200
            seen += [json.loads(line)["id"] for line in response.get_data(as_text=True).splitlines()]
            pages += 1
            link = response.headers.get("Link")
            path = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
            if path:
                assert "clientId=acme" in path and "action=credit_grant" in path and "format=ndjson" in path
        assert seen == seven_entries  # every entry once, newest first
        assert pages == 3

    def test_entries_written_during_an_export_do_not_shift_its_pages(self, api, seven_entries):
        first = api.get(f"{EXPORT}?format=ndjson", key="read")
        assert api.post(CREDITS, json={"action": "grant", "amount": 99}).status_code == 200
        follow = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["Link"]).group(1)
        rest = [json.loads(line)["id"] for line in api.get(follow, key="read").get_data(as_text=True).splitlines()]
        firsts = [json.loads(line)["id"] for line in first.get_data(as_text=True).splitlines()]
        assert firsts + rest == seven_entries[:6]

    def test_the_cli_export_writes_every_entry(self, runner, seven_entries):
        result = runner.invoke(args=["audit", "export", "--format", "ndjson"])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in result.output.splitlines()] == seven_entries


class TestExportRateLimit:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, RATE_LIMIT_EXPORT="2/minute")

    def test_exports_have_their_own_budget_within_the_read_one(self, api, acme):
        for _ in range(2):
            assert api.get(EXPORT, key="read").status_code == 200
        assert_error(api.get(EXPORT, key="read"), 429)
        assert api.get("/api/admin/audit-log", key="read").status_code == 200


# ---- CSV: every cell quoted, formulas still defused ----------------------------------


def test_every_csv_cell_is_quoted_so_no_separator_splits_a_formula_out(api, acme):
    reasons = ["x;=1+2", "=HYPERLINK(\"http://evil\")", "plain", "a,b", "+cmd"]
    for reason in reasons:
        assert api.post(CREDITS, json={"action": "grant", "amount": 1, "reason": reason}).status_code == 200
    body = api.get(f"{EXPORT}?clientId=acme", key="read").get_data(as_text=True)
    lines = body.splitlines()
    for line in lines:
        # Split on the quotes' boundaries: every cell is "..." and nothing stands outside one.
        assert re.fullmatch(r'"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*', line), line
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["reason"] for row in rows] == ["'+cmd", "a,b", "plain", "'=HYPERLINK(\"http://evil\")", "x;=1+2"]


# ---- /metrics behind a token when one is set --------------------------------------------


def test_metrics_are_open_without_a_token(client):
    assert client.get("/metrics").status_code == 200


class TestMetricsToken:
    TOKEN = "metrics-token-0123456789"

    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, METRICS_TOKEN=self.TOKEN)

    def test_metrics_need_the_token(self, client):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": self.TOKEN}):
            body = assert_error(client.get("/metrics", headers=headers), 401)
            assert "METRICS_TOKEN" in body["error"]
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {self.TOKEN}"})
        assert answer.status_code == 200
        assert "credits_http_requests" in answer.get_data(as_text=True)
        assert client.get("/healthz").status_code == 200  # the probes stay open


# ---- /readyz: one database check a second ----------------------------------------------


def test_readiness_is_checked_at_most_once_a_second(app, client):
    checks = []
    with every_statement(app, lambda _c, _cur, statement, *_: checks.append(statement)):
        for _ in range(5):
            assert client.get("/readyz").status_code == 200
    assert [statement for statement in checks if "SELECT 1" in statement] == ["SELECT 1"]


# ---- behind a proxy: rate limits key on the forwarded client ----------------------------


class TestBehindOneProxy:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, RATE_LIMIT_READ="2/minute",
                          TRUSTED_PROXY_HOPS=1)

    def test_unauthenticated_limits_count_each_forwarded_client_apart(self, client):
        def anonymous(address):
            return client.get("/api/admin/clients", headers={"X-Forwarded-For": address}).status_code

        assert [anonymous("203.0.113.7") for _ in range(3)] == [401, 401, 429]
        assert anonymous("198.51.100.9") == 401


class TestWithoutTrustedProxies:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, RATE_LIMIT_READ="2/minute")

    def test_a_forwarded_address_is_not_believed(self, client):
        statuses = [client.get("/api/admin/clients", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
                    for n in range(3)]
        assert statuses == [401, 401, 429]


# ---- a storm of bad keys: a line per interval, not per request --------------------------


class TestFailedKeyStorm:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, AUTH_FAILURE_LOG_SECONDS=1)

    def test_refusals_are_logged_once_then_counted(self, api, acme, caplog):
        caplog.set_level(logging.WARNING, logger="credits_service.security")
        for _ in range(20):
            assert api.get("/api/clients/acme/quota-status", key="cs_not-a-key").status_code == 401
        lines = [record.getMessage() for record in caplog.records if record.name == "credits_service.security"]
        assert lines == ["authentication failed: unknown key"]
        time.sleep(1.05)  # the interval (1 s here) is over: the next refusal reports the ones held back
        assert api.get("/api/clients/acme/quota-status", key=None).status_code == 401
        lines = [record.getMessage() for record in caplog.records if record.name == "credits_service.security"]
        assert lines[1:] == ["19 more authentication failures in the interval before: 19 unknown",
                             "authentication failed: missing key"]


# ---- stored Idempotency-Key answers are capped per key name --------------------------------


class TestStoredAnswersCap:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, IDEMPOTENCY_MAX_KEYS=3)

    def test_a_new_key_past_the_cap_is_429_and_stores_nothing(self, app, api, acme):
        def consume(key=None):
            headers = {"Idempotency-Key": key} if key else {}
            return api.post("/api/clients/acme/usage", json={"count": 1}, key="service", headers=headers)

        assert [consume(f"job-{n}").status_code for n in range(3)] == [200, 200, 200]
        refused = assert_error(consume("job-3"), 429)
        assert "stored 3 Idempotency-Key answers within 24 hours" in refused["error"]
        replay = consume("job-1")  # an answer already stored is still given
        assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (200, "true")
        assert consume().status_code == 200  # and requests without a key go on
        with app.app_context():
            assert db.session().scalar(text("SELECT COUNT(*) FROM idempotency_keys")) == 3
        assert api.get("/api/clients/acme/quota-status", key="service").get_json()["generationsUsed"] == 4


# ---- database errors never log the statement's values ----------------------------------


def test_a_database_error_logs_no_parameter_values(app, api, acme, caplog):
    with app.app_context():
        dialect = db.engine.dialect.name
        session = db.session()
        if dialect == "postgresql":
            session.execute(text("CREATE FUNCTION grants_boom() RETURNS trigger LANGUAGE plpgsql AS "
                                 "$$ BEGIN RAISE EXCEPTION 'boom'; END $$"))
            session.execute(text("CREATE TRIGGER grants_boom BEFORE INSERT ON credit_grants "
                                 "FOR EACH ROW EXECUTE FUNCTION grants_boom()"))
        else:
            session.execute(text("CREATE TRIGGER grants_boom BEFORE INSERT ON credit_grants "
                                 "BEGIN SELECT RAISE(ABORT, 'boom'); END"))
        session.commit()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    try:
        response = api.post(CREDITS, json={"action": "grant", "amount": 5, "reason": "reason-only-the-db-saw"})
        assert response.status_code == 500
        logged = caplog.text
        assert "boom" in logged  # the error itself was logged
        assert "reason-only-the-db-saw" not in logged
        assert "hide_parameters=True" in logged
    finally:
        with app.app_context():
            session = db.session()
            session.execute(text("DROP TRIGGER grants_boom" + (" ON credit_grants" if dialect == "postgresql" else "")))
            if dialect == "postgresql":
                session.execute(text("DROP FUNCTION grants_boom()"))
            session.commit()
