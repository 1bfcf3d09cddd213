"""Bearer keys, roles, the keys CLI, key storage and per-principal rate limits."""

import hashlib
import itertools
import logging
import re

import pytest
from sqlalchemy import text

from conftest import assert_error, config_for, make_key
from credits_service.extensions import db
from helpers import assert_cli_refusal, grant, succeeded

SECURITY_LOGGER = "credits_service.security"

# Every operation of the OpenAPI document that needs a key, as a request on client acme that a key
# of its role may make: (method, OpenAPI path) -> (path, body, the role a valid key needs).
# test_the_matrix_holds_every_operation_of_the_openapi_document fails when one is missing.
OPERATIONS = {
    ("post", "/api/admin/clients"): ("/api/admin/clients", {"id": "other", "name": "Other"}, "write"),
    ("get", "/api/admin/clients"): ("/api/admin/clients", None, "read"),
    ("get", "/api/admin/clients/{client_id}"): ("/api/admin/clients/acme", None, "read"),
    ("delete", "/api/admin/clients/{client_id}"): ("/api/admin/clients/acme", None, "write"),
    ("get", "/api/admin/clients/{client_id}/quota"): ("/api/admin/clients/acme/quota", None, "read"),
    ("put", "/api/admin/clients/{client_id}/quota"): ("/api/admin/clients/acme/quota", {"plan": "pro"}, "write"),
    ("post", "/api/admin/clients/{client_id}/credits"): (
        "/api/admin/clients/acme/credits", {"action": "grant", "amount": 5}, "write"),
    ("get", "/api/admin/clients/{client_id}/audit-log"): ("/api/admin/clients/acme/audit-log", None, "read"),
    ("get", "/api/admin/clients/{client_id}/grants"): ("/api/admin/clients/acme/grants", None, "read"),
    ("get", "/api/admin/clients/{client_id}/usage"): ("/api/admin/clients/acme/usage", None, "read"),
    ("get", "/api/admin/audit-log"): ("/api/admin/audit-log", None, "read"),
    ("get", "/api/admin/audit-log/export"): ("/api/admin/audit-log/export", None, "read"),
    ("post", "/api/clients/{client_id}/usage"): ("/api/clients/acme/usage", {"count": 1}, "service"),
    ("get", "/api/clients/{client_id}/quota-status"): ("/api/clients/acme/quota-status", None, "read"),
    ("post", "/api/clients/{client_id}/holds"): ("/api/clients/acme/holds", {"count": 1}, "service"),
    ("get", "/api/clients/{client_id}/holds"): ("/api/clients/acme/holds", None, "read"),
    ("get", "/api/clients/{client_id}/holds/{hold_id}"): ("/api/clients/acme/holds/1", None, "read"),
    ("post", "/api/clients/{client_id}/holds/{hold_id}/capture"): ("/api/clients/acme/holds/1/capture", {}, "service"),
    ("post", "/api/clients/{client_id}/holds/{hold_id}/release"): ("/api/clients/acme/holds/1/release", {}, "service"),
    ("post", "/api/clients/{client_id}/usage/refunds"): ("/api/clients/acme/usage/refunds", {"count": 1}, "service"),
    ("get", "/api/admin/clients/{client_id}/refunds"): ("/api/admin/clients/acme/refunds", None, "read"),
    ("post", "/api/clients/{client_id}/storage"): ("/api/clients/acme/storage", {"deltaBytes": 1000}, "service"),
    ("put", "/api/admin/clients/{client_id}/storage"): (
        "/api/admin/clients/acme/storage", {"usedBytes": 5, "reason": "inventory"}, "write"),
    ("post", "/api/admin/webhooks"): (
        "/api/admin/webhooks", {"url": "http://127.0.0.1:9/hooks", "events": ["*"]}, "write"),
    ("get", "/api/admin/webhooks"): ("/api/admin/webhooks", None, "read"),
    ("get", "/api/admin/webhooks/{endpoint_id}"): ("/api/admin/webhooks/1", None, "read"),
    ("patch", "/api/admin/webhooks/{endpoint_id}"): ("/api/admin/webhooks/1", {"description": "d"}, "write"),
    ("delete", "/api/admin/webhooks/{endpoint_id}"): ("/api/admin/webhooks/1", None, "write"),
    ("post", "/api/admin/webhooks/{endpoint_id}/rotate-secret"): ("/api/admin/webhooks/1/rotate-secret", None, "write"),
    ("post", "/api/admin/webhooks/{endpoint_id}/ping"): ("/api/admin/webhooks/1/ping", None, "write"),
    ("get", "/api/admin/webhooks/{endpoint_id}/deliveries"): ("/api/admin/webhooks/1/deliveries", None, "read"),
    ("post", "/api/admin/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"): (
        "/api/admin/webhooks/1/deliveries/1/retry", None, "write"),
}
# The operations anyone may call: probes and metrics, without a key.
UNGUARDED = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}

