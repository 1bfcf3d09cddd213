"""/healthz, /readyz and /metrics: no key, no rate limit, nothing about clients or keys."""

import os
import time
from contextlib import contextmanager

import pytest

from conftest import assert_error, config_for, dispose_engines, make_key
from helpers import scrape, value
from credits_service import create_app
from helpers import consume, consumed, grant, granted, set_limit
from integration.servers import free_port

SECRET_CLIENT = "acme-7f3a9c-private"
USAGE_TEMPLATE = "/api/clients/<client_id:client_id>/usage"


def unreachable_postgresql() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/credits"


@contextmanager
def own_client(database_url: str, **settings):
    """A test client of an app of its own, whose connections are closed after."""
    app = create_app(config_for(database_url, **settings))
    try:
        yield app.test_client()
    finally:
        dispose_engines(app)


def test_healthz_is_ok_without_a_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ok_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert "rateLimitStorage" not in body["checks"]  # limits off, or kept in memory


def test_an_unreachable_database_is_503_on_readyz_while_healthz_stays_200():
    with own_client(unreachable_postgresql()) as client:
        assert_unreachable_database(client)


def assert_unreachable_database(client):
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2
    body = response.get_json()
    assert response.status_code == 503
    assert isinstance(body["error"], str) and body["error"]
    assert body["checks"]["database"]["status"] == "unavailable"
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert "127.0.0.1" not in response.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    # An API request answers 503 in the one error shape, not 500.
    assert_error(client.get("/api/admin/clients", headers={"Authorization": "Bearer cs_x"}), 503)


class TestRedisRateLimits:
    def readiness(self, database_url, storage, swallow=True):
        with own_client(database_url, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=storage,
                             RATELIMIT_SWALLOW_ERRORS=swallow) as client:
            return client.get("/readyz")

    def test_a_redis_outage_is_reported_but_not_fatal(self, database_url):
        response = self.readiness(database_url, f"redis://127.0.0.1:{free_port()}/0")
        assert response.status_code == 200
        check = response.get_json()["checks"]["rateLimitStorage"]
        assert check["status"] == "unavailable"
        assert check["fatal"] is False
        assert "without rate limits" in check["detail"]

    def test_a_redis_outage_is_fatal_when_limit_errors_are_not_swallowed(self, database_url):
        response = self.readiness(database_url, f"redis://127.0.0.1:{free_port()}/0", swallow=False)
        assert response.status_code == 503
        assert response.get_json()["checks"]["rateLimitStorage"]["fatal"] is True
        assert response.get_json()["checks"]["database"]["status"] == "ok"

    def test_a_reachable_redis_is_ok(self, database_url):
        redis_url = os.environ.get("TEST_REDIS_URL")
        if not redis_url:
            pytest.skip("TEST_REDIS_URL is not set")
        response = self.readiness(database_url, redis_url)
        assert response.status_code == 200
        assert response.get_json()["checks"]["rateLimitStorage"]["status"] == "ok"


class TestNotRateLimited:
    @pytest.fixture
    def app_config(self, database_url, clock):
        # A default limit applies to every route that is not exempt.
        return config_for(database_url, CLOCK=clock, RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute")

    def test_the_three_endpoints_are_exempt(self, client):
        assert [client.get("/openapi.json").status_code for _ in range(3)] == [200, 200, 429]
        for path in ("/healthz", "/readyz", "/metrics"):
            assert {client.get(path).status_code for _ in range(5)} == {200}


def test_metrics_label_by_route_template_and_leak_no_client_or_key(api):
    api.create_client(SECRET_CLIENT, "Secret Co")
    consumed(api, 1, SECRET_CLIENT)
    bad_key = "cs_" + "x" * 43
    assert_error(api.get(f"/api/admin/clients/{SECRET_CLIENT}", key=bad_key), 401)
    assert_error(api.get(f"/no/such/{SECRET_CLIENT}"), 404)
    assert_error(api.request("BREW", f"/api/clients/{SECRET_CLIENT}/usage"), 405)

    text = api.client.get("/metrics").get_data(as_text=True)
    for secret in (SECRET_CLIENT, bad_key, *api.keys.values(), "alice@example.com", "platform"):
        assert secret not in text
    samples = scrape(api.client)
    assert value(samples, "credits_http_requests_total", method="POST", route=USAGE_TEMPLATE, status="200") >= 1
    assert value(samples, "credits_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert value(samples, "credits_http_requests_total", method="other", route="unmatched", status="405") >= 1
    assert value(samples, "credits_http_request_duration_seconds_count",
                 method="POST", route=USAGE_TEMPLATE, status="200") >= 1


def test_domain_counters_count_committed_changes_only(api, app, clock):
    api.create_client()
    tiny = api.create_client("tiny", "Tiny")
    set_limit(api, 1, tiny["id"])
    api.create_client("boundless", "Boundless", plan="enterprise")
    revoked = make_key(app, "gone@example.com", "read")
    expiring = make_key(app, "soon@example.com", "read", expires_in_days=1)
    assert app.test_cli_runner().invoke(args=["keys", "revoke", "gone@example.com"]).exit_code == 0
    before = scrape(api.client)

    granted(api, 5)
    granted(api, 7, headers={"Idempotency-Key": "g-1"})
    assert grant(api, 7, headers={"Idempotency-Key": "g-1"}).headers["Idempotent-Replayed"] == "true"
    assert_error(grant(api, 9, client_id="boundless"), 409)  # refused and rolled back: not counted
    consumed(api, 3)
    assert consume(api, 2, "tiny").status_code == 402
    consumed(api, 1, "tiny")
    assert consume(api, 1, "tiny").status_code == 402
    for key in (None, "cs_unknown", revoked):
        assert_error(api.get("/api/admin/clients", key=key), 401)
    clock.advance(days=1)
    assert_error(api.get("/api/admin/clients", key=expiring), 401)
    after = scrape(api.client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("credits_granted_generations_total") == 12
    assert delta("credits_generations_consumed_total") == 4
    assert delta("credits_quota_refusals_total") == 2
    assert delta("credits_idempotent_replays_total") == 1
    for reason in ("missing", "unknown", "revoked", "expired"):
        assert delta("credits_authentication_failures_total", reason=reason) == 1


def test_the_three_endpoints_are_documented_without_security(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/healthz", "/readyz", "/metrics"):
        operation = spec["paths"][path]["get"]
        assert "security" not in operation
        assert "200" in operation["responses"]
    ready = spec["paths"]["/readyz"]["get"]["responses"]
    assert ready["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Readiness"}
    assert ready["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NotReady"}
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
