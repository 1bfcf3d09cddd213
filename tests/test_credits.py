"""POST /api/admin/clients/<id>/credits: grant credits and reset usage."""

import logging

import pytest

from conftest import assert_error
from helpers import audit_log, consumed, quota, set_limit

CREDITS = "/api/admin/clients/acme/credits"
MAX_LIMIT = 2_147_483_647
FREE_LIMIT = 100


# ---- grant -------------------------------------------------------------------


def test_grant_raises_the_limit(api, acme):
    consumed(api, 7)
    response = api.post(CREDITS, json={"action": "grant", "amount": 50, "reason": "Black Friday"})
    assert response.status_code == 200
    assert response.get_json() == {
        "action": "grant",
        "grantId": response.get_json()["grantId"],
        "scope": "permanent",
        "month": None,
        "expiresAt": None,
        "currentUsage": 7,
        "previousLimit": FREE_LIMIT,
        "newLimit": FREE_LIMIT + 50,
        "remaining": FREE_LIMIT + 50 - 7,
    }
    assert quota(api)["quota"]["monthlyGenerationLimit"] == FREE_LIMIT + 50


def test_grant_writes_a_credit_grant_entry(api, acme):
    api.post(CREDITS, json={"action": "grant", "amount": 50, "reason": "Black Friday"})
    [entry] = audit_log(api)
    assert entry["clientId"] == "acme"
    assert entry["adminId"] == "alice@example.com"
    assert entry["action"] == "credit_grant"
    grant_id = entry["details"]["grantId"]
    assert entry["details"] == {"amount": 50, "reason": "Black Friday", "scope": "permanent", "grantId": grant_id}
    assert entry["previousValue"] == str(FREE_LIMIT)
    assert entry["newValue"] == str(FREE_LIMIT + 50)


def test_grants_accumulate(api, acme):
    api.post(CREDITS, json={"action": "grant", "amount": 10})
    second = api.post(CREDITS, json={"action": "grant", "amount": 20}).get_json()
    assert (second["previousLimit"], second["newLimit"]) == (FREE_LIMIT + 10, FREE_LIMIT + 30)
    assert [(e["previousValue"], e["newValue"]) for e in audit_log(api)] == [
        (str(FREE_LIMIT + 10), str(FREE_LIMIT + 30)),
        (str(FREE_LIMIT), str(FREE_LIMIT + 10)),
    ]


@pytest.mark.parametrize("amount", [1, 1_000_000_000])
def test_grant_amount_bounds_are_accepted(api, acme, amount):
    response = api.post(CREDITS, json={"action": "grant", "amount": amount})
    assert response.status_code == 200
    assert response.get_json()["newLimit"] == FREE_LIMIT + amount


def test_reason_of_500_characters_is_accepted(api, acme):
    reason = "r" * 500
    assert api.post(CREDITS, json={"action": "grant", "amount": 1, "reason": reason}).status_code == 200
    assert audit_log(api)[0]["details"]["reason"] == reason


INVALID_BODIES = {
    "amount-zero": ({"action": "grant", "amount": 0}, "amount"),
    "amount-negative": ({"action": "grant", "amount": -1}, "amount"),
    "amount-too-large": ({"action": "grant", "amount": 1_000_000_001}, "amount"),
    "amount-fraction": ({"action": "grant", "amount": 1.5}, "amount"),
    "amount-integral-float": ({"action": "grant", "amount": 100.0}, "amount"),
    "amount-boolean": ({"action": "grant", "amount": True}, "amount"),
    "amount-numeric-string": ({"action": "grant", "amount": "10"}, "amount"),
    "amount-null": ({"action": "grant", "amount": None}, "amount"),
    "grant-without-amount": ({"action": "grant"}, "amount"),
    "reset-with-amount": ({"action": "reset", "amount": 5}, "amount"),
    "action-missing": ({"amount": 5}, "action"),
    "action-unknown": ({"action": "refund", "amount": 5}, "action"),
    "action-null": ({"action": None}, "action"),
    "unknown-field": ({"action": "grant", "amount": 5, "note": "hi"}, "note"),
    "reason-too-long": ({"action": "grant", "amount": 5, "reason": "r" * 501}, "reason"),
    "reason-not-string": ({"action": "reset", "reason": 5}, "reason"),
}


@pytest.mark.parametrize("body, field", INVALID_BODIES.values(), ids=INVALID_BODIES)
def test_invalid_body_is_400_and_changes_nothing(api, acme, body, field):
    consumed(api, 3)
    error = assert_error(api.post(CREDITS, json=body), 400)
    assert field in error["fields"]
    overview = quota(api)
    assert overview["quota"]["monthlyGenerationLimit"] == FREE_LIMIT
    assert overview["usage"]["generationCount"] == 3
    assert audit_log(api) == []