# (method, path, body, the role a valid key needs)
ROUTES = [(method.upper(), path, body, role) for (method, _), (path, body, role) in OPERATIONS.items()]
ROUTE_IDS = [f"{method} {path}" for method, path, _, _ in ROUTES]
ADMIN_ROUTES = [route for route in ROUTES if route[1].startswith("/api/admin/")]
ADMIN_WRITE_ROUTES = [route for route in ADMIN_ROUTES if route[3] == "write"]
ADMIN_READ_ROUTES = [route for route in ADMIN_ROUTES if route[3] == "read"]
SUCCESS = {"POST /api/admin/clients": 201, "DELETE /api/admin/clients/acme": 204, "POST /api/clients/acme/holds": 201,
           "POST /api/admin/webhooks": 201, "DELETE /api/admin/webhooks/1": 204,
           "POST /api/admin/webhooks/1/ping": 202, "POST /api/admin/webhooks/1/deliveries/1/retry": 202}
# What every refusal must leave as it was, read with the write key.
STATE = ["/api/admin/clients", "/api/admin/clients/acme/quota", "/api/admin/clients/acme/audit-log",
         "/api/admin/clients/acme/grants", "/api/admin/clients/acme/usage", "/api/admin/audit-log",
         "/api/clients/acme/quota-status"]


@pytest.fixture
def acme(api, app):
    """The client the matrix works on, with a generation consumed (for the refund) and hold 1 open,
    and webhook endpoint 1 with delivery 1 failed (for the retry)."""
    client = api.create_client("acme", "Acme Corp")
    succeeded(api.post("/api/clients/acme/usage", json={"count": 1}, key="service"))
    assert succeeded(api.post("/api/clients/acme/holds", json={"count": 1}, key="service"), 201)["holdId"] == 1
    assert succeeded(api.post("/api/admin/webhooks", json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]}),
                     201)["id"] == 1
    assert succeeded(api.post("/api/admin/webhooks/1/ping"), 202)["id"] == 1
    with app.app_context():
        db.session().execute(text("UPDATE webhook_deliveries SET status = 'failed' WHERE id = 1"))
        db.session().commit()
    return client


def call(api, route, key, headers=None):
    """The route's request; a POST with an Idempotency-Key of its own (a refund needs one)."""
    method, path, body, _ = route
    kwargs = {"json": body} if body is not None else {}
    if method == "POST":
        headers = {**(headers or {}), "Idempotency-Key": f"matrix-{next(_keys)}"}
    return api.request(method, path, key=key, headers=headers, **kwargs)


_keys = itertools.count()


def state(api):
    """Everything a refused request could have touched: clients, quota, usage, ledger, audit log."""
    return {path: succeeded(api.get(path, key="write")) for path in STATE}


def cli(runner, *args):
    return runner.invoke(args=["keys", *args])


def key_ids(app, name):
    with app.app_context():
        rows = db.session().execute(text("SELECT id FROM api_keys WHERE name = :name ORDER BY id"), {"name": name})
        return [row[0] for row in rows]


def listed(runner):
    """`flask keys list` as {name: {column: cell}}, the cells cut where the header's columns start."""
    result = cli(runner, "list")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    columns = header.split()
    starts = [header.index(column) for column in columns]
    rows = [{column: line[start:end].strip() for column, start, end in zip(columns, starts, starts[1:] + [None])}
            for line in lines]
    return {row["NAME"]: row for row in rows}


