"""/metrics from a real multi-worker gunicorn: every worker's counts, summed exactly."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import config_for, dispose_engines, issue_keys
from credits_service import create_app
from credits_service import services

from .servers import Instance

pytestmark = pytest.mark.integration

USAGE = "/api/clients/<client_id:client_id>/usage"
CREDITS = "/api/admin/clients/<client_id:client_id>/credits"


def revoke(database_url, name):
    app = create_app(config_for(database_url))
    with app.app_context():
        services.api_keys().revoke(name)
    dispose_engines(app)


def scrape(url) -> Counter:
    response = requests.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    samples = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return samples


def test_counts_add_up_across_workers(server_database, tmp_path):
    keys = issue_keys(server_database, **{"alice@example.com": "write", "platform": "service",
                                          "gone@example.com": "write"})
    revoke(server_database, "gone@example.com")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    instance = Instance(server_database, workers=3, log_path=tmp_path / "gunicorn.log",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}).start()
    try:
        def call(method, path, key=None, body=None, headers=None):
            # No session: a new connection each time, so the workers share the calls.
            auth = {"Authorization": f"Bearer {keys.get(key, key)}"} if key else {}
            return requests.request(method, instance.url + path, json=body, headers={**auth, **(headers or {})},
                                    timeout=30).status_code

        assert call("POST", "/api/admin/clients", "alice@example.com", {"id": "m", "name": "M"}) == 201
        assert call("POST", "/api/admin/clients", "alice@example.com", {"id": "zero", "name": "Z"}) == 201
        assert call("PUT", "/api/admin/clients/zero/quota", "alice@example.com",
                    {"monthlyGenerationLimit": 0}) == 200
        before = scrape(instance.url)

        grant = ("POST", "/api/admin/clients/m/credits", "alice@example.com", {"action": "grant", "amount": 3})
        use = ("POST", "/api/clients/m/usage", "platform", {"count": 2})
        refused = ("POST", "/api/clients/zero/usage", "platform", {"count": 1})
        calls = ([grant] * 20 + [use] * 30 + [refused] * 10
                 + [("GET", "/api/admin/clients", "cs_unknown")] * 6
                 + [("GET", "/api/admin/clients", None)] * 4
                 + [("GET", "/api/admin/clients", "gone@example.com")] * 3)
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(pool.map(lambda c: call(*c), calls))
        assert statuses == {200: 50, 402: 10, 401: 13}
        replayed = {"Idempotency-Key": "once"}
        assert [call(*grant, headers=replayed) for _ in range(5)] == [200] * 5

        after = scrape(instance.url)
    finally:
        instance.stop()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before[key]

    assert delta("credits_granted_generations_total") == 21 * 3
    assert delta("credits_generations_consumed_total") == 30 * 2
    assert delta("credits_quota_refusals_total") == 10
    assert delta("credits_idempotent_replays_total") == 4
    assert delta("credits_authentication_failures_total", reason="unknown") == 6
    assert delta("credits_authentication_failures_total", reason="missing") == 4
    assert delta("credits_authentication_failures_total", reason="revoked") == 3
    assert delta("credits_http_requests_total", method="POST", route=CREDITS, status="200") == 25
    assert delta("credits_http_requests_total", method="POST", route=USAGE, status="200") == 30
    assert delta("credits_http_requests_total", method="POST", route=USAGE, status="402") == 10
    assert delta("credits_http_request_duration_seconds_count", method="POST", route=USAGE, status="402") == 10
    assert delta("credits_http_requests_total", method="GET", route="/api/admin/clients", status="401") == 13
    # The sums above are over several workers' files, not one worker's own count.
    assert len(list(multiproc.glob("counter_*.db"))) >= 2
