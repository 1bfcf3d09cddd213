"""Storage: a level the platform moves by deltas, never past the client's storage quota nor below
zero, shown in quota-status, and set by an admin's audited reconciliation."""

import pytest

from conftest import assert_error
from helpers import audit_log, quota, quota_status, succeeded

MIB = 1024 * 1024
STORAGE = "/api/clients/acme/storage"


def move(api, delta, reference=None, headers=None):
    body = {"deltaBytes": delta}
    if reference is not None:
        body["reference"] = reference
    return api.post(STORAGE, json=body, key="service", headers=headers)


def moved(api, delta, **kwargs):
    return succeeded(move(api, delta, **kwargs))


def set_quota(api, megabytes):
    succeeded(api.put("/api/admin/clients/acme/quota", json={"storageQuotaMb": megabytes}))


def stored(api):
    status = quota_status(api)
    return (status["storageUsedBytes"], status["storageQuotaMb"], status["storageRemainingBytes"],
            status["isStorageAtLimit"])


@pytest.fixture
def acme(api):
    client = api.create_client("acme", "Acme Corp")
    set_quota(api, 1)
    return client


def test_a_delta_moves_the_level_and_quota_status_shows_it(api, acme):
    assert moved(api, 600_000, reference="img-1") == {"usedBytes": 600_000, "quotaMb": 1, "remainingBytes": MIB - 600_000,
                                                      "isUnlimited": False}
    assert stored(api) == (600_000, 1, MIB - 600_000, False)
    assert quota(api)["usage"]["storageUsedBytes"] == 600_000
    assert moved(api, -100_000)["usedBytes"] == 500_000


def test_a_delta_past_the_quota_is_402_and_changes_nothing(api, acme):
    moved(api, 1_000_000)
    refused = move(api, 48_577)  # one byte too many
    assert refused.status_code == 402
    body = refused.get_json()
    assert body == {"error": "Not enough storage: 48,577 bytes to add, 48,576 left of the storage quota of 1 MB "
                             "(1,048,576 bytes); 1,000,000 bytes are stored.",
                    "usedBytes": 1_000_000, "quotaMb": 1, "remainingBytes": 48_576}
    assert moved(api, 48_576)["remainingBytes"] == 0  # exactly what is left fits
    assert stored(api) == (MIB, 1, 0, True)


def test_freeing_below_zero_is_409_and_changes_nothing(api, acme):
    moved(api, 1000)
    refused = move(api, -1001)
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["usedBytes"] == 1000
    assert body["error"].startswith("Freeing 1,001 bytes would take the client's storage below zero: 1,000 bytes")
    assert "reconcile" in body["error"]
    assert stored(api)[0] == 1000


def test_an_unlimited_client_takes_any_delta(api, acme):
    set_quota(api, -1)
    assert moved(api, 10**12) == {"usedBytes": 10**12, "quotaMb": -1, "remainingBytes": None, "isUnlimited": True}
    assert stored(api) == (10**12, -1, None, False)


def test_a_smaller_quota_makes_the_next_add_402_naming_it_and_freeing_still_works(api, acme):
    set_quota(api, 5)
    moved(api, 3 * MIB)
    succeeded(api.put("/api/admin/clients/acme/quota", json={"plan": "free"}))  # 1000 MB
    succeeded(api.put("/api/admin/clients/acme/quota", json={"storageQuotaMb": 2}))  # below what it stores
    assert stored(api) == (3 * MIB, 2, 0, True)
    refused = move(api, 1)
    assert refused.status_code == 402
    assert "the storage quota of 2 MB (2,097,152 bytes)" in refused.get_json()["error"]
    assert moved(api, -MIB)["usedBytes"] == 2 * MIB  # freeing is never refused while something is stored
    assert stored(api)[3] is True
    assert moved(api, -1)["remainingBytes"] == 1
    assert stored(api)[3] is False