def test_the_matrix_holds_every_operation_of_the_openapi_document(client):
    """A route added to the API is refused to bad keys and wrong roles only once it is in OPERATIONS."""
    spec = succeeded(client.get("/openapi.json"))
    documented = {(method, path): operation for path, item in spec["paths"].items()
                  for method, operation in item.items() if method != "parameters"}
    assert set(documented) - UNGUARDED == set(OPERATIONS)
    for operation, (_, _, role) in OPERATIONS.items():
        assert role in documented[operation]["x-required-roles"], operation
    for operation in UNGUARDED:
        assert "security" not in documented[operation]


# ---- 401 ---------------------------------------------------------------------


ROLES = ("read", "write", "service")


def _missing(app, runner, clock):
    return dict.fromkeys(ROLES), {}


def _unknown(app, runner, clock):
    return dict.fromkeys(ROLES, "cs_" + "A" * 43), {}


def _malformed(app, runner, clock):
    return dict.fromkeys(ROLES), {"Authorization": "Basic dXNlcjpzZWNyZXQtcGFzc3dvcmQ="}


def _expired(app, runner, clock):
    keys = {role: make_key(app, f"temporary-{role}@example.com", role, expires_in_days=1) for role in ROLES}
    clock.advance(days=2)
    return keys, {}


def _revoked(app, runner, clock):
    keys = {role: make_key(app, "departed@example.com", role) for role in ROLES}
    assert cli(runner, "revoke", "departed@example.com").exit_code == 0
    return keys, {}


BAD_KEYS = {"missing": _missing, "unknown": _unknown, "malformed": _malformed,
            "expired": _expired, "revoked": _revoked}


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_bad_key_is_401_with_bearer_challenge_on_every_route(api, app, runner, clock, acme, kind):
    keys, headers = BAD_KEYS[kind](app, runner, clock)
    before = state(api)  # after the clock moved for the expired keys: holds may have lapsed with it
    wrong = {}
    for route in ROUTES:
        response = call(api, route, keys[route[3]], headers)
        body = response.get_json(silent=True)
        challenge = response.headers.get("WWW-Authenticate", "")
        if not (response.status_code == 401 and challenge.startswith("Bearer")
                and isinstance(body, dict) and set(body) <= {"error", "fields"} and body.get("error")):
            wrong[f"{route[0]} {route[1]}"] = (response.status_code, challenge, body)
    assert wrong == {}
    assert state(api) == before


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_each_route_answers_a_key_of_its_role(api, acme, route):
    response = call(api, route, route[3])
    method, path, _, _ = route
    assert response.status_code == SUCCESS.get(f"{method} {path}", 200), response.get_json()


def test_expiring_key_works_until_it_expires(api, app, clock, acme):
    key = make_key(app, "temporary@example.com", "read", expires_in_days=1)
    clock.advance(days=1, microseconds=-1)
    assert api.get("/api/admin/clients/acme", key=key).status_code == 200
    clock.advance(microseconds=1)
    assert_error(api.get("/api/admin/clients/acme", key=key), 401)


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_failed_authentication_is_a_security_event_without_the_key(api, app, runner, clock, acme, caplog, kind):
    caplog.set_level(logging.INFO)
    keys, headers = BAD_KEYS[kind](app, runner, clock)
    key = keys["write"]
    caplog.clear()
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5},
                        key=key, headers=headers)
    assert response.status_code == 401
    events = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert len(events) == 1
    assert events[0].levelno >= logging.WARNING
    presented = key or headers.get("Authorization", "").partition(" ")[2]
    if presented:
        assert presented not in caplog.text
        assert all(presented not in str(vars(record)) for record in caplog.records)


def test_forbidden_attempt_is_a_security_event_without_the_key(api, keys, acme, caplog):
    caplog.set_level(logging.INFO)
    response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5}, key="read")
    assert response.status_code == 403
    events = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert len(events) == 1
    assert events[0].levelno >= logging.WARNING
    assert keys["read"] not in caplog.text
    assert all(keys["read"] not in str(vars(record)) for record in caplog.records)


# ---- roles -------------------------------------------------------------------


