"""The grant ledger: month grants, voids, effective limits and GET /api/admin/clients/<id>/grants."""

import pytest
from sqlalchemy import text

from conftest import assert_error
from credits_service.extensions import db
from helpers import audit_log, consume, consumed, grant, granted, quota, quota_status, set_limit, succeeded

CREDITS = "/api/admin/clients/acme/credits"
GRANTS = "/api/admin/clients/acme/grants"
FREE_LIMIT = 100
MAX_LIMIT = 2_147_483_647
NOVEMBER = "2026-11-15T12:00:00+00:00"
LAST_MS_OF_NOVEMBER = "2026-11-30T23:59:59.999+00:00"
FIRST_MS_OF_DECEMBER = "2026-12-01T00:00:00.000+00:00"


@pytest.fixture(autouse=True)
def november(clock):
    clock.set(NOVEMBER)


def void(api, grant_id, reason=None, client_id="acme", headers=None):
    body = {"action": "void", "grantId": grant_id}
    if reason:
        body["reason"] = reason
    return api.post(f"/api/admin/clients/{client_id}/credits", json=body, headers=headers)


def voided(api, grant_id, **kwargs):
    return succeeded(void(api, grant_id, **kwargs))


def usage(api):
    """The stored limit, and this month's usage as the admin overview shows it."""
    body = quota(api)
    return body["quota"]["monthlyGenerationLimit"], body["usage"]


def ledger(api, query=""):
    return succeeded(api.get(GRANTS + query, key="read"))


# ---- month grants --------------------------------------------------------------


def test_a_month_grant_raises_this_months_effective_limit_only(api, acme):
    consumed(api, 7)
    answer = granted(api, 50, "month", reason="Onboarding")
    assert answer == {
        "action": "grant", "grantId": answer["grantId"], "scope": "month", "month": "2026-11",
        "expiresAt": "2026-12-01T00:00:00.000Z", "currentUsage": 7, "previousLimit": FREE_LIMIT,
        "newLimit": FREE_LIMIT + 50, "remaining": FREE_LIMIT + 50 - 7,
    }
    stored, this_month = usage(api)
    assert stored == FREE_LIMIT
    assert (this_month["limit"], this_month["baseLimit"], this_month["grantedThisMonth"], this_month["remaining"]) == (
        FREE_LIMIT + 50, FREE_LIMIT, 50, FREE_LIMIT + 50 - 7,
    )
    seen = quota_status(api)
    assert (seen["generationsLimit"], seen["baseLimit"], seen["grantedThisMonth"],
            seen["generationsRemaining"]) == (FREE_LIMIT + 50, FREE_LIMIT, 50, FREE_LIMIT + 50 - 7)


def test_consumption_uses_the_effective_limit_and_refuses_past_it(api, acme):
    granted(api, 30, "month")
    granted(api, 20, "month")
    assert consumed(api, 140) == {"month": "2026-11", "generationCount": 140, "limit": 150, "remaining": 10}
    refusal = consume(api, 11)
    assert refusal.status_code == 402
    body = refusal.get_json()
    assert (body["generationCount"], body["limit"], body["remaining"]) == (140, 150, 10)
    assert "limit of 150" in body["error"]
    assert consumed(api, 10)["remaining"] == 0
    seen = quota_status(api)
    assert (seen["isAtLimit"], seen["usagePercent"]) == (True, 100)


def test_a_month_grant_before_any_usage_lets_one_consumption_pass_the_stored_limit(api, acme):
    granted(api, 50, "month")
    assert consumed(api, 120) == {"month": "2026-11", "generationCount": 120, "limit": 150, "remaining": 30}


def test_a_count_above_the_stored_limit_without_grants_is_refused_and_leaves_no_month(api, acme):
    assert consume(api, FREE_LIMIT + 1).status_code == 402
    assert api.get("/api/admin/clients/acme/usage", key="read").get_json()["items"] == []


def test_a_month_grant_made_on_the_last_millisecond_is_gone_at_the_first_of_the_next(api, acme, clock):
    clock.set(LAST_MS_OF_NOVEMBER)
    answer = granted(api, 50, "month")
    assert (answer["month"], answer["expiresAt"]) == ("2026-11", "2026-12-01T00:00:00.000Z")
    assert consumed(api, 150)["limit"] == 150

    clock.set(FIRST_MS_OF_DECEMBER)
    seen = quota_status(api)
    assert (seen["month"], seen["generationsLimit"], seen["baseLimit"],
            seen["grantedThisMonth"]) == ("2026-12", FREE_LIMIT, FREE_LIMIT, 0)
    assert consumed(api, FREE_LIMIT) == {"month": "2026-12", "generationCount": FREE_LIMIT, "limit": FREE_LIMIT,
                                         "remaining": 0}
    assert consume(api, 1).status_code == 402
    [entry] = ledger(api)["items"]
    assert (entry["status"], entry["expiresAt"]) == ("expired", "2026-12-01T00:00:00.000Z")