def test_a_retried_delta_moves_the_level_once(api, acme):
    first = move(api, 1000, headers={"Idempotency-Key": "store-img-1"})
    again = move(api, 1000, headers={"Idempotency-Key": "store-img-1"})
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.get_json() == first.get_json()
    assert stored(api)[0] == 1000
    refused = move(api, MIB, headers={"Idempotency-Key": "store-too-much"})
    replayed = move(api, MIB, headers={"Idempotency-Key": "store-too-much"})
    assert (refused.status_code, replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (402, 402, "true")


def test_storage_does_not_reset_with_the_month(api, acme, clock):
    moved(api, 5000)
    clock.set("2026-12-01T00:00:01+00:00")
    assert stored(api)[0] == 5000


def test_reconciling_sets_the_level_and_is_audited(api, acme):
    moved(api, 5000)
    body = succeeded(api.put("/api/admin/clients/acme/storage",
                             json={"usedBytes": 7000, "reason": "storage system inventory"}))
    assert body == {"usedBytes": 7000, "quotaMb": 1, "remainingBytes": MIB - 7000, "isUnlimited": False}
    assert stored(api)[0] == 7000
    entry = audit_log(api)[0]
    assert (entry["action"], entry["previousValue"], entry["newValue"], entry["adminId"]) == (
        "storage_reconcile", "5000", "7000", "alice@example.com")
    assert entry["details"] == {"previousBytes": 5000, "newBytes": 7000, "reason": "storage system inventory"}


def test_a_reconciliation_may_set_the_level_over_the_quota(api, acme):
    succeeded(api.put("/api/admin/clients/acme/storage", json={"usedBytes": 2 * MIB, "reason": "it is what it is"}))
    assert stored(api) == (2 * MIB, 1, 0, True)
    assert move(api, 1).status_code == 402


def test_storage_of_an_unknown_client_is_404(api):
    assert_error(api.post("/api/clients/nobody/storage", json={"deltaBytes": 1}, key="service"), 404)
    assert_error(api.put("/api/admin/clients/nobody/storage", json={"usedBytes": 1, "reason": "r"}), 404)


INVALID_DELTAS = {
    "zero": {"deltaBytes": 0},
    "too large": {"deltaBytes": 10**12 + 1},
    "too small": {"deltaBytes": -(10**12) - 1},
    "a float": {"deltaBytes": 1.5},
    "a string": {"deltaBytes": "1"},
    "missing": {},
    "reference too long": {"deltaBytes": 1, "reference": "r" * 201},
    "unknown field": {"deltaBytes": 1, "bytes": 1},
}


@pytest.mark.parametrize("body", INVALID_DELTAS.values(), ids=INVALID_DELTAS)
def test_an_invalid_delta_is_400_and_changes_nothing(api, acme, body):
    assert_error(api.post(STORAGE, json=body, key="service"), 400)
    assert stored(api)[0] == 0


INVALID_RECONCILIATIONS = {
    "negative": {"usedBytes": -1, "reason": "r"},
    "no reason": {"usedBytes": 1},
    "blank reason": {"usedBytes": 1, "reason": ""},
    "a float": {"usedBytes": 1.0, "reason": "r"},
}


@pytest.mark.parametrize("body", INVALID_RECONCILIATIONS.values(), ids=INVALID_RECONCILIATIONS)
def test_an_invalid_reconciliation_is_400_and_audits_nothing(api, acme, body):
    before = audit_log(api)
    assert_error(api.put("/api/admin/clients/acme/storage", json=body), 400)
    assert audit_log(api) == before


def test_no_level_passes_an_exabyte_even_unlimited(api, acme):
    set_quota(api, -1)
    assert_error(api.put("/api/admin/clients/acme/storage", json={"usedBytes": 10**18 + 1, "reason": "r"}), 400,
                 "usedBytes")
    succeeded(api.put("/api/admin/clients/acme/storage", json={"usedBytes": 10**18, "reason": "r"}))
    refused = move(api, 1)
    assert refused.status_code == 402
    assert refused.get_json()["error"].startswith("Not enough storage: 1 bytes to add would pass "
                                                  "1,000,000,000,000,000,000 bytes")
    assert moved(api, -1)["usedBytes"] == 10**18 - 1
