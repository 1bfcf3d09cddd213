"""A client's quota: GET the overview, PUT plan and limits, and the audit entry each PUT writes."""

import json
from datetime import datetime

import pytest

from conftest import assert_error
from helpers import audit_log, consumed, quota, succeeded

PLAN_DEFAULTS = {
    "free": (100, 1000),
    "starter": (500, 5000),
    "pro": (2000, 20000),
    "enterprise": (-1, -1),
}
MAX_INT = 2147483647


def quota_path(client_id="acme"):
    return f"/api/admin/clients/{client_id}/quota"


def limits(api, client_id="acme"):
    stored = quota(api, client_id)["quota"]
    return stored["plan"], stored["monthlyGenerationLimit"], stored["storageQuotaMb"]


def audit_entries(api, client_id="acme"):
    return audit_log(api, client_id, "?limit=100")


def put_quota(api, body, client_id="acme"):
    return succeeded(api.put(quota_path(client_id), json=body))


def snapshot(plan, monthly_generation_limit, storage_quota_mb):
    """What previousValue / newValue hold, once parsed."""
    return {"plan": plan, "monthlyGenerationLimit": monthly_generation_limit, "storageQuotaMb": storage_quota_mb}


def instant(text):
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


# ---- GET ---------------------------------------------------------------------


def test_overview_shape_for_a_new_client(api, clock):
    clock.set("2026-11-25T12:00:00+00:00")
    api.create_client("acme", "Acme Corp")
    body = quota(api)
    assert set(body) == {"quota", "usage", "auditLog"}
    stored, usage = body["quota"], body["usage"]
    assert set(stored) == {"clientId", "plan", "monthlyGenerationLimit", "storageQuotaMb", "updatedAt"}
    assert (stored["clientId"], stored["plan"], stored["monthlyGenerationLimit"], stored["storageQuotaMb"]) == (
        "acme", "free", 100, 1000,
    )
    assert instant(stored["updatedAt"]) == datetime.fromisoformat("2026-11-25T12:00:00+00:00")
    assert set(usage) == {
        "month", "generationCount", "limit", "baseLimit", "grantedThisMonth", "held", "remaining", "isUnlimited",
        "resetDate", "storageUsedBytes",
    }
    assert (usage["month"], usage["generationCount"], usage["limit"], usage["baseLimit"],
            usage["grantedThisMonth"], usage["held"], usage["remaining"], usage["isUnlimited"]) == (
        "2026-11", 0, 100, 100, 0, 0, 100, False,
    )
    assert instant(usage["resetDate"]) == datetime.fromisoformat("2026-12-01T00:00:00+00:00")
    assert body["auditLog"] == []


def test_usage_counts_this_months_consumption(api):
    api.create_client("acme", "Acme Corp")
    consumed(api, 7)
    usage = quota(api)["usage"]
    assert (usage["generationCount"], usage["remaining"], usage["isUnlimited"]) == (7, 93, False)


def test_enterprise_is_unlimited(api):
    api.create_client("acme", "Acme Corp", plan="enterprise")
    consumed(api, 5)
    usage = quota(api)["usage"]
    assert (usage["generationCount"], usage["remaining"], usage["isUnlimited"]) == (5, None, True)


def test_audit_log_holds_the_10_newest_entries_newest_first(api):
    api.create_client("acme", "Acme Corp")
    for i in range(1, 13):
        put_quota(api, {"monthlyGenerationLimit": i, "reason": f"change {i}"})
    recent = quota(api)["auditLog"]
    assert [entry["details"]["reason"] for entry in recent] == [f"change {i}" for i in range(12, 2, -1)]
    assert [json.loads(entry["newValue"])["monthlyGenerationLimit"] for entry in recent] == list(range(12, 2, -1))
    assert recent == audit_entries(api)[:10]


def test_get_unknown_client_is_404(api):
    assert_error(api.get(quota_path("nobody"), key="read"), 404)


# ---- PUT: what changes -------------------------------------------------------