@pytest.mark.parametrize("route", ADMIN_WRITE_ROUTES, ids=lambda route: f"{route[0]} {route[1]}")
def test_read_key_on_write_route_is_403_and_changes_nothing(api, acme, route):
    before = state(api)
    assert_error(call(api, route, "read"), 403)
    assert state(api) == before


@pytest.mark.parametrize("route", ADMIN_READ_ROUTES, ids=lambda route: f"{route[0]} {route[1]}")
def test_write_key_may_read(api, acme, route):
    assert call(api, route, "write").status_code == 200


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=lambda route: f"{route[0]} {route[1]}")
def test_service_key_on_admin_route_is_403(api, acme, route):
    before = state(api)
    assert_error(call(api, route, "service"), 403)
    assert state(api) == before


@pytest.mark.parametrize("role", ["read", "write"])
def test_admin_keys_may_not_consume_usage(api, acme, role):
    before = state(api)
    assert_error(api.post("/api/clients/acme/usage", json={"count": 1}, key=role), 403)
    assert state(api) == before
    assert api.get("/api/clients/acme/quota-status", key="service").get_json()["generationsUsed"] == 1  # acme's own


@pytest.mark.parametrize("role", ["service", "read", "write"])
def test_every_role_may_read_quota_status(api, acme, role):
    response = api.get("/api/clients/acme/quota-status", key=role)
    assert response.status_code == 200
    assert response.get_json()["generationsLimit"] == 100


# ---- adminId is the key's name -------------------------------------------------


def test_audit_admin_id_is_the_key_name(api, acme):
    assert api.put("/api/admin/clients/acme/quota", json={"plan": "pro"}).status_code == 200
    entry = api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"][0]
    assert entry["adminId"] == "alice@example.com"


def test_admin_id_is_stable_across_key_rotation(api, app, runner, keys, acme):
    old_key = keys["write"]
    assert grant(api, 1, key=old_key).status_code == 200
    assert cli(runner, "revoke", "alice@example.com").exit_code == 0
    new_key = make_key(app, "alice@example.com", "write")
    assert_error(grant(api, 2, key=old_key), 401)
    assert grant(api, 3, key=new_key).status_code == 200
    items = api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"]
    assert [(entry["details"]["amount"], entry["adminId"]) for entry in items] == [
        (3, "alice@example.com"),
        (1, "alice@example.com"),
    ]


# ---- the keys CLI --------------------------------------------------------------


KEY_SHAPE = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9_-]{43,}")


def test_create_prints_the_key_alone(api, runner, acme):
    result = cli(runner, "create", "ops@example.com", "--role", "write")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
    key = result.stdout.strip()
    assert result.stdout == key + "\n"
    assert KEY_SHAPE.fullmatch(key), key
    assert api.get("/api/admin/clients/acme", key=key).status_code == 200
    assert grant(api, 1, key=key).status_code == 200


def test_two_creates_give_different_keys(runner):
    first = cli(runner, "create", "ops@example.com", "--role", "read").stdout.strip()
    second = cli(runner, "create", "ops@example.com", "--role", "read").stdout.strip()
    assert KEY_SHAPE.fullmatch(first) and KEY_SHAPE.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(("options", "refusal"), [
    (["--role", "bogus"], "Invalid value for '--role'"),
    (["--role", "write", "--expires-in-days", "0"], "Invalid value for '--expires-in-days'"),
], ids=["bogus-role", "zero-days"])
def test_create_refuses_bad_options(app, runner, options, refusal):
    assert_cli_refusal(cli(runner, "create", "ops@example.com", *options), 2, refusal)
    assert key_ids(app, "ops@example.com") == []


def test_list_shows_id_name_role_never_the_key(app, runner):
    key = cli(runner, "create", "ops@example.com", "--role", "service").stdout.strip()
    [key_id] = key_ids(app, "ops@example.com")
    result = cli(runner, "list")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"]
    [line] = [line for line in result.output.splitlines() if "ops@example.com" in line]
    cells = line.split()
    assert cells[:3] == [str(key_id), "ops@example.com", "service"]
    assert key not in result.output
    assert key.split("_", 1)[1] not in result.output


