"""Webhooks: endpoints administered and audited; events written with the change that makes them
(and never for a refusal); delivered signed to the Standard Webhooks specification, retried on
schedule, and verified here with the specification's own library, as a receiver would."""

import base64
import json

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from conftest import assert_error, config_for
from credits_service.extensions import db
from helpers import consume, consumed, grant, granted, held, set_limit, succeeded
from webhook_receiver import Receiver

WEBHOOKS = "/api/admin/webhooks"


@pytest.fixture
def app_config(database_url, clock):
    return config_for(database_url, CLOCK=clock, WEBHOOK_RETRY_SCHEDULE=(1, 1, 1))


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def register(api, url, events=("*",), **extra):
    return succeeded(api.post(WEBHOOKS, json={"url": url, "events": list(events), **extra}), 201)


def deliver(runner):
    result = runner.invoke(args=["webhooks", "deliver", "--once"])
    assert result.exit_code == 0, result.output
    return result.output


def deliveries(api, endpoint_id, query=""):
    return succeeded(api.get(f"{WEBHOOKS}/{endpoint_id}/deliveries{query}", key="read"))["items"]


def events_of(app, event_type=None):
    """The outbox's events in the order they were written (their deliveries' ids are serial)."""
    with app.app_context():
        rows = db.session().execute(text(
            "SELECT type, body FROM webhook_events e ORDER BY "
            "(SELECT MIN(d.id) FROM webhook_deliveries d WHERE d.event_id = e.id)")).all()
    return [json.loads(body) for kind, body in rows if event_type in (None, kind)]


# ---- endpoints -----------------------------------------------------------------------------