def test_grant_to_unlimited_client_is_409(api):
    api.create_client("acme", "Acme Corp", plan="enterprise")
    error = assert_error(api.post(CREDITS, json={"action": "grant", "amount": 5}), 409)
    assert "unlimited" in error["error"].lower()
    assert quota(api)["quota"]["monthlyGenerationLimit"] == -1
    assert audit_log(api) == []


def test_grant_beyond_the_largest_limit_is_400_and_changes_nothing(api, acme):
    set_limit(api, MAX_LIMIT - 5)
    entries = audit_log(api)
    assert_error(api.post(CREDITS, json={"action": "grant", "amount": 6}), 400)
    assert quota(api)["quota"]["monthlyGenerationLimit"] == MAX_LIMIT - 5
    assert audit_log(api) == entries


def test_grant_up_to_the_largest_limit_is_accepted(api, acme):
    set_limit(api, MAX_LIMIT - 5)
    response = api.post(CREDITS, json={"action": "grant", "amount": 5})
    assert response.status_code == 200
    assert response.get_json()["newLimit"] == MAX_LIMIT


# ---- reset -------------------------------------------------------------------


def test_reset_sets_this_months_usage_to_zero(api, acme):
    consumed(api, 7)
    response = api.post(CREDITS, json={"action": "reset", "reason": "Support ticket 42"})
    assert response.status_code == 200
    assert response.get_json() == {
        "action": "reset",
        "previousUsage": 7,
        "currentUsage": 0,
        "limit": FREE_LIMIT,
        "remaining": FREE_LIMIT,
    }
    usage = quota(api)["usage"]
    assert usage["generationCount"] == 0
    assert usage["remaining"] == FREE_LIMIT
    assert quota(api)["quota"]["monthlyGenerationLimit"] == FREE_LIMIT


def test_reset_writes_a_usage_reset_entry(api, acme):
    consumed(api, 7)
    api.post(CREDITS, json={"action": "reset", "reason": "Support ticket 42"})
    [entry] = audit_log(api)
    assert entry["adminId"] == "alice@example.com"
    assert entry["action"] == "usage_reset"
    assert entry["details"]["previousUsage"] == 7
    assert entry["details"]["reason"] == "Support ticket 42"
    assert entry["previousValue"] == "7"
    assert entry["newValue"] == "0"


def test_reset_without_usage_records_zero(api, acme):
    response = api.post(CREDITS, json={"action": "reset"})
    assert response.status_code == 200
    assert response.get_json()["previousUsage"] == 0
    [entry] = audit_log(api)
    assert (entry["previousValue"], entry["newValue"]) == ("0", "0")


# ---- remaining ---------------------------------------------------------------


def test_remaining_is_null_for_unlimited_clients(api):
    api.create_client("acme", "Acme Corp", plan="enterprise")
    consumed(api, 7)
    reset = api.post(CREDITS, json={"action": "reset"}).get_json()
    assert (reset["limit"], reset["remaining"]) == (-1, None)
    usage = quota(api)["usage"]
    assert usage["remaining"] is None
    assert usage["isUnlimited"] is True


def test_remaining_is_never_negative_when_usage_exceeds_a_lowered_limit(api, acme):
    consumed(api, 50)
    set_limit(api, 10)
    assert quota(api)["usage"]["remaining"] == 0
    grant = api.post(CREDITS, json={"action": "grant", "amount": 5}).get_json()
    assert {key: grant[key] for key in ("action", "currentUsage", "previousLimit", "newLimit", "remaining")} == {
        "action": "grant", "currentUsage": 50, "previousLimit": 10, "newLimit": 15, "remaining": 0,
    }
    assert quota(api)["usage"]["remaining"] == 0


# ---- unknown client, logging -------------------------------------------------


@pytest.mark.parametrize("body", [{"action": "grant", "amount": 5}, {"action": "reset"}], ids=["grant", "reset"])
def test_unknown_client_is_404(api, body):
    assert_error(api.post("/api/admin/clients/nobody/credits", json=body), 404)


@pytest.mark.parametrize(
    "method, path, body, action",
    [
        ("POST", CREDITS, {"action": "grant", "amount": 5}, "credit_grant"),
        ("POST", CREDITS, {"action": "reset"}, "usage_reset"),
        ("PUT", "/api/admin/clients/acme/quota", {"plan": "pro"}, "plan_change"),
        ("PUT", "/api/admin/clients/acme/quota", {"monthlyGenerationLimit": 7}, "limit_change"),
    ],
    ids=["grant", "reset", "plan-change", "limit-change"],
)
def test_each_admin_mutation_logs_a_structured_record(api, acme, caplog, method, path, body, action):
    caplog.set_level(logging.INFO, logger="credits_service.admin")
    caplog.clear()
    assert api.request(method, path, json=body).status_code == 200
    records = [r for r in caplog.records if r.name == "credits_service.admin"]
    assert [(r.admin, r.action, r.clientId) for r in records] == [("alice@example.com", action, "acme")]
