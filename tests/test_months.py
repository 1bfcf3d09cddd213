"""Usage months are UTC calendar months, whatever the server's local time zone."""

import os
import time

import pytest

from helpers import consumed


@pytest.fixture(params=["Pacific/Kiritimati", "Pacific/Pago_Pago"], ids=["utc+14", "utc-11"], autouse=True)
def server_time_zone(request):
    """Run the service in a time zone far from UTC; the month must not follow it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def usage_at(api, clock, iso, client_id="acme"):
    clock.set(iso)
    response = api.get(f"/api/admin/clients/{client_id}/quota", key="read")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["usage"]


def test_the_local_time_zone_is_really_not_utc(server_time_zone):
    assert time.localtime(0).tm_gmtoff != 0
    assert time.strftime("%Z") != "UTC"


@pytest.mark.parametrize(
    ("now", "month", "reset_date"),
    [
        ("2026-11-30T23:30:00+00:00", "2026-11", "2026-12-01T00:00:00.000Z"),
        ("2026-11-30T23:59:59+00:00", "2026-11", "2026-12-01T00:00:00.000Z"),
        ("2026-12-01T00:00:00+00:00", "2026-12", "2027-01-01T00:00:00.000Z"),
        ("2026-12-31T23:59:59+00:00", "2026-12", "2027-01-01T00:00:00.000Z"),
        ("2027-01-01T00:00:00+00:00", "2027-01", "2027-02-01T00:00:00.000Z"),
        ("2028-02-29T12:00:00+00:00", "2028-02", "2028-03-01T00:00:00.000Z"),
    ],
)
def test_month_and_reset_date_follow_utc(api, clock, now, month, reset_date):
    api.create_client("acme", "Acme Corp")
    usage = usage_at(api, clock, now)
    assert (usage["month"], usage["resetDate"], usage["generationCount"]) == (month, reset_date, 0)


def test_november_usage_stops_counting_at_the_first_utc_instant_of_december(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-30T23:30:00+00:00")
    assert consumed(api, 3) == {"month": "2026-11", "generationCount": 3, "limit": 100, "remaining": 97}

    november = usage_at(api, clock, "2026-11-30T23:59:59+00:00")
    assert (november["month"], november["generationCount"], november["remaining"]) == ("2026-11", 3, 97)
    december = usage_at(api, clock, "2026-12-01T00:00:00+00:00")
    assert (december["month"], december["generationCount"], december["remaining"]) == ("2026-12", 0, 100)


def test_consumption_lands_in_the_utc_month(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-30T23:59:59+00:00")
    assert consumed(api, 2)["month"] == "2026-11"
    clock.set("2026-12-01T00:00:00+00:00")
    assert consumed(api, 5) == {"month": "2026-12", "generationCount": 5, "limit": 100, "remaining": 95}
    assert usage_at(api, clock, "2026-11-30T23:59:59+00:00")["generationCount"] == 2
    assert usage_at(api, clock, "2026-12-31T23:59:59+00:00")["generationCount"] == 5


def test_a_reset_in_december_leaves_november_untouched(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-30T23:30:00+00:00")
    consumed(api, 3)
    clock.set("2026-12-01T00:00:00+00:00")
    consumed(api, 4)

    response = api.post("/api/admin/clients/acme/credits", json={"action": "reset", "reason": "new month"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "action": "reset", "previousUsage": 4, "currentUsage": 0, "limit": 100, "remaining": 100,
    }
    assert usage_at(api, clock, "2026-12-01T00:00:01+00:00")["generationCount"] == 0
    assert usage_at(api, clock, "2026-11-30T23:59:59+00:00")["generationCount"] == 3


def test_a_reset_at_the_start_of_december_with_no_december_usage_keeps_november(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-30T23:30:00+00:00")
    consumed(api, 3)
    clock.set("2026-12-01T00:00:00+00:00")
    response = api.post("/api/admin/clients/acme/credits", json={"action": "reset"})
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["previousUsage"], response.get_json()["currentUsage"]) == (0, 0)
    assert usage_at(api, clock, "2026-11-30T23:59:59+00:00")["generationCount"] == 3