def test_an_endpoint_is_registered_with_a_secret_shown_once(api, acme):
    created = register(api, "https://platform.internal/hooks", ["credits.granted", "usage.threshold_reached"],
                       description="billing")
    assert set(created) == {"id", "url", "events", "description", "enabled", "createdAt", "updatedAt", "secret"}
    assert (created["url"], created["events"], created["enabled"]) == (
        "https://platform.internal/hooks", ["credits.granted", "usage.threshold_reached"], True)
    assert created["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(created["secret"].removeprefix("whsec_"))) <= 64
    shown = succeeded(api.get(f"{WEBHOOKS}/{created['id']}", key="read"))
    assert "secret" not in shown
    assert [item["id"] for item in succeeded(api.get(WEBHOOKS, key="read"))["items"]] == [created["id"]]
    assert "secret" not in json.dumps(succeeded(api.get(WEBHOOKS, key="read")))


@pytest.mark.parametrize("enabled", [0, 1, "false", None])
def test_enabled_is_true_or_false_only(api, enabled):
    created = register(api, "https://a.example/h")
    assert_error(api.patch(f"{WEBHOOKS}/{created['id']}", json={"enabled": enabled}), 400)
    assert succeeded(api.get(f"{WEBHOOKS}/{created['id']}", key="read"))["enabled"] is True


def test_an_endpoint_is_changed_disabled_and_deleted(api, acme):
    created = register(api, "http://10.0.0.7:8080/hooks")  # a private address is normal for an internal service
    changed = succeeded(api.patch(f"{WEBHOOKS}/{created['id']}",
                                  json={"events": ["client.deleted"], "enabled": False, "description": "off"}))
    assert (changed["events"], changed["enabled"], changed["description"]) == (["client.deleted"], False, "off")
    assert api.delete(f"{WEBHOOKS}/{created['id']}").status_code == 204
    assert_error(api.get(f"{WEBHOOKS}/{created['id']}", key="read"), 404)
    assert_error(api.delete(f"{WEBHOOKS}/{created['id']}"), 404)


INVALID = {
    "unknown event": {"url": "https://a.example/h", "events": ["credits.stolen"]},
    "no events": {"url": "https://a.example/h", "events": []},
    "ping is not subscribed to": {"url": "https://a.example/h", "events": ["webhook.ping"]},
    "ftp": {"url": "ftp://a.example/h", "events": ["*"]},
    "no scheme": {"url": "a.example/h", "events": ["*"]},
    "no host": {"url": "https:///h", "events": ["*"]},
    "a bad port": {"url": "https://a.example:port/h", "events": ["*"]},
    "too long": {"url": "https://a.example/" + "h" * 2000, "events": ["*"]},
    "a space": {"url": "https://a.example/a b", "events": ["*"]},
    "a port past 65535": {"url": "https://a.example:65536/h", "events": ["*"]},
    "credentials in the url": {"url": "https://user:pass@a.example/h", "events": ["*"]},
    "a control character": {"url": "https://a.example/\x18", "events": ["*"]},
    "not ascii": {"url": "https://a.example/caf\u00e9", "events": ["*"]},
    "unknown field": {"url": "https://a.example/h", "events": ["*"], "secret": "mine"},
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID)
def test_an_invalid_endpoint_is_400_and_registers_nothing(api, body):
    assert_error(api.post(WEBHOOKS, json=body), 400)
    assert succeeded(api.get(WEBHOOKS, key="read"))["items"] == []


def test_acts_on_endpoints_are_audited_without_their_secrets(api, acme, runner):
    created = register(api, "https://a.example/h")
    succeeded(api.patch(f"{WEBHOOKS}/{created['id']}", json={"enabled": False}))
    rotated = succeeded(api.post(f"{WEBHOOKS}/{created['id']}/rotate-secret"))
    assert api.delete(f"{WEBHOOKS}/{created['id']}").status_code == 204
    entries = succeeded(api.get("/api/admin/audit-log?action=webhook_created&action=webhook_updated"
                                "&action=webhook_secret_rotated&action=webhook_deleted", key="read"))["items"]
    assert [entry["action"] for entry in entries] == ["webhook_deleted", "webhook_secret_rotated", "webhook_updated",
                                                      "webhook_created"]
    assert {entry["clientId"] for entry in entries} == {"#webhooks"}
    assert {entry["adminId"] for entry in entries} == {"alice@example.com"}
    everything = json.dumps(entries)
    assert created["secret"] not in everything and rotated["secret"] not in everything
    assert "whsec_" not in everything
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output


# ---- the outbox: written with the change, never for a refusal ----------------------------------


def test_a_grant_is_delivered_signed_and_verifies_with_standard_webhooks(api, acme, app, runner, receiver):
    endpoint = register(api, receiver.url, ["credits.granted"])
    given = granted(api, 50, reason="onboarding")
    assert receiver.received == []  # nothing is sent in the request: the worker sends
    assert deliver(runner) == "Attempted 1 webhook delivery(ies).\n"
    [request] = receiver.received
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert len(request.body) < 20 * 1024
    event = Webhook(endpoint["secret"]).verify(request.body, headers)
    assert event == {"type": "credits.granted", "timestamp": "2026-11-15T12:00:00.000Z", "data": {
        "clientId": "acme", "grantId": given["grantId"], "amount": 50, "scope": "permanent", "month": None,
        "previousLimit": 100, "newLimit": 150}}
    [delivery] = deliveries(api, endpoint["id"])
    assert (delivery["eventId"], delivery["eventType"], delivery["status"], delivery["attempts"],
            delivery["lastStatusCode"]) == (headers["webhook-id"], "credits.granted", "succeeded", 1, 200)
    with pytest.raises(Exception):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(request.body, headers)


def test_a_refused_change_emits_nothing(api, acme, app):
    register(api, "https://a.example/h")
    set_limit(api, 1)
    succeeded(api.put("/api/admin/clients/acme/quota", json={"plan": "enterprise"}))
    before = len(events_of(app))
    assert grant(api, 5).status_code == 409  # unlimited: nothing to grant
    succeeded(api.put("/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": 1}))
    after_limit = len(events_of(app))
    consumed(api, 1)
    assert consume(api, 1).status_code == 402
    assert api.post("/api/admin/clients/acme/credits", json={"action": "void", "grantId": 999}).status_code == 404
    emitted = events_of(app)[before:]
    # The limit's change, then the one consumption that fit (reaching 80 and 100 %): nothing for
    # the refused grant, the 402 or the void of no grant.
    assert [event["type"] for event in emitted] == ["quota.updated", "usage.threshold_reached",
                                                    "usage.threshold_reached"]
    assert after_limit - before == 1