def test_list_marks_expired_keys_and_shows_when_a_key_was_revoked(app, runner, clock):
    make_key(app, "soon@example.com", "read", expires_in_days=1)
    make_key(app, "gone@example.com", "write")
    make_key(app, "kept@example.com", "write")
    clock.advance(hours=1)
    assert cli(runner, "revoke", "gone@example.com").exit_code == 0
    keys = listed(runner)
    assert {name: (row["CREATED"], row["EXPIRES"], row["REVOKED"]) for name, row in keys.items()} == {
        "soon@example.com": ("2026-11-15T12:00:00.000Z", "2026-11-16T12:00:00.000Z", "-"),
        "gone@example.com": ("2026-11-15T12:00:00.000Z", "-", "2026-11-15T13:00:00.000Z"),
        "kept@example.com": ("2026-11-15T12:00:00.000Z", "-", "-"),
    }
    clock.advance(days=1)
    keys = listed(runner)
    assert keys["soon@example.com"]["EXPIRES"] == "2026-11-16T12:00:00.000Z (expired)"
    assert [row["EXPIRES"] for name, row in keys.items() if name != "soon@example.com"] == ["-", "-"]


def test_revoke_by_name_revokes_every_key_of_that_name(api, app, runner, acme):
    first = make_key(app, "bob@example.com", "read")
    second = make_key(app, "bob@example.com", "write")
    for key in (first, second):
        assert api.get("/api/admin/clients/acme", key=key).status_code == 200
    result = cli(runner, "revoke", "bob@example.com")
    assert (result.exit_code, result.stdout) == (0, "Revoked 2 key(s) matching 'bob@example.com'.\n")
    for key in (first, second):
        assert_error(api.get("/api/admin/clients/acme", key=key), 401)
    assert api.get("/api/admin/clients/acme", key="read").status_code == 200


def test_revoke_by_id_revokes_only_that_key(api, app, runner, acme):
    first = make_key(app, "carol@example.com", "read")
    second = make_key(app, "carol@example.com", "read")
    first_id, _ = key_ids(app, "carol@example.com")
    assert cli(runner, "revoke", str(first_id)).exit_code == 0
    assert_error(api.get("/api/admin/clients/acme", key=first), 401)
    assert api.get("/api/admin/clients/acme", key=second).status_code == 200


def test_revoke_unknown_name_fails_and_revokes_nothing(api, runner, acme):
    result = cli(runner, "revoke", "nobody@example.com")
    assert_cli_refusal(result, 1, "No API key has the id or name 'nobody@example.com'.")
    assert result.stdout == ""
    for role in ("read", "write", "service"):
        assert api.get("/api/clients/acme/quota-status", key=role).status_code == 200


def test_bootstrap_on_an_empty_database_prints_a_write_key_to_export(client, runner):
    result = cli(runner, "bootstrap")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert line.startswith("export CREDITS_KEY=cs_"), line
    key = line.removeprefix("export CREDITS_KEY=")
    assert KEY_SHAPE.fullmatch(key), key
    admin = {"Authorization": f"Bearer {key}"}
    assert client.post("/api/admin/clients", json={"id": "acme", "name": "Acme"}, headers=admin).status_code == 201
    assert client.put("/api/admin/clients/acme/quota", json={"plan": "pro"}, headers=admin).status_code == 200
    [entry] = succeeded(client.get("/api/admin/clients/acme/audit-log", headers=admin))["items"]
    assert entry["adminId"] == "admin"
    assert {name: row["ROLE"] for name, row in listed(runner).items()} == {"admin": "write"}


def test_bootstrap_with_keys_in_the_database_makes_none_and_says_so(runner, keys):
    before = listed(runner)
    result = cli(runner, "bootstrap")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "API keys already exist, so none was created" in result.stderr
    assert "keys create NAME --role write" in result.stderr
    assert listed(runner) == before


# ---- storage -------------------------------------------------------------------


def test_database_stores_only_the_hash(app, runner):
    key = cli(runner, "create", "ops@example.com", "--role", "write").stdout.strip()
    secret = key.split("_", 1)[1]
    with app.app_context():
        result = db.session().execute(text("SELECT * FROM api_keys WHERE name = 'ops@example.com'"))
        columns = list(result.keys())
        [row] = result.all()
    stored = dict(zip(columns, row))
    for column, value in stored.items():
        assert secret not in str(value), column
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()


# ---- rate limits -----------------------------------------------------------------