@pytest.mark.parametrize("plan", list(PLAN_DEFAULTS))
def test_plan_change_applies_the_plan_defaults(api, clock, plan):
    api.create_client("acme", "Acme Corp", plan="pro" if plan != "pro" else "starter")
    put_quota(api, {"monthlyGenerationLimit": 7, "storageQuotaMb": 8})
    clock.set("2026-11-25T12:00:00+00:00")
    body = put_quota(api, {"plan": plan})
    assert set(body) == {"clientId", "plan", "monthlyGenerationLimit", "storageQuotaMb", "updatedAt"}
    assert (body["clientId"], body["plan"], body["monthlyGenerationLimit"], body["storageQuotaMb"]) == (
        "acme", plan, *PLAN_DEFAULTS[plan],
    )
    assert instant(body["updatedAt"]) == datetime.fromisoformat("2026-11-25T12:00:00+00:00")
    assert limits(api) == (plan, *PLAN_DEFAULTS[plan])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"plan": "pro", "monthlyGenerationLimit": 1234}, ("pro", 1234, 20000)),
        ({"plan": "pro", "storageQuotaMb": 55}, ("pro", 2000, 55)),
        ({"plan": "enterprise", "monthlyGenerationLimit": 10, "storageQuotaMb": 20}, ("enterprise", 10, 20)),
        ({"plan": "starter", "monthlyGenerationLimit": -1}, ("starter", -1, 5000)),
    ],
)
def test_explicit_limits_override_the_plan_defaults(api, body, expected):
    api.create_client("acme", "Acme Corp")
    answer = put_quota(api, body)
    assert (answer["plan"], answer["monthlyGenerationLimit"], answer["storageQuotaMb"]) == expected
    assert limits(api) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"monthlyGenerationLimit": 42}, ("starter", 42, 5000)),
        ({"storageQuotaMb": 42}, ("starter", 500, 42)),
        ({"monthlyGenerationLimit": 1, "storageQuotaMb": 2}, ("starter", 1, 2)),
    ],
)
def test_limit_only_change_keeps_the_plan(api, body, expected):
    api.create_client("acme", "Acme Corp", plan="starter")
    answer = put_quota(api, body)
    assert (answer["plan"], answer["monthlyGenerationLimit"], answer["storageQuotaMb"]) == expected
    assert limits(api) == expected


@pytest.mark.parametrize("value", [-1, 0, MAX_INT])
@pytest.mark.parametrize("field", ["monthlyGenerationLimit", "storageQuotaMb"])
def test_integer_fields_accept_their_range(api, field, value):
    api.create_client("acme", "Acme Corp")
    assert put_quota(api, {field: value})[field] == value
    assert quota(api)["quota"][field] == value


def test_unlimited_limit_gives_null_remaining(api):
    api.create_client("acme", "Acme Corp")
    put_quota(api, {"monthlyGenerationLimit": -1})
    usage = quota(api)["usage"]
    assert (usage["remaining"], usage["isUnlimited"]) == (None, True)


# ---- PUT: what is refused ----------------------------------------------------


@pytest.mark.parametrize("value", [100.0, 1.5, True, False, "100", None, -2, MAX_INT + 1, [100], {"n": 1}])
@pytest.mark.parametrize("field", ["monthlyGenerationLimit", "storageQuotaMb"])
def test_integer_fields_refuse_everything_but_integers_in_range(api, field, value):
    api.create_client("acme", "Acme Corp")
    assert_error(api.put(quota_path(), json={field: value}), 400, field)
    assert limits(api) == ("free", 100, 1000)
    assert audit_entries(api) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": "only a reason"}],
    ids=["empty", "reason-only"],
)
def test_a_change_is_required(api, body):
    api.create_client("acme", "Acme Corp")
    assert_error(api.put(quota_path(), json=body), 400)
    assert audit_entries(api) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": "gold"}, "plan"),
        ({"plan": "pro", "reason": "r" * 501}, "reason"),
        ({"plan": "pro", "reason": 5}, "reason"),
        ({"plan": "pro", "why": "x"}, "why"),
        ({"plan": "pro", "clientId": "other"}, "clientId"),
        ({"plan": "pro", "monthly_generation_limit": 5}, "monthly_generation_limit"),
    ],
    ids=["unknown-plan", "reason-501", "reason-number", "unknown", "client-id", "snake-case"],
)
def test_invalid_body_is_refused(api, body, field):
    api.create_client("acme", "Acme Corp")
    assert_error(api.put(quota_path(), json=body), 400, field)
    assert limits(api) == ("free", 100, 1000)
    assert audit_entries(api) == []


