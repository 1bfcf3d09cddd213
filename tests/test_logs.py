"""Logs: one JSON access line per request, whatever its answer, and never a key in any line."""

import base64
import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from conftest import config_for, make_key

ACCESS_LOGGER = "credits_service.access"
ROLES = ("read", "write", "service")


@pytest.fixture
def boom(app):
    """A route that fails inside the app: the 500 gets its access line too."""

    def boom():
        raise RuntimeError("boom")

    app.add_url_rule("/boom", view_func=boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False


def access_records(caplog):
    return [record for record in caplog.records if record.name == ACCESS_LOGGER]


def test_one_access_record_per_request(api, acme, caplog):
    caplog.set_level(logging.INFO)
    caplog.clear()
    response = api.get("/api/admin/clients/acme/quota", key="read", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 200
    [record] = access_records(caplog)
    assert record.levelno == logging.INFO
    assert (record.requestId, record.principal, record.method, record.route, record.status) == (
        "trace-1", "reader@example.com", "GET", "/api/admin/clients/<client_id:client_id>/quota", 200)
    assert isinstance(record.durationMs, float) and 0 <= record.durationMs < 10_000


# (what the request is, how to make it, status, principal, route)
REFUSALS = [
    ("no key", lambda api: api.get("/api/admin/clients", key=None), 401, None, "/api/admin/clients"),
    ("wrong role", lambda api: api.delete("/api/admin/clients/acme", key="read"), 403, "reader@example.com",
     "/api/admin/clients/<client_id:client_id>"),
    ("unknown client", lambda api: api.get("/api/admin/clients/nobody", key="read"), 404, "reader@example.com",
     "/api/admin/clients/<client_id:client_id>"),
    ("unknown path", lambda api: api.get("/api/admin/nothing-here/at-all"), 404, None, None),
    ("wrong method", lambda api: api.request("PATCH", "/api/admin/clients/acme"), 405, None, None),
    ("over the limit", lambda api: api.post("/api/clients/acme/usage", key="service", json={"count": 101}), 402,
     "platform", "/api/clients/<client_id:client_id>/usage"),
    ("body too large", lambda api: api.post("/api/admin/clients", data="x" * 70_000,
                                            content_type="application/json"), 413, "alice@example.com",
     "/api/admin/clients"),
    ("not JSON", lambda api: api.post("/api/admin/clients", data="id=x", content_type="text/plain"), 415,
     "alice@example.com", "/api/admin/clients"),
    ("failure", lambda api: api.get("/boom"), 500, None, "/boom"),
]


@pytest.mark.parametrize(("what", "send", "status", "principal", "route"), REFUSALS,
                         ids=[refusal[0] for refusal in REFUSALS])
def test_refusals_get_their_access_record(boom, api, acme, caplog, what, send, status, principal, route):
    caplog.set_level(logging.INFO)
    caplog.clear()
    response = send(api)
    assert response.status_code == status
    [record] = access_records(caplog)
    assert (record.requestId, record.principal, record.route, record.status) == (
        response.headers["X-Request-ID"], principal, route, status)


class TestRateLimited:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, RATE_LIMIT_READ="1/minute")

    def test_429_gets_its_access_record(self, api, keys, caplog):
        caplog.set_level(logging.INFO)
        assert api.get("/api/admin/clients", key="read").status_code == 200
        caplog.clear()
        assert api.get("/api/admin/clients", key="read").status_code == 429
        [record] = access_records(caplog)
        assert (record.principal, record.route, record.status) == ("reader@example.com", "/api/admin/clients", 429)


# ---- the JSON lines themselves ---------------------------------------------------------

# Loggers that stay quiet below WARNING unless asked (SQLAlchemy's, or what alembic.ini set):
# the key test hears everything every one of them says.
LIBRARY_LOGGERS = ("sqlalchemy", "werkzeug", "flask-limiter", "limits", "flask_httpauth", "alembic")

PATH_VALUES = {"client_id": "acme", "hold_id": "1", "endpoint_id": "1", "delivery_id": "1", "path": "index.html",
               "filename": "missing.css"}
# A body each route accepts, so that every route also runs to its end; other methods send {}.
BODIES = {
    ("POST", "/api/admin/clients"): {"id": "beta", "name": "Beta"},
    ("PUT", "/api/admin/clients/<client_id:client_id>/quota"): {"plan": "pro", "reason": "signed"},
    ("POST", "/api/admin/clients/<client_id:client_id>/credits"): {"action": "grant", "amount": 5},
    ("POST", "/api/clients/<client_id:client_id>/usage"): {"count": 1},
}
SCHEMES = {"bearer", "basic", "token"}


def presented_credentials(app, runner, clock) -> list[str | None]:
    """Authorization header values: valid keys of each role, revoked, expired, unknown and malformed ones."""
    valid = {role: make_key(app, f"{role}-holder@example.com", role) for role in ROLES}
    revoked = make_key(app, "departed@example.com", "write")
    assert runner.invoke(args=["keys", "revoke", "departed@example.com"]).exit_code == 0
    expired = make_key(app, "temporary@example.com", "write", expires_in_days=1)
    clock.advance(days=2)
    return [
        *(f"Bearer {valid[role]}" for role in ROLES),
        f"Bearer {revoked}",
        f"Bearer {expired}",
        "Bearer cs_" + "Q" * 43,
        f"bearer {valid['write']}",
        f"Bearer {valid['write']} trailing-junk",
        f"Bearer  {valid['read']}  ",
        f"Token {valid['write']}",
        valid["service"],
        "Basic " + base64.b64encode(f"admin:{valid['write']}".encode()).decode(),
        "Bearer cs_short",
        "Bearer",
        "",
        None,
    ]


def requests_for_every_route(app, client_id="acme"):
    """(method, path, body) for every rule of the app and every method it has, plus one it lacks (405)."""
    values = {**PATH_VALUES, "client_id": client_id}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda match: values[match.group(1)], rule.rule)
        for method in sorted(rule.methods | {"PATCH"}):
            yield method, path, BODIES.get((method, rule.rule), {})