GRANT = {"action": "grant", "amount": 1}


class TestRateLimits:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True,
                          RATE_LIMIT_WRITE="3/minute", RATE_LIMIT_READ="5/minute")

    @pytest.fixture
    def acme(self, api, app):
        # Created by another principal, so alice's write budget is whole.
        setup = make_key(app, "setup@example.com", "write")
        response = api.post("/api/admin/clients", json={"id": "acme", "name": "Acme Corp"}, key=setup)
        assert response.status_code == 201

    def limit(self, api):
        quota = api.get("/api/admin/clients/acme/quota", key="read").get_json()["quota"]
        return quota["monthlyGenerationLimit"]

    def test_fourth_write_in_a_minute_is_429(self, api, acme):
        for _ in range(3):
            response = api.post("/api/admin/clients/acme/credits", json=GRANT)
            assert response.status_code == 200
            assert "Retry-After" not in response.headers
            assert response.headers["X-RateLimit-Limit"] == "3"
        refused = api.post("/api/admin/clients/acme/credits", json=GRANT)
        assert_error(refused, 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert self.limit(api) == 103

    def test_write_limit_is_per_principal(self, api, app, acme):
        for _ in range(3):
            assert api.post("/api/admin/clients/acme/credits", json=GRANT).status_code == 200
        assert api.post("/api/admin/clients/acme/credits", json=GRANT).status_code == 429
        bob = make_key(app, "bob@example.com", "write")
        response = api.post("/api/admin/clients/acme/credits", json=GRANT, key=bob)
        assert response.status_code == 200
        assert "Retry-After" not in response.headers
        assert self.limit(api) == 104

    def test_one_write_budget_across_every_write_route(self, api, acme):
        assert api.post("/api/admin/clients/acme/credits", json=GRANT).status_code == 200
        assert api.put("/api/admin/clients/acme/quota", json={"storageQuotaMb": 7}).status_code == 200
        assert api.post("/api/admin/clients", json={"id": "beta", "name": "Beta"}).status_code == 201
        assert_error(api.delete("/api/admin/clients/beta"), 429)
        assert api.get("/api/admin/clients/beta", key="read").status_code == 200

    def test_reads_have_their_own_limit(self, api, acme):
        for _ in range(3):
            assert api.post("/api/admin/clients/acme/credits", json=GRANT).status_code == 200
        assert api.post("/api/admin/clients/acme/credits", json=GRANT).status_code == 429
        for _ in range(5):
            response = api.get("/api/admin/clients/acme/quota", key="write")
            assert response.status_code == 200
            assert "Retry-After" not in response.headers
        refused = api.get("/api/admin/clients/acme/quota", key="write")
        assert_error(refused, 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


class TestRateLimitsOff:
    """RATELIMIT_ENABLED=false, Flask-Limiter's own switch, lifts every limit however low it is set."""

    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=False, RATE_LIMIT_WRITE="1/minute",
                          RATE_LIMIT_READ="1/minute", RATE_LIMIT_SERVICE="1/minute")

    def test_no_request_is_limited(self, api, acme):
        for _ in range(3):
            for response in (grant(api, 1), api.get("/api/admin/clients/acme/quota", key="read"),
                             api.post("/api/clients/acme/usage", json={"count": 1}, key="service"),
                             api.get("/api/clients/acme/quota-status", key="service")):
                assert response.status_code == 200, response.get_json()
                assert not {"Retry-After", "X-RateLimit-Limit"} & set(response.headers.keys())
        assert succeeded(api.get("/api/clients/acme/quota-status", key="read"))["generationsUsed"] == 1 + 3  # acme's own, then these


class TestRateLimitStorageDown:
    """Rate limits protect the service; when their storage is down, requests still go through."""

    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True,
                          RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATE_LIMIT_WRITE="1/minute")

    def test_requests_are_served_when_the_limit_storage_is_unreachable(self, api):
        assert api.post("/api/admin/clients", json={"id": "a", "name": "A"}).status_code == 201
        assert api.post("/api/admin/clients", json={"id": "b", "name": "B"}).status_code == 201
        assert api.get("/api/admin/clients", key="read").get_json()["items"][1]["id"] == "b"
