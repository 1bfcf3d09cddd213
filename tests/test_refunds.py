"""Refunds: the platform gives back what it consumed for a failed generation, once per
Idempotency-Key, only from this month or the one before, and never below zero; each refund is
a row, and a month's usage is explained by consumed + captured - refunded."""

import pytest

from conftest import assert_error
from helpers import audit_log, consumed, held, quota_status, refund, resolve, set_limit, succeeded, usage_months

REFUNDS = "/api/admin/clients/acme/refunds"


@pytest.fixture
def acme(api):
    client = api.create_client("acme", "Acme Corp")
    set_limit(api, 10)
    return client


def test_a_refund_lowers_the_months_usage(api, acme):
    consumed(api, 5)
    body = succeeded(refund(api, 2, reason="generation failed"))
    assert body == {"refundId": body["refundId"], "month": "2026-11", "count": 2, "generationCount": 3,
                    "generationsRemaining": 7}
    status = quota_status(api)
    assert (status["generationsUsed"], status["generationsRemaining"]) == (3, 7)


def test_a_refund_needs_an_idempotency_key(api, acme):
    consumed(api, 5)
    body = assert_error(refund(api, 1, idempotency_key=None), 400, "Idempotency-Key")
    assert "a retry cannot refund twice" in body["error"]
    assert quota_status(api)["generationsUsed"] == 5


def test_a_retried_refund_is_given_once(api, acme):
    consumed(api, 5)
    first = refund(api, 2, idempotency_key="job-9-refund")
    again = refund(api, 2, idempotency_key="job-9-refund")
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.get_json() == first.get_json()
    assert quota_status(api)["generationsUsed"] == 3
    assert len(succeeded(api.get(REFUNDS, key="read"))["items"]) == 1


def test_a_refund_past_the_months_usage_is_refused_and_changes_nothing(api, acme):
    consumed(api, 2)
    refused = refund(api, 3)
    assert refused.status_code == 409
    body = refused.get_json()
    assert body == {"error": "Refunding 3 would take 2026-11's usage below 0: 2 generations are counted there.",
                    "generationCount": 2}
    assert quota_status(api)["generationsUsed"] == 2
    assert succeeded(api.get(REFUNDS, key="read"))["items"] == []


def test_held_credits_are_not_refundable_until_captured(api, acme):
    placed = held(api, 4)
    assert refund(api, 1).status_code == 409
    succeeded(resolve(api, placed["holdId"], "capture", count=3))
    assert succeeded(refund(api, 3, idempotency_key="after-capture"))["generationCount"] == 0


def test_last_month_takes_refunds_and_older_months_do_not(api, acme, clock):
    clock.set("2026-10-20T10:00:00+00:00")
    consumed(api, 4)
    clock.set("2026-11-20T10:00:00+00:00")
    consumed(api, 6)
    clock.set("2026-12-02T10:00:00+00:00")
    assert succeeded(refund(api, 1, month="2026-11"))["generationCount"] == 5
    closed = refund(api, 1, month="2026-10", idempotency_key="october")
    assert closed.status_code == 409
    assert closed.get_json()["error"] == ("2026-10 takes no refunds: only this month (2026-12) and the one before "
                                          "do; finance has closed the others.")
    assert refund(api, 1, month="2027-01", idempotency_key="future").status_code == 409
    months = {m["month"]: m["generationCount"] for m in usage_months(api, query="?from=2026-10&to=2026-12")}
    assert months == {"2026-10": 4, "2026-11": 5}
    assert quota_status(api)["generationsUsed"] == 0  # December's untouched


def test_refunds_are_listed_for_finance_and_write_no_audit_entry(api, acme, clock):
    consumed(api, 5)
    first = succeeded(refund(api, 1, reason="timeout", idempotency_key="a"))
    clock.advance(seconds=5)
    second = succeeded(refund(api, 2, idempotency_key="b"))
    page = succeeded(api.get(f"{REFUNDS}?limit=1", key="read"))
    assert page["nextOffset"] == 1
    assert page["items"] == [{"id": second["refundId"], "month": "2026-11", "count": 2, "reason": None,
                              "keyName": "platform", "createdAt": "2026-11-15T12:00:05.000Z"}]
    rest = succeeded(api.get(f"{REFUNDS}?offset=1", key="read"))["items"]
    assert [(item["id"], item["reason"]) for item in rest] == [(first["refundId"], "timeout")]
    assert audit_log(api) == [audit_log(api)[0]]  # only the limit change of the fixture
    assert audit_log(api)[0]["action"] == "limit_change"
    assert_error(api.get("/api/admin/clients/nobody/refunds", key="read"), 404)


def test_a_months_usage_is_explained_by_its_counters(api, acme):
    consumed(api, 4)
    placed = held(api, 3)
    succeeded(resolve(api, placed["holdId"], "capture", count=2))
    succeeded(refund(api, 1))
    [month] = usage_months(api)
    assert (month["generationCount"], month["consumedCount"], month["capturedCount"], month["refundedCount"]) == (
        5, 4, 2, 1)
    assert month["generationCount"] == month["consumedCount"] + month["capturedCount"] - month["refundedCount"]


def test_a_reset_starts_the_months_count_and_its_counters_over(api, acme):
    consumed(api, 4)
    succeeded(refund(api, 1))
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "reset", "reason": "support"}))
    consumed(api, 2)
    [month] = usage_months(api)
    assert (month["generationCount"], month["consumedCount"], month["capturedCount"], month["refundedCount"]) == (
        2, 2, 0, 0)


INVALID = {
    "count zero": {"count": 0},
    "count too large": {"count": 10_001},
    "month malformed": {"count": 1, "month": "2026-13"},
    "unknown field": {"count": 1, "amount": 1},
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID)
def test_an_invalid_refund_is_400(api, acme, body):
    consumed(api, 2)
    response = api.post("/api/clients/acme/usage/refunds", json=body, key="service",
                        headers={"Idempotency-Key": "invalid"})
    assert_error(response, 400)
    assert quota_status(api)["generationsUsed"] == 2