class TestJsonLines:
    @pytest.fixture
    def app_config(self, database_url, clock):
        """Logs as production writes them (JSON), everything down to DEBUG, and rate limits on."""
        loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
        loggers += [logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
        saved = [(logger, logger.level, logger.disabled) for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
        yield config_for(database_url, CLOCK=clock, LOG_JSON=True, LOG_LEVEL="DEBUG", RATELIMIT_ENABLED=True)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "credits_json", False)]:
            root.removeHandler(handler)

    @pytest.fixture
    def log_lines(self, app):
        """Every line the app's JSON log handler writes during the test."""
        [handler] = [h for h in logging.getLogger().handlers if getattr(h, "credits_json", False)]
        stream = io.StringIO()
        handler.setStream(stream)
        return lambda: stream.getvalue().splitlines()

    def test_access_line_is_json_with_every_field(self, api, acme, log_lines):
        response = api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5})
        assert response.status_code == 200
        [line] = [json.loads(line) for line in log_lines() if f'"{ACCESS_LOGGER}"' in line]
        assert set(line) == {"time", "level", "name", "message", "requestId", "principal", "method", "route",
                             "status", "durationMs"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert abs(datetime.fromisoformat(line["time"]) - datetime.now(UTC)) < timedelta(minutes=1)
        assert line["level"] == "INFO"
        assert line["requestId"] == response.headers["X-Request-ID"]
        assert (line["principal"], line["method"], line["route"], line["status"]) == (
            "alice@example.com", "POST", "/api/admin/clients/<client_id:client_id>/credits", 200)
        assert line["message"] == "POST /api/admin/clients/<client_id:client_id>/credits 200"
        assert isinstance(line["durationMs"], float)

    def test_no_key_or_authorization_value_reaches_any_log_line(self, app, api, acme, runner, clock, log_lines):
        credentials = presented_credentials(app, runner, clock)
        # Every header value that carries more than a scheme, each of its parts but the scheme, every key made.
        carrying = [header for header in credentials if header and header.strip().lower() not in SCHEMES]
        parts = {part for header in carrying for part in header.split() if part.lower() not in SCHEMES}
        secrets = {*carrying, *parts, *api.keys.values()}
        statuses = []
        for round_number, header in enumerate(credentials):
            client_id = f"acme-{round_number}"  # a DELETE may go through; a deleted id stays retired
            api.create_client(client_id)
            for method, path, body in requests_for_every_route(app, client_id):
                sent = {"X-Request-ID": f"probe-{len(statuses)}", "Idempotency-Key": f"retry-{len(statuses)}"}
                if header is not None:
                    sent["Authorization"] = header
                statuses.append(api.request(method, path, key=None, json=body, headers=sent).status_code)

        lines = log_lines()
        assert [(secret, line) for line in lines for secret in secrets if secret in line] == []
        # Everything was heard: the access lines, the security events, the SQL, the rate limiter.
        access_lines = [json.loads(line) for line in lines if f'"{ACCESS_LOGGER}"' in line]
        assert [(line["requestId"], line["status"]) for line in access_lines if line["requestId"].startswith("probe-")] \
            == [(f"probe-{n}", status) for n, status in enumerate(statuses)]
        assert any('"event": "auth_failed"' in line for line in lines)
        assert any('"event": "forbidden"' in line for line in lines)
        assert any('"sqlalchemy.engine' in line for line in lines)
        assert any('"flask-limiter"' in line for line in lines)
        assert {200, 201, 204, 401, 403, 404, 405, 429} <= set(statuses)