def test_a_permanent_grant_stays_next_month(api, acme, clock):
    granted(api, 50)
    clock.set(FIRST_MS_OF_DECEMBER)
    assert quota_status(api)["generationsLimit"] == FREE_LIMIT + 50
    assert ledger(api)["items"][0]["status"] == "active"


def test_a_month_grant_writes_a_credit_grant_entry_with_effective_limits(api, acme):
    set_limit(api, 200)
    granted(api, 25, "month")
    answer = granted(api, 50, "month", reason="Onboarding")
    entry = audit_log(api, query="?action=credit_grant")[0]
    assert entry["details"] == {"amount": 50, "reason": "Onboarding", "scope": "month",
                                "grantId": answer["grantId"], "month": "2026-11"}
    assert (entry["previousValue"], entry["newValue"]) == ("225", "275")


def test_a_permanent_grant_reports_effective_limits_too(api, acme):
    granted(api, 25, "month")
    answer = granted(api, 10)
    assert (answer["previousLimit"], answer["newLimit"]) == (FREE_LIMIT + 25, FREE_LIMIT + 35)
    assert usage(api)[0] == FREE_LIMIT + 10
    entry = audit_log(api, query="?action=credit_grant")[0]
    assert (entry["previousValue"], entry["newValue"]) == (str(FREE_LIMIT + 25), str(FREE_LIMIT + 35))


@pytest.mark.parametrize("scope", ["permanent", "month"])
def test_a_grant_on_an_unlimited_client_is_409(api, scope):
    api.create_client("acme", "Acme Corp", plan="enterprise")
    error = assert_error(grant(api, 5, scope), 409)
    assert "unlimited" in error["error"]
    assert ledger(api)["items"] == []
    assert audit_log(api) == []


@pytest.mark.parametrize("scope", ["permanent", "month"])
def test_an_effective_limit_above_the_maximum_is_400(api, acme, scope):
    set_limit(api, MAX_LIMIT - 10)
    granted(api, 5, "month")
    error = assert_error(grant(api, 6, scope), 400, "amount")
    assert error["fields"]["amount"] == ["Must be at most 5 for this client."]
    assert granted(api, 5, scope)["newLimit"] == MAX_LIMIT
    assert len(ledger(api)["items"]) == 2


# ---- voids ---------------------------------------------------------------------


def test_voiding_a_permanent_grant_lowers_the_stored_limit(api, acme):
    consumed(api, 7)
    grant_id = granted(api, 50)["grantId"]
    answer = voided(api, grant_id, reason="Typed 50 for 5")
    assert answer == {"action": "void", "grantId": grant_id, "scope": "permanent", "currentUsage": 7,
                      "previousLimit": FREE_LIMIT + 50, "newLimit": FREE_LIMIT, "remaining": FREE_LIMIT - 7}
    assert usage(api)[0] == FREE_LIMIT
    [entry] = audit_log(api, query="?action=credit_void")
    assert entry["adminId"] == "alice@example.com"
    assert entry["details"] == {"grantId": grant_id, "amount": 50, "scope": "permanent", "reason": "Typed 50 for 5"}
    assert (entry["previousValue"], entry["newValue"]) == (str(FREE_LIMIT + 50), str(FREE_LIMIT))
    [row] = ledger(api)["items"]
    assert row["status"] == "voided"
    assert (row["voidedBy"], row["voidReason"]) == ("alice@example.com", "Typed 50 for 5")
    assert row["voidedAt"] == "2026-11-15T12:00:00.000Z"


def test_voiding_a_month_grant_removes_it_from_its_month(api, acme):
    keep = granted(api, 30, "month")["grantId"]
    mistake = granted(api, 5000, "month")["grantId"]
    answer = voided(api, mistake)
    assert answer == {"action": "void", "grantId": mistake, "scope": "month", "currentUsage": 0,
                      "previousLimit": FREE_LIMIT + 5030, "newLimit": FREE_LIMIT + 30, "remaining": FREE_LIMIT + 30}
    stored, this_month = usage(api)
    assert (stored, this_month["grantedThisMonth"], this_month["limit"]) == (FREE_LIMIT, 30, FREE_LIMIT + 30)
    [entry] = audit_log(api, query="?action=credit_void")
    assert entry["details"] == {"grantId": mistake, "amount": 5000, "scope": "month", "reason": None,
                                "month": "2026-11"}
    assert [(row["id"], row["status"]) for row in ledger(api)["items"]] == [(mistake, "voided"), (keep, "active")]