def test_every_kind_of_change_has_its_event(api, app, runner, clock):
    register(api, "https://a.example/h")
    api.create_client("acme", "Acme Corp")
    succeeded(api.put("/api/admin/clients/acme/quota", json={"plan": "starter", "reason": "upgrade"}))
    month_grant = granted(api, 10, scope="month")
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "void", "grantId": month_grant["grantId"]}))
    consumed(api, 3)
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "reset"}))
    held(api, 2, ttl_seconds=60)
    clock.advance(minutes=2)
    assert runner.invoke(args=["holds", "sweep"]).exit_code == 0
    assert api.delete("/api/admin/clients/acme").status_code == 204
    emitted = {event["type"]: event for event in events_of(app)}
    assert list(emitted) == ["client.created", "quota.updated", "credits.granted", "credits.voided", "usage.reset",
                             "hold.expired", "client.deleted"]
    assert emitted["client.created"]["data"] == {"clientId": "acme", "name": "Acme Corp", "plan": "free"}
    assert emitted["quota.updated"]["data"] == {
        "clientId": "acme", "reason": "upgrade",
        "previous": {"plan": "free", "monthlyGenerationLimit": 100, "storageQuotaMb": 1000},
        "new": {"plan": "starter", "monthlyGenerationLimit": 500, "storageQuotaMb": 5000}}
    assert emitted["credits.voided"]["data"] == {
        "clientId": "acme", "grantId": month_grant["grantId"], "amount": 10, "scope": "month", "month": "2026-11",
        "previousLimit": 510, "newLimit": 500}
    assert emitted["usage.reset"]["data"] == {"clientId": "acme", "month": "2026-11", "previousUsage": 3}
    assert emitted["hold.expired"]["data"]["count"] == 2
    assert emitted["client.deleted"]["data"] == {"clientId": "acme"}


def test_only_the_events_an_endpoint_subscribes_to_reach_it(api, acme, app):
    grants_only = register(api, "https://a.example/grants", ["credits.granted"])
    everything = register(api, "https://a.example/all")
    granted(api, 1)
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "reset"}))
    assert [d["eventType"] for d in deliveries(api, grants_only["id"])] == ["credits.granted"]
    assert [d["eventType"] for d in deliveries(api, everything["id"])] == ["usage.reset", "credits.granted"]


# ---- delivery: retries, failures, 410, Retry-After, rotation, ping ----------------------------------


def test_a_failing_receiver_is_retried_with_the_same_webhook_id(api, acme, runner, clock):
    with Receiver([500, 500, 200]) as receiver:
        endpoint = register(api, receiver.url)
        granted(api, 1)
        for _ in range(3):
            deliver(runner)
            clock.advance(seconds=1)  # WEBHOOK_RETRY_SCHEDULE=1,1,1 here
        assert len(receiver.received) == 3
        assert len({request.headers["webhook-id"] for request in receiver.received}) == 1
        for request in receiver.received:  # each attempt signed afresh, each verifies
            Webhook(endpoint["secret"]).verify(request.body, request.headers)
    [delivery] = deliveries(api, endpoint["id"])
    assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"], delivery["lastError"]) == (
        "succeeded", 3, 200, None)
    assert delivery["deliveredAt"] == "2026-11-15T12:00:02.000Z"


def test_a_delivery_fails_after_its_schedule_and_an_admin_retry_sends_it_once_more(api, acme, runner, clock):
    with Receiver([503, 503, 503, 503, 200]) as receiver:
        endpoint = register(api, receiver.url)
        granted(api, 1)
        for _ in range(5):
            deliver(runner)
            clock.advance(seconds=1)
        assert len(receiver.received) == 4  # the first attempt and three retries
        [failed] = deliveries(api, endpoint["id"], "?status=failed")
        assert (failed["attempts"], failed["lastStatusCode"], failed["lastError"], failed["nextAttemptAt"]) == (
            4, 503, "HTTP 503", None)
        retried = succeeded(api.post(f"{WEBHOOKS}/{endpoint['id']}/deliveries/{failed['id']}/retry"), 202)
        assert retried["status"] == "pending"
        again = api.post(f"{WEBHOOKS}/{endpoint['id']}/deliveries/{failed['id']}/retry")
        assert (again.status_code, again.get_json()["status"]) == (409, "pending")
        deliver(runner)
        assert len(receiver.received) == 5
    assert deliveries(api, endpoint["id"])[0]["status"] == "succeeded"