def test_reason_of_exactly_500_chars_is_accepted(api):
    api.create_client("acme", "Acme Corp")
    reason = "r" * 500
    put_quota(api, {"plan": "pro", "reason": reason})
    assert audit_entries(api)[0]["details"]["reason"] == reason


def test_put_unknown_client_is_404(api):
    assert_error(api.put(quota_path("nobody"), json={"plan": "pro"}), 404)


@pytest.mark.parametrize(("key", "status"), [("read", 403), ("service", 403), (None, 401)])
def test_only_write_keys_change_the_quota(api, key, status):
    api.create_client("acme", "Acme Corp")
    before = quota(api)
    assert_error(api.put(quota_path(), json={"plan": "pro", "reason": "no"}, key=key), status)
    assert quota(api) == before
    assert audit_entries(api) == []


# ---- PUT: the audit entry ----------------------------------------------------


def test_plan_change_writes_one_plan_change_entry(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-25T12:00:00+00:00")
    put_quota(api, {"plan": "pro", "storageQuotaMb": 77, "reason": "upgrade"})
    [entry] = audit_entries(api)
    assert set(entry) == {"id", "clientId", "adminId", "action", "details", "previousValue", "newValue", "createdAt",
                          "seq", "hash"}
    assert entry["clientId"] == "acme"
    assert entry["adminId"] == "alice@example.com"
    assert entry["action"] == "plan_change"
    assert entry["details"]["reason"] == "upgrade"
    assert json.loads(entry["previousValue"]) == snapshot("free", 100, 1000)
    assert json.loads(entry["newValue"]) == snapshot("pro", 2000, 77)
    assert instant(entry["createdAt"]) == datetime.fromisoformat("2026-11-25T12:00:00+00:00")


def test_limit_change_writes_one_limit_change_entry(api):
    api.create_client("acme", "Acme Corp", plan="starter")
    put_quota(api, {"monthlyGenerationLimit": 650, "reason": "one-off bump"})
    [entry] = audit_entries(api)
    assert (entry["action"], entry["adminId"], entry["clientId"]) == ("limit_change", "alice@example.com", "acme")
    assert entry["details"]["reason"] == "one-off bump"
    assert json.loads(entry["previousValue"]) == snapshot("starter", 500, 5000)
    assert json.loads(entry["newValue"]) == snapshot("starter", 650, 5000)


def test_same_plan_in_the_body_is_still_a_plan_change(api):
    api.create_client("acme", "Acme Corp", plan="pro")
    put_quota(api, {"monthlyGenerationLimit": 5})
    put_quota(api, {"plan": "pro", "reason": "back to defaults"})
    newest, older = audit_entries(api)
    assert (older["action"], newest["action"]) == ("limit_change", "plan_change")
    assert json.loads(newest["previousValue"]) == snapshot("pro", 5, 20000)
    assert json.loads(newest["newValue"]) == snapshot("pro", 2000, 20000)
    assert limits(api) == ("pro", 2000, 20000)


def test_each_put_writes_exactly_one_entry_chained_by_its_values(api):
    api.create_client("acme", "Acme Corp")
    bodies = [
        {"plan": "starter"},
        {"monthlyGenerationLimit": 600},
        {"storageQuotaMb": 6000, "monthlyGenerationLimit": 700},
        {"plan": "enterprise", "reason": "big deal"},
        {"plan": "free", "storageQuotaMb": 1},
    ]
    for count, body in enumerate(bodies, start=1):
        put_quota(api, body)
        assert len(audit_entries(api)) == count
    entries = list(reversed(audit_entries(api)))
    assert [entry["action"] for entry in entries] == [
        "plan_change", "limit_change", "limit_change", "plan_change", "plan_change",
    ]
    expected = [
        snapshot("free", 100, 1000),
        snapshot("starter", 500, 5000),
        snapshot("starter", 600, 5000),
        snapshot("starter", 700, 6000),
        snapshot("enterprise", -1, -1),
        snapshot("free", 100, 1),
    ]
    for entry, before, after in zip(entries, expected[:-1], expected[1:], strict=True):
        assert json.loads(entry["previousValue"]) == before
        assert json.loads(entry["newValue"]) == after
    assert entries[3]["details"]["reason"] == "big deal"

