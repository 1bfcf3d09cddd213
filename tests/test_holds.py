"""Holds: credits reserved while a generation runs, captured or released exactly once, lapsing at
their expiresAt to the millisecond with no sweep, and counted wherever the limit is shown."""

from datetime import datetime

import pytest

from conftest import assert_error, config_for
from helpers import (
    consume,
    consumed,
    held,
    hold,
    quota,
    quota_status,
    resolve,
    set_limit,
    succeeded,
    usage_months,
)

HOLDS = "/api/clients/acme/holds"


def instant(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def acme(api):
    """A client with a limit of 10."""
    client = api.create_client("acme", "Acme Corp")
    set_limit(api, 10)
    return client


def figures(api):
    status = quota_status(api)
    return status["generationsUsed"], status["generationsHeld"], status["generationsRemaining"]


# ---- placing -------------------------------------------------------------------


def test_a_hold_reserves_its_count_everywhere_the_limit_is_shown(api, acme, clock):
    placed = held(api, 4, ttl_seconds=600, reference="job-7")
    assert set(placed) == {"holdId", "status", "count", "month", "expiresAt", "reference", "generationsHeld",
                           "generationsRemaining"}
    assert (placed["status"], placed["count"], placed["month"], placed["reference"]) == ("held", 4, "2026-11", "job-7")
    assert (placed["generationsHeld"], placed["generationsRemaining"]) == (4, 6)
    assert instant(placed["expiresAt"]) == datetime.fromisoformat("2026-11-15T12:10:00+00:00")
    status = quota_status(api)
    assert (status["generationsUsed"], status["generationsHeld"], status["generationsRemaining"],
            status["usagePercent"], status["isNearLimit"], status["isAtLimit"]) == (0, 4, 6, 40.0, False, False)
    usage = quota(api)["usage"]
    assert (usage["generationCount"], usage["held"], usage["remaining"]) == (0, 4, 6)
    assert consumed(api, 2)["remaining"] == 4  # a consumption's remaining counts held credits too


def test_a_hold_is_all_or_nothing(api, acme):
    consumed(api, 3)
    held(api, 5)
    refused = hold(api, 3)  # 3 used + 5 held + 3 > 10
    assert refused.status_code == 402
    body = refused.get_json()
    assert set(body) == {"error", "month", "generationCount", "limit", "remaining", "generationsHeld"}
    assert (body["generationCount"], body["limit"], body["remaining"], body["generationsHeld"]) == (3, 10, 2, 5)
    assert body["error"].startswith("Not enough credits to hold 3: 2 left of the monthly generation limit of 10 "
                                    "(3 used and 5 held in 2026-11).")
    assert figures(api) == (3, 5, 2)
    assert len(succeeded(api.get(HOLDS, key="read"))["items"]) == 1
    assert held(api, 2)["generationsRemaining"] == 0  # exactly what is left fits


def test_an_unlimited_client_always_gets_its_hold(api, acme):
    assert api.put("/api/admin/clients/acme/quota", json={"plan": "enterprise"}).status_code == 200
    placed = held(api, 10_000)
    assert (placed["generationsHeld"], placed["generationsRemaining"]) == (10_000, None)
    assert quota_status(api)["generationsHeld"] == 10_000


def test_holds_filling_the_limit_refuse_a_consumption_and_a_release_lets_exactly_that_many_through(api, acme):
    first, second = held(api, 6), held(api, 4)
    refused = consume(api, 1)
    assert refused.status_code == 402
    body = refused.get_json()
    assert (body["remaining"], body["generationsHeld"]) == (0, 10)
    assert "0 used and 10 held" in body["error"]
    succeeded(resolve(api, second["holdId"], "release"))
    assert [consume(api, 1).status_code for _ in range(5)] == [200, 200, 200, 200, 402]
    assert figures(api) == (4, 6, 0)
    assert first["holdId"] != second["holdId"]


# ---- capturing and releasing, once ---------------------------------------------------


def test_capturing_all_of_a_hold_counts_it_as_used(api, acme, clock):
    placed = held(api, 4)
    clock.advance(seconds=30)
    captured = succeeded(resolve(api, placed["holdId"], "capture"))
    assert captured == {"holdId": placed["holdId"], "status": "captured", "count": 4, "capturedCount": 4,
                        "releasedCount": 0, "month": "2026-11", "generationCount": 4, "generationsHeld": 0,
                        "generationsRemaining": 6}
    assert figures(api) == (4, 0, 6)
    read = succeeded(api.get(f"{HOLDS}/{placed['holdId']}", key="read"))
    assert (read["status"], read["capturedCount"], instant(read["resolvedAt"])) == (
        "captured", 4, datetime.fromisoformat("2026-11-15T12:00:30+00:00"))


def test_capturing_part_of_a_hold_releases_the_rest_in_the_same_go(api, acme):
    placed = held(api, 5)
    captured = succeeded(resolve(api, placed["holdId"], "capture", count=2))
    assert (captured["capturedCount"], captured["releasedCount"], captured["generationCount"],
            captured["generationsRemaining"]) == (2, 3, 2, 8)
    assert figures(api) == (2, 0, 8)
    [month] = usage_months(api)
    assert (month["generationCount"], month["consumedCount"], month["capturedCount"], month["refundedCount"]) == (
        2, 0, 2, 0)


def test_capturing_nothing_is_a_release_in_effect(api, acme):
    placed = held(api, 3)
    captured = succeeded(resolve(api, placed["holdId"], "capture", count=0))
    assert (captured["status"], captured["capturedCount"], captured["releasedCount"]) == ("captured", 0, 3)
    assert figures(api) == (0, 0, 10)


def test_capturing_more_than_the_hold_is_refused_and_changes_nothing(api, acme):
    placed = held(api, 3)
    response = resolve(api, placed["holdId"], "capture", count=4)
    assert response.status_code == 409
    assert response.get_json() == {"status": "held", "error": f"Hold {placed['holdId']} holds 3; 4 cannot be captured"
                                                              " from it: capture at most 3. Nothing changed."}
    assert figures(api) == (0, 3, 7)
    assert succeeded(api.get(f"{HOLDS}/{placed['holdId']}", key="read"))["status"] == "held"


def test_releasing_a_hold_gives_all_of_it_back(api, acme):
    placed = held(api, 7)
    released = succeeded(resolve(api, placed["holdId"], "release"))
    assert (released["status"], released["capturedCount"], released["releasedCount"], released["generationCount"],
            released["generationsRemaining"]) == ("released", 0, 7, 0, 10)
    assert figures(api) == (0, 0, 10)


@pytest.mark.parametrize(("first", "then"), [("capture", "capture"), ("capture", "release"),
                                             ("release", "release"), ("release", "capture")])
def test_a_hold_resolves_exactly_once(api, acme, first, then):
    placed = held(api, 2)
    succeeded(resolve(api, placed["holdId"], first))
    refused = resolve(api, placed["holdId"], then)
    assert refused.status_code == 409
    body = refused.get_json()
    status = "captured" if first == "capture" else "released"
    assert body["status"] == status
    assert body["error"].startswith(f"Hold {placed['holdId']} is {status} (since ")
    assert figures(api) == ((2, 0, 8) if first == "capture" else (0, 0, 10))


def test_an_unknown_hold_or_another_clients_is_404(api, acme):
    api.create_client("other", "Other")
    theirs = held(api, 1, client_id="other")
    for path in (f"{HOLDS}/{theirs['holdId']}", f"{HOLDS}/999"):
        assert_error(api.get(path, key="read"), 404)
        assert_error(api.post(f"{path}/capture", json={}, key="service"), 404)
        assert_error(api.post(f"{path}/release", json={}, key="service"), 404)
    assert quota_status(api, client_id="other")["generationsHeld"] == 1


# ---- expiry: by the clock alone, to the millisecond --------------------------------------


def test_a_hold_stops_counting_at_its_expiry_without_a_sweep(api, acme, clock):
    placed = held(api, 6, ttl_seconds=1)
    clock.advance(milliseconds=999)
    assert figures(api) == (0, 6, 4)
    assert succeeded(api.get(f"{HOLDS}/{placed['holdId']}", key="read"))["status"] == "held"
    clock.advance(milliseconds=1)  # at expiresAt exactly
    assert figures(api) == (0, 0, 10)
    read = succeeded(api.get(f"{HOLDS}/{placed['holdId']}", key="read"))
    assert (read["status"], read["resolvedAt"], read["releasedCount"]) == ("expired", read["expiresAt"], 6)
    refused = resolve(api, placed["holdId"], "capture")
    assert (refused.status_code, refused.get_json()["status"]) == (409, "expired")
    # Its credits are free again, though nothing has marked it in storage.
    assert consumed(api, 10)["remaining"] == 0


def test_the_sweep_marks_lapsed_holds_expired_in_storage_and_changes_no_figure(api, acme, clock, runner):
    lapsed, live = held(api, 3, ttl_seconds=60), held(api, 2, ttl_seconds=3600)
    clock.advance(minutes=5)
    before = (figures(api), quota(api)["usage"])
    result = runner.invoke(args=["holds", "sweep"])
    assert result.exit_code == 0, result.output
    assert result.output == "Marked 1 lapsed hold(s) expired.\n"
    assert (figures(api), quota(api)["usage"]) == before == ((0, 2, 8), before[1])
    assert succeeded(api.get(f"{HOLDS}/{lapsed['holdId']}", key="read"))["status"] == "expired"
    assert succeeded(api.get(f"{HOLDS}/{live['holdId']}", key="read"))["status"] == "held"
    assert runner.invoke(args=["holds", "sweep"]).output == "Marked 0 lapsed hold(s) expired.\n"


# ---- a hold belongs to the month it was made in ----------------------------------------


def test_a_hold_captured_after_its_month_counts_in_that_month(api, acme, clock):
    clock.set("2026-11-30T23:50:00+00:00")
    placed = held(api, 4, ttl_seconds=3600)
    assert placed["month"] == "2026-11"
    clock.set("2026-12-01T00:20:00+00:00")
    assert figures(api) == (0, 0, 10)  # December's limit owes nothing to a November hold
    captured = succeeded(resolve(api, placed["holdId"], "capture"))
    assert (captured["month"], captured["generationCount"]) == ("2026-11", 4)
    months = {m["month"]: m["generationCount"] for m in usage_months(api, query="?from=2026-11&to=2026-12")}
    assert months == {"2026-11": 4}
    assert figures(api) == (0, 0, 10)


@pytest.mark.parametrize("ending", ["release", "expiry"])
def test_a_hold_ended_after_its_month_gives_nothing_to_a_month_that_is_over(api, acme, clock, ending):
    clock.set("2026-11-30T23:50:00+00:00")
    consumed(api, 3)
    placed = held(api, 4, ttl_seconds=1800)
    clock.set("2026-12-01T00:10:00+00:00")
    if ending == "release":
        succeeded(resolve(api, placed["holdId"], "release"))
    else:
        clock.set("2026-12-01T00:30:00+00:00")
    months = {m["month"]: (m["generationCount"], m["capturedCount"]) for m in
              usage_months(api, query="?from=2026-11&to=2026-12")}
    assert months == {"2026-11": (3, 0)}


# ---- the platform's retries, caps and lists ----------------------------------------------


def test_every_hold_route_replays_under_an_idempotency_key(api, acme):
    first = hold(api, 3, headers={"Idempotency-Key": "job-1-hold"})
    again = hold(api, 3, headers={"Idempotency-Key": "job-1-hold"})
    assert (first.status_code, again.status_code, again.headers["Idempotent-Replayed"]) == (201, 201, "true")
    assert again.get_json() == first.get_json()
    assert quota_status(api)["generationsHeld"] == 3
    hold_id = first.get_json()["holdId"]
    captured = resolve(api, hold_id, "capture", headers={"Idempotency-Key": "job-1-capture"})
    replayed = resolve(api, hold_id, "capture", headers={"Idempotency-Key": "job-1-capture"})
    assert (captured.status_code, replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (200, 200, "true")
    assert replayed.get_json() == captured.get_json()
    reused = hold(api, 5, headers={"Idempotency-Key": "job-1-hold"})
    assert_error(reused, 422)
    assert figures(api) == (3, 0, 7)


class TestOpenHoldsCap:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, HOLDS_MAX_OPEN=2)

    def test_a_client_has_at_most_the_cap_of_open_holds(self, api, acme, clock):
        first, _ = held(api, 1, ttl_seconds=60), held(api, 1, ttl_seconds=3600)
        body = assert_error(hold(api, 1), 409)
        assert body["error"] == ("Client 'acme' has 2 open holds, the most one client may have; capture or release "
                                 "some (or let them expire) before holding more.")
        succeeded(resolve(api, first["holdId"], "release"))
        held(api, 1)
        clock.advance(minutes=61)  # both lapse: lapsed holds are not open
        held(api, 1)
        held(api, 1)


def test_holds_are_listed_newest_first_by_status_as_of_now(api, acme, clock):
    lapsing = held(api, 1, ttl_seconds=60)
    captured = held(api, 1)
    succeeded(resolve(api, captured["holdId"], "capture"))
    released = held(api, 1)
    succeeded(resolve(api, released["holdId"], "release"))
    open_one = held(api, 1, ttl_seconds=3600)
    clock.advance(minutes=2)

    def listed(query=""):
        page = succeeded(api.get(f"{HOLDS}{query}", key="service"))
        return [(item["holdId"], item["status"]) for item in page["items"]], page["nextOffset"]

    assert listed() == ([(open_one["holdId"], "held"), (released["holdId"], "released"),
                         (captured["holdId"], "captured"), (lapsing["holdId"], "expired")], None)
    for status, hold_id in (("held", open_one), ("captured", captured), ("released", released),
                            ("expired", lapsing)):
        assert listed(f"?status={status}") == ([(hold_id["holdId"], status)], None)
    assert listed("?limit=3")[1] == 3
    assert_error(api.get(f"{HOLDS}?status=pending", key="read"), 400, "status")


INVALID = {
    "count zero": {"count": 0},
    "count too large": {"count": 10_001},
    "count missing": {},
    "count a string": {"count": "1"},
    "ttl zero": {"count": 1, "ttlSeconds": 0},
    "ttl over a day": {"count": 1, "ttlSeconds": 86_401},
    "reference too long": {"count": 1, "reference": "r" * 201},
    "reference with NUL": {"count": 1, "reference": "a\x00b"},
    "unknown field": {"count": 1, "amount": 2},
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID)
def test_an_invalid_hold_is_400_and_holds_nothing(api, acme, body):
    assert_error(api.post(HOLDS, json=body, key="service"), 400)
    assert quota_status(api)["generationsHeld"] == 0


def test_a_capture_or_release_takes_only_its_own_fields(api, acme):
    placed = held(api, 2)
    assert_error(api.post(f"{HOLDS}/{placed['holdId']}/release", json={"count": 1}, key="service"), 400, "count")
    assert_error(api.post(f"{HOLDS}/{placed['holdId']}/capture", json={"count": -1}, key="service"), 400, "count")
    assert succeeded(api.post(f"{HOLDS}/{placed['holdId']}/release", key="service"))["status"] == "released"


def test_a_month_with_a_lapsed_hold_not_yet_swept_still_takes_every_credit(api, acme, clock):
    """The stored count of a month's holds can still hold a lapsed one; a consumption is then
    checked under the lock, with the count made exact, not refused."""
    held(api, 10, ttl_seconds=60)
    clock.advance(minutes=2)
    assert consumed(api, 10)["remaining"] == 0
    assert quota(api)["usage"]["held"] == 0