def test_a_refused_connection_and_a_redirect_are_failed_attempts(api, acme, runner, clock):
    endpoint = register(api, "http://127.0.0.1:9/nobody-listens")
    granted(api, 1)
    deliver(runner)
    [delivery] = deliveries(api, endpoint["id"])
    assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"]) == ("pending", 1, None)
    assert "ConnectionRefused" in delivery["lastError"]
    with Receiver([(302, {"Location": "http://127.0.0.1:9/elsewhere"})]) as receiver:
        moved = register(api, receiver.url)
        granted(api, 1)
        deliver(runner)
        assert len(receiver.received) == 1
    assert deliveries(api, moved["id"])[0]["lastStatusCode"] == 302


def test_gone_disables_the_endpoint_as_the_services_act(api, acme, runner):
    with Receiver([410]) as receiver:
        endpoint = register(api, receiver.url)
        granted(api, 1)
        granted(api, 2)
        deliver(runner)
        assert len(receiver.received) == 1  # the second waits no more: the endpoint is gone
    assert succeeded(api.get(f"{WEBHOOKS}/{endpoint['id']}", key="read"))["enabled"] is False
    assert {d["status"] for d in deliveries(api, endpoint["id"])} == {"failed"}
    [entry] = succeeded(api.get("/api/admin/audit-log?action=webhook_disabled", key="read"))["items"]
    assert (entry["adminId"], entry["details"]["reason"]) == ("webhook-delivery", "410 Gone")


def test_retry_after_is_respected_within_the_schedule(app, api, acme, runner, clock):
    app.config["WEBHOOK_RETRY_SCHEDULE"] = (1, 10)
    with Receiver([(429, {"Retry-After": "5"}), 200]) as receiver:
        endpoint = register(api, receiver.url)
        granted(api, 1)
        deliver(runner)
        assert deliveries(api, endpoint["id"])[0]["nextAttemptAt"] == "2026-11-15T12:00:05.000Z"
        clock.advance(seconds=4)
        deliver(runner)
        assert len(receiver.received) == 1
        clock.advance(seconds=1)
        deliver(runner)
        assert len(receiver.received) == 2


def test_after_a_rotation_both_secrets_sign_for_a_day(api, acme, runner, clock):
    with Receiver() as receiver:
        endpoint = register(api, receiver.url)
        rotated = succeeded(api.post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret"))
        assert rotated["secret"] != endpoint["secret"]
        granted(api, 1)
        deliver(runner)
        request = receiver.received[-1]
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (endpoint["secret"], rotated["secret"]):
            Webhook(secret).verify(request.body, request.headers)
        clock.advance(hours=24, seconds=1)
        granted(api, 1)
        deliver(runner)
        request = receiver.received[-1]
        assert len(request.headers["webhook-signature"].split(" ")) == 1
        Webhook(rotated["secret"]).verify(request.body, request.headers)
        with pytest.raises(Exception):
            Webhook(endpoint["secret"]).verify(request.body, request.headers)


def test_a_ping_goes_to_that_endpoint_alone(api, runner):
    with Receiver() as receiver, Receiver() as other:
        endpoint = register(api, receiver.url, ["credits.voided"])
        register(api, other.url)
        ping = succeeded(api.post(f"{WEBHOOKS}/{endpoint['id']}/ping"), 202)
        assert (ping["eventType"], ping["status"]) == ("webhook.ping", "pending")
        deliver(runner)
        [request] = receiver.received
        assert Webhook(endpoint["secret"]).verify(request.body, request.headers)["data"] == {"endpointId": endpoint["id"]}
        assert other.received == []


def test_a_disabled_endpoints_deliveries_wait_and_a_deleted_ones_are_dropped(api, acme, app, runner):
    with Receiver() as receiver:
        endpoint = register(api, receiver.url)
        succeeded(api.patch(f"{WEBHOOKS}/{endpoint['id']}", json={"enabled": False}))
        assert_error(api.post(f"{WEBHOOKS}/{endpoint['id']}/ping"), 409)
        succeeded(api.patch(f"{WEBHOOKS}/{endpoint['id']}", json={"enabled": True}))
        granted(api, 1)
        succeeded(api.patch(f"{WEBHOOKS}/{endpoint['id']}", json={"enabled": False}))
        deliver(runner)
        assert receiver.received == []
        assert deliveries(api, endpoint["id"])[0]["status"] == "pending"
        assert api.delete(f"{WEBHOOKS}/{endpoint['id']}").status_code == 204
    with app.app_context():
        assert db.session().scalar(text("SELECT COUNT(*) FROM webhook_deliveries")) == 0


# ---- usage.threshold_reached: once per crossing, armed again --------------------------------------


def thresholds_fired(app):
    return [(e["data"]["threshold"], e["data"]["generationsUsed"], e["data"]["generationsLimit"])
            for e in events_of(app, "usage.threshold_reached")]


def test_each_threshold_fires_once_and_again_after_usage_drops_below_it(api, acme, app):
    register(api, "https://a.example/h", ["usage.threshold_reached"])
    set_limit(api, 10)
    consumed(api, 7)
    assert thresholds_fired(app) == []
    consumed(api, 1)  # 8 of 10: 80 %
    consumed(api, 1)
    assert thresholds_fired(app) == [(80, 8, 10)]
    consumed(api, 1)  # 100 %
    assert consume(api, 1).status_code == 402
    assert thresholds_fired(app) == [(80, 8, 10), (100, 10, 10)]
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "reset"}))
    consumed(api, 10)  # both crossed by one consumption
    assert thresholds_fired(app)[2:] == [(80, 10, 10), (100, 10, 10)]


