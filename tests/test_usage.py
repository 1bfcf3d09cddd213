"""The platform's side: POST /api/clients/<id>/usage and GET /api/clients/<id>/quota-status."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from credits_service.extensions import db
from helpers import consume, consumed, granted, quota, quota_status, set_limit

NOW = "2026-11-15T12:00:00+00:00"
MONTH = "2026-11"
RESET_DATE = datetime(2026, 12, 1, tzinfo=UTC)
FREE_LIMIT = 100
USAGE = "/api/clients/acme/usage"
STATUS = "/api/clients/acme/quota-status"

USAGE_FIELDS = {"month", "generationCount", "limit", "remaining"}
REFUSAL_FIELDS = {"error", "month", "generationCount", "limit", "remaining", "generationsHeld"}
STATUS_FIELDS = {
    "plan", "month", "generationsUsed", "generationsHeld", "generationsLimit", "generationsRemaining", "baseLimit",
    "grantedThisMonth", "usagePercent", "isUnlimited", "isAtLimit", "isNearLimit", "resetDate",
    "storageUsedBytes", "storageQuotaMb", "storageRemainingBytes", "isStorageAtLimit",
}


@pytest.fixture(autouse=True)
def frozen(clock):
    clock.set(NOW)


def used_this_month(api, client_id="acme"):
    usage = quota(api, client_id)["usage"]
    assert usage["month"] == MONTH
    return usage["generationCount"]


def instant(text):
    return datetime.fromisoformat(text)


# ---- consuming -----------------------------------------------------------------


def test_consumption_answers_month_count_limit_and_remaining(api):
    api.create_client()
    response = consume(api, 7)
    assert response.status_code == 200
    assert response.get_json() == {"month": MONTH, "generationCount": 7, "limit": FREE_LIMIT, "remaining": 93}
    assert used_this_month(api) == 7


@pytest.mark.parametrize("body", [None, {}], ids=["no body", "empty object"])
def test_count_defaults_to_one(api, body):
    api.create_client()
    kwargs = {} if body is None else {"json": body}
    response = api.post(USAGE, key="service", **kwargs)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"month": MONTH, "generationCount": 1, "limit": FREE_LIMIT, "remaining": 99}


def test_counts_accumulate(api):
    api.create_client()
    assert consumed(api, 10)["generationCount"] == 10
    assert consumed(api, 5)["generationCount"] == 15
    last = consumed(api, 1)
    assert last == {"month": MONTH, "generationCount": 16, "limit": FREE_LIMIT, "remaining": FREE_LIMIT - 16}
    assert used_this_month(api) == 16


@pytest.mark.parametrize("limit", [26_843_546, 2_147_483_647])
def test_a_month_begins_under_the_largest_limits(api, clock, limit):
    """The first consumption of a month (no row for it yet) weighs the count against each usage
    threshold of the limit: 80 % of these limits is past a 32-bit integer."""
    api.create_client()
    set_limit(api, limit)
    clock.advance(days=31)  # a month nothing has touched yet
    quota_status(api)  # the key checked and cached: on PostgreSQL the consumption is then one statement
    first = consumed(api, 3)
    assert first["month"] != MONTH
    assert (first["generationCount"], first["limit"], first["remaining"]) == (3, limit, limit - 3)
    assert consumed(api, 2)["generationCount"] == 5


def test_exactly_reaching_the_limit_is_allowed(api):
    api.create_client()
    response = consume(api, FREE_LIMIT)
    assert response.status_code == 200
    assert response.get_json() == {"month": MONTH, "generationCount": FREE_LIMIT, "limit": FREE_LIMIT, "remaining": 0}


def test_going_over_the_limit_is_refused_with_402_and_changes_nothing(api):
    api.create_client()
    consumed(api, FREE_LIMIT)
    response = consume(api, 1)
    assert response.status_code == 402
    body = response.get_json()
    assert set(body) == REFUSAL_FIELDS
    assert body["month"] == MONTH
    assert body["generationCount"] == FREE_LIMIT
    assert body["limit"] == FREE_LIMIT
    assert body["remaining"] == 0
    assert "100" in body["error"]
    assert "2026-12-01" in body["error"]
    assert used_this_month(api) == FREE_LIMIT


def test_refusal_is_all_or_nothing(api):
    api.create_client()
    consumed(api, 95)
    response = consume(api, 10)
    assert response.status_code == 402
    body = response.get_json()
    assert {key: body[key] for key in USAGE_FIELDS} == {
        "month": MONTH, "generationCount": 95, "limit": FREE_LIMIT, "remaining": 5,
    }
    assert used_this_month(api) == 95
    # What does fit is still allowed afterwards.
    assert consumed(api, 5) == {"month": MONTH, "generationCount": FREE_LIMIT, "limit": FREE_LIMIT, "remaining": 0}


def test_a_count_above_the_whole_limit_is_refused_on_a_fresh_month(api):
    api.create_client()
    response = consume(api, FREE_LIMIT + 1)
    assert response.status_code == 402
    body = response.get_json()
    assert {key: body[key] for key in USAGE_FIELDS} == {
        "month": MONTH, "generationCount": 0, "limit": FREE_LIMIT, "remaining": FREE_LIMIT,
    }
    assert used_this_month(api) == 0


def test_the_reset_date_in_the_refusal_is_the_next_utc_month(api, clock):
    clock.set("2026-11-30T23:30:00+00:00")
    api.create_client()
    consumed(api, FREE_LIMIT)
    response = consume(api)
    assert response.status_code == 402
    assert "2026-12-01" in response.get_json()["error"]


def test_a_new_utc_month_starts_from_zero(api, clock):
    clock.set("2026-11-30T23:59:59+00:00")
    api.create_client()
    consumed(api, FREE_LIMIT)
    assert consume(api).status_code == 402
    clock.set("2026-12-01T00:00:00+00:00")
    assert consumed(api, 1) == {"month": "2026-12", "generationCount": 1, "limit": FREE_LIMIT, "remaining": 99}


def test_unlimited_client_is_never_refused(api):
    api.create_client(plan="enterprise")
    first = consumed(api, 10_000)
    assert first == {"month": MONTH, "generationCount": 10_000, "limit": -1, "remaining": None}
    for expected in (20_000, 30_000):
        assert consumed(api, 10_000) == {"month": MONTH, "generationCount": expected, "limit": -1, "remaining": None}


def test_granted_credits_count(api):
    api.create_client()
    granted(api, 50)
    assert consumed(api, 150) == {"month": MONTH, "generationCount": 150, "limit": 150, "remaining": 0}
    assert consume(api).status_code == 402


@pytest.mark.parametrize("count", [0, 10_001, -1, 1.5, 1.0, True, "5", None],
                         ids=["zero", "too big", "negative", "float", "integral float", "bool", "string", "null"])
def test_invalid_count_is_refused(api, count):
    api.create_client()
    response = consume(api, count)
    assert response.status_code == 400
    body = response.get_json()
    assert set(body) == {"error", "fields"}
    assert list(body["fields"]) == ["count"]
    assert used_this_month(api) == 0


@pytest.mark.parametrize("count", [1, 10_000])
def test_count_bounds_are_accepted(api, count):
    api.create_client(plan="enterprise")
    assert consumed(api, count)["generationCount"] == count


def test_unknown_field_is_refused(api):
    api.create_client()
    response = api.post(USAGE, json={"count": 1, "model": "large"}, key="service")
    assert response.status_code == 400
    body = response.get_json()
    assert "model" in body["fields"]
    assert used_this_month(api) == 0


def test_unknown_client_is_404(api):
    response = consume(api, 1, "nobody")
    assert response.status_code == 404
    assert set(response.get_json()) == {"error"}


@pytest.mark.parametrize("role", ["read", "write"])
def test_admin_keys_may_not_consume(api, role):
    api.create_client()
    response = api.post(USAGE, json={"count": 1}, key=role)
    assert response.status_code == 403
    assert set(response.get_json()) == {"error"}
    assert used_this_month(api) == 0


def test_consumption_needs_a_key(api):
    api.create_client()
    response = api.post(USAGE, json={"count": 1}, key=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert used_this_month(api) == 0


def test_consumption_writes_no_audit_entry(api):
    api.create_client()
    consumed(api, 3)
    assert consume(api, FREE_LIMIT).status_code == 402
    response = api.get("/api/admin/clients/acme/audit-log", key="read")
    assert response.status_code == 200
    assert response.get_json()["items"] == []


# ---- quota status --------------------------------------------------------------


@pytest.mark.parametrize("role", ["service", "read", "write"])
def test_quota_status_of_a_fresh_client(api, role):
    api.create_client()
    body = quota_status(api, key=role)
    assert set(body) == STATUS_FIELDS
    assert instant(body.pop("resetDate")) == RESET_DATE
    assert body == {
        "plan": "free", "month": MONTH, "generationsUsed": 0, "generationsHeld": 0, "generationsLimit": FREE_LIMIT,
        "generationsRemaining": FREE_LIMIT, "baseLimit": FREE_LIMIT, "grantedThisMonth": 0,
        "usagePercent": 0, "isUnlimited": False,
        "isAtLimit": False, "isNearLimit": False,
        "storageUsedBytes": 0, "storageQuotaMb": 1000, "storageRemainingBytes": 1000 * 1024 * 1024,
        "isStorageAtLimit": False,
    }


@pytest.mark.parametrize(
    ("used", "near", "at_limit"),
    [(1, False, False), (79, False, False), (80, True, False), (99, True, False), (100, True, True)],
)
def test_quota_status_near_and_at_limit(api, used, near, at_limit):
    api.create_client()
    consumed(api, used)
    body = quota_status(api)
    assert body["generationsUsed"] == used
    assert body["generationsLimit"] == FREE_LIMIT
    assert body["generationsRemaining"] == FREE_LIMIT - used
    assert body["usagePercent"] == pytest.approx(used * 100 / FREE_LIMIT)
    assert body["isNearLimit"] is near
    assert body["isAtLimit"] is at_limit


def test_quota_status_of_an_unlimited_client(api):
    api.create_client(plan="enterprise")
    consumed(api, 5_000)
    body = quota_status(api)
    assert instant(body.pop("resetDate")) == RESET_DATE
    assert body.pop("usagePercent") in (0, None)
    assert body == {
        "plan": "enterprise", "month": MONTH, "generationsUsed": 5_000, "generationsHeld": 0, "generationsLimit": -1,
        "generationsRemaining": None, "baseLimit": -1, "grantedThisMonth": 0, "isUnlimited": True,
        "isAtLimit": False, "isNearLimit": False,
        "storageUsedBytes": 0, "storageQuotaMb": -1, "storageRemainingBytes": None, "isStorageAtLimit": False,
    }


def test_quota_status_uses_the_stored_limit_with_granted_credits(api):
    api.create_client()
    granted(api, 50)
    consumed(api, 119)
    body = quota_status(api)
    assert body["plan"] == "free"
    assert body["generationsLimit"] == 150
    assert body["generationsRemaining"] == 31
    assert body["isNearLimit"] is False  # 119 of 150 is 79.3 %
    assert body["isAtLimit"] is False
    consumed(api, 1)
    body = quota_status(api)
    assert body["usagePercent"] == pytest.approx(80)
    assert body["isNearLimit"] is True
    consumed(api, 30)
    body = quota_status(api)
    assert (body["generationsUsed"], body["generationsRemaining"], body["isAtLimit"]) == (150, 0, True)


def test_quota_status_follows_the_utc_month(api, clock):
    clock.set("2026-11-30T23:59:59+00:00")
    api.create_client()
    consumed(api, 42)
    assert quota_status(api)["generationsUsed"] == 42
    clock.set("2026-12-01T00:00:00+00:00")
    body = quota_status(api)
    assert (body["month"], body["generationsUsed"]) == ("2026-12", 0)
    assert instant(body["resetDate"]) == datetime(2027, 1, 1, tzinfo=UTC)


def test_quota_status_of_unknown_client_is_404(api):
    response = api.get("/api/clients/nobody/quota-status", key="service")
    assert response.status_code == 404
    assert set(response.get_json()) == {"error"}


def test_quota_status_needs_a_key(api):
    api.create_client()
    response = api.get(STATUS, key=None)
    assert response.status_code == 401


# ---- counts near the 32-bit edge -------------------------------------------------


def set_count(app, count, client_id="acme"):
    """Put this month's count where no test could consume its way to in time."""
    with app.app_context():
        session = db.session()
        session.execute(
            text("UPDATE usage_records SET generation_count = :count WHERE client_id = :id AND month = :month"),
            {"count": count, "id": client_id, "month": MONTH},
        )
        session.commit()


def test_a_count_past_the_largest_limit_is_refused_not_overflowed(api, app):
    api.create_client("acme", "Acme Corp")
    set_limit(api, 2147483647)
    consumed(api, 1)
    set_count(app, 2147483000)
    response = consume(api, 1000)
    assert response.status_code == 402
    assert response.get_json()["generationCount"] == 2147483000
    assert consumed(api, 647)["remaining"] == 0


def test_an_unlimited_count_grows_past_32_bits(api, app):
    api.create_client("acme", "Acme Corp", plan="enterprise")
    consumed(api, 1)
    set_count(app, 2147483647)
    assert consumed(api, 1)["generationCount"] == 2147483648


def test_near_limit_is_exact_not_rounded(api, app):
    api.create_client("acme", "Acme Corp")
    set_limit(api, 1000000)
    consumed(api, 1)
    set_count(app, 799995)
    status = quota_status(api)
    assert status["usagePercent"] == 80.0  # 79.9995, rounded for display
    assert status["isNearLimit"] is False
    set_count(app, 800000)
    assert quota_status(api)["isNearLimit"] is True