def test_usage_already_counted_stays_after_a_void_and_consumption_is_refused(api, acme):
    grant_id = granted(api, 50, "month")["grantId"]
    consumed(api, 140)
    answer = voided(api, grant_id)
    assert (answer["newLimit"], answer["currentUsage"], answer["remaining"]) == (FREE_LIMIT, 140, 0)
    seen = quota_status(api)
    assert (seen["generationsUsed"], seen["generationsRemaining"], seen["isAtLimit"]) == (
        140, 0, True,
    )
    assert consume(api, 1).status_code == 402


def test_voiding_a_month_grant_whose_month_is_over_is_409(api, acme, clock):
    clock.set(LAST_MS_OF_NOVEMBER)
    grant_id = granted(api, 50, "month")["grantId"]
    clock.set(FIRST_MS_OF_DECEMBER)
    error = assert_error(void(api, grant_id), 409)
    assert "2026-11" in error["error"] and "expired" in error["error"]
    assert ledger(api)["items"][0]["status"] == "expired"
    assert audit_log(api, query="?action=credit_void") == []


def test_voiding_a_permanent_grant_below_zero_is_409(api, acme):
    grant_id = granted(api, 50)["grantId"]
    set_limit(api, 20)
    error = assert_error(void(api, grant_id), 409)
    assert "below 0" in error["error"]
    assert usage(api)[0] == 20
    assert ledger(api)["items"][0]["status"] == "active"


def test_voiding_a_permanent_grant_of_a_client_since_unlimited_is_409(api, acme):
    grant_id = granted(api, 50)["grantId"]
    set_limit(api, -1)
    error = assert_error(void(api, grant_id), 409)
    assert "unlimited" in error["error"]
    assert usage(api)[0] == -1


def test_voiding_a_month_grant_of_a_client_since_unlimited_is_allowed(api, acme):
    grant_id = granted(api, 50, "month")["grantId"]
    set_limit(api, -1)
    answer = voided(api, grant_id)
    assert (answer["previousLimit"], answer["newLimit"], answer["remaining"]) == (-1, -1, None)


def test_voiding_twice_is_409(api, acme):
    grant_id = granted(api, 50)["grantId"]
    voided(api, grant_id)
    error = assert_error(void(api, grant_id), 409)
    assert "already voided" in error["error"]
    assert usage(api)[0] == FREE_LIMIT
    assert len(audit_log(api, query="?action=credit_void")) == 1


def test_an_unknown_grant_or_one_of_another_client_is_404(api, acme):
    api.create_client("globex", "Globex")
    other = granted(api, 50, client_id="globex")["grantId"]
    assert_error(void(api, other), 404)
    assert_error(void(api, other + 1000), 404)
    assert_error(void(api, other, client_id="nobody"), 404)
    assert audit_log(api) == []


def test_a_void_is_replayed_for_its_idempotency_key(api, acme):
    grant_id = granted(api, 50)["grantId"]
    headers = {"Idempotency-Key": "void-1"}
    first = void(api, grant_id, headers=headers)
    assert first.status_code == 200
    again = void(api, grant_id, headers=headers)
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.get_json() == first.get_json()
    assert len(audit_log(api, query="?action=credit_void")) == 1