def test_a_limit_that_rises_above_a_threshold_arms_it_again(api, acme, app):
    register(api, "https://a.example/h", ["usage.threshold_reached"])
    set_limit(api, 10)
    consumed(api, 8)
    granted(api, 10, scope="month")  # 8 of 20: below 80 % again
    consumed(api, 8)  # 16 of 20
    assert thresholds_fired(app) == [(80, 8, 10), (80, 16, 20)]
    set_limit(api, 16)  # 16 of 26 (16 + the month's 10): 61 %
    set_limit(api, 6)  # 16 of 16: 100 %, and 80 % again, reached by the limit's change
    assert thresholds_fired(app)[2:] == [(80, 16, 16), (100, 16, 16)]


def test_a_refund_below_a_threshold_arms_it_again(api, acme, app):
    register(api, "https://a.example/h", ["usage.threshold_reached"])
    set_limit(api, 10)
    consumed(api, 9)
    succeeded(api.post("/api/clients/acme/usage/refunds", json={"count": 3}, key="service",
                       headers={"Idempotency-Key": "refund-1"}))
    consumed(api, 2)
    assert thresholds_fired(app) == [(80, 9, 10), (80, 8, 10)]


def test_a_captured_hold_crosses_thresholds_too(api, acme, app):
    register(api, "https://a.example/h", ["usage.threshold_reached"])
    set_limit(api, 10)
    hold = held(api, 9)
    succeeded(api.post(f"/api/clients/acme/holds/{hold['holdId']}/capture", json={}, key="service"))
    assert thresholds_fired(app) == [(80, 9, 10)]


# ---- upkeep and metrics ---------------------------------------------------------------------


def test_ended_deliveries_are_purged_after_their_retention(api, acme, app, runner, clock, receiver):
    register(api, receiver.url)
    granted(api, 1)
    deliver(runner)
    clock.advance(hours=167)
    assert runner.invoke(args=["webhooks", "purge"]).output == "Deleted 0 ended webhook delivery(ies).\n"
    clock.advance(hours=2)
    assert runner.invoke(args=["webhooks", "purge"]).output == "Deleted 1 ended webhook delivery(ies).\n"
    assert events_of(app) == []


def test_metrics_show_deliveries_by_status_and_the_oldest_pending(api, acme, client, runner, clock, receiver):
    register(api, receiver.url)
    granted(api, 1)
    deliver(runner)
    granted(api, 2)
    clock.advance(seconds=30)
    text_ = client.get("/metrics").get_data(as_text=True)
    assert 'credits_webhook_deliveries{status="succeeded"} 1.0' in text_
    assert 'credits_webhook_deliveries{status="pending"} 1.0' in text_
    assert "credits_webhook_attempts 1.0" in text_
    assert "credits_webhook_oldest_pending_seconds 30.0" in text_