def test_a_month_grant_is_replayed_for_its_idempotency_key(api, acme):
    body = {"action": "grant", "amount": 5, "scope": "month"}
    first = api.post(CREDITS, json=body, headers={"Idempotency-Key": "g-1"})
    again = api.post(CREDITS, json=body, headers={"Idempotency-Key": "g-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert usage(api)[1]["grantedThisMonth"] == 5


def test_a_reset_keeps_this_months_grants(api, acme):
    granted(api, 50, "month")
    consumed(api, 120)
    reset = api.post(CREDITS, json={"action": "reset"}).get_json()
    assert (reset["previousUsage"], reset["limit"], reset["remaining"]) == (120, 150, 150)


def test_deleting_a_client_deletes_its_grants(app, api, acme):
    granted(api, 50, "month")
    assert api.delete("/api/admin/clients/acme").status_code == 204
    assert api.get("/api/admin/clients/acme/grants", key="read").status_code == 404
    with app.app_context():
        assert db.session().scalar(text("SELECT COUNT(*) FROM credit_grants WHERE client_id = 'acme'")) == 0


INVALID_BODIES = {
    "scope-unknown": ({"action": "grant", "amount": 5, "scope": "week"}, "scope"),
    "scope-null": ({"action": "grant", "amount": 5, "scope": None}, "scope"),
    "void-without-id": ({"action": "void"}, "grantId"),
    "void-id-zero": ({"action": "void", "grantId": 0}, "grantId"),
    "void-id-too-large": ({"action": "void", "grantId": 2**63}, "grantId"),
    "void-id-string": ({"action": "void", "grantId": "1"}, "grantId"),
    "void-with-amount": ({"action": "void", "grantId": 1, "amount": 5}, "amount"),
    "void-with-scope": ({"action": "void", "grantId": 1, "scope": "month"}, "scope"),
    "reset-with-scope": ({"action": "reset", "scope": "month"}, "scope"),
}


@pytest.mark.parametrize("body, field", INVALID_BODIES.values(), ids=INVALID_BODIES)
def test_invalid_bodies_are_400(api, acme, body, field):
    assert_error(api.post(CREDITS, json=body), 400, field)
    assert audit_log(api) == []


# ---- the ledger ------------------------------------------------------------------


def test_the_ledger_lists_grants_newest_first_with_every_field(api, acme, clock):
    clock.set("2026-10-10T10:00:00+00:00")
    october = granted(api, 5, "month", reason="October promo")["grantId"]
    clock.set(NOVEMBER)
    permanent = granted(api, 10, reason="Contract")["grantId"]
    month = granted(api, 20, "month")["grantId"]
    voided(api, month, reason="Mistake")
    page = ledger(api)
    assert (page["limit"], page["offset"], page["nextOffset"]) == (50, 0, None)
    assert page["items"] == [
        {"id": month, "amount": 20, "scope": "month", "month": "2026-11", "expiresAt": "2026-12-01T00:00:00.000Z",
         "reason": None, "adminId": "alice@example.com", "createdAt": "2026-11-15T12:00:00.000Z",
         "status": "voided", "voidedAt": "2026-11-15T12:00:00.000Z", "voidedBy": "alice@example.com",
         "voidReason": "Mistake"},
        {"id": permanent, "amount": 10, "scope": "permanent", "month": None, "expiresAt": None,
         "reason": "Contract", "adminId": "alice@example.com", "createdAt": "2026-11-15T12:00:00.000Z",
         "status": "active", "voidedAt": None, "voidedBy": None, "voidReason": None},
        {"id": october, "amount": 5, "scope": "month", "month": "2026-10", "expiresAt": "2026-11-01T00:00:00.000Z",
         "reason": "October promo", "adminId": "alice@example.com", "createdAt": "2026-10-10T10:00:00.000Z",
         "status": "expired", "voidedAt": None, "voidedBy": None, "voidReason": None},
    ]
    assert [row["id"] for row in ledger(api, "?status=active")["items"]] == [permanent]
    assert [row["id"] for row in ledger(api, "?status=expired")["items"]] == [october]
    assert [row["id"] for row in ledger(api, "?status=voided")["items"]] == [month]
    assert [row["id"] for row in ledger(api, "?scope=month")["items"]] == [month, october]
    assert [row["id"] for row in ledger(api, "?scope=permanent&status=voided")["items"]] == []


def test_the_ledger_pages(api, acme):
    ids = [granted(api, i + 1)["grantId"] for i in range(5)]
    first = ledger(api, "?limit=2")
    assert ([row["id"] for row in first["items"]], first["nextOffset"]) == (ids[:2:-1][:2], 2)
    last = ledger(api, "?limit=2&offset=4")
    assert ([row["id"] for row in last["items"]], last["nextOffset"]) == ([ids[0]], None)


@pytest.mark.parametrize("query, field", [
    ("?status=gone", "status"), ("?scope=year", "scope"), ("?limit=0", "limit"), ("?month=2026-11", "month"),
])
def test_bad_ledger_queries_are_400(api, acme, query, field):
    assert_error(api.get(GRANTS + query, key="read"), 400, field)


def test_the_ledger_of_an_unknown_client_is_404_and_needs_a_read_key(api, acme):
    assert_error(api.get("/api/admin/clients/nobody/grants", key="read"), 404)
    assert_error(api.get(GRANTS, key="service"), 403)
    assert_error(api.get(GRANTS, key=None), 401)
