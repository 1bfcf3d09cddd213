"""GET /api/admin/clients/<id>/usage: usage and month-grants, month by month."""

import pytest

from conftest import assert_error
from helpers import consumed, granted, succeeded

HISTORY = "/api/admin/clients/acme/usage"


def at(clock, month, day="15"):
    clock.set(f"{month}-{day}T12:00:00+00:00")


def history(api, query=""):
    return succeeded(api.get(HISTORY + query, key="read"))


def months(body):
    return [(item["month"], item["generationCount"], item["grantedThisMonth"]) for item in body["items"]]


def test_history_crosses_a_year_boundary_oldest_first(api, acme, clock):
    at(clock, "2026-11")
    consumed(api, 3)
    at(clock, "2026-12")
    granted(api, 40, "month")
    consumed(api, 120)
    at(clock, "2027-01", "01")
    consumed(api, 5)
    at(clock, "2027-02")
    body = history(api)
    assert (body["from"], body["to"]) == ("2026-03", "2027-02")
    assert months(body) == [("2026-11", 3, 0), ("2026-12", 120, 40), ("2027-01", 5, 0)]
    assert months(history(api, "?from=2026-12&to=2027-01")) == [("2026-12", 120, 40), ("2027-01", 5, 0)]


def test_a_month_with_only_a_grant_is_listed_and_a_voided_one_shows_zero(api, acme, clock):
    at(clock, "2026-11")
    grant_id = granted(api, 10, "month")["grantId"]
    assert months(history(api)) == [("2026-11", 0, 10)]
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "void", "grantId": grant_id}))
    assert months(history(api)) == [("2026-11", 0, 0)]


def test_permanent_grants_and_resets_do_not_make_a_month(api, acme, clock):
    at(clock, "2026-11")
    granted(api, 10)
    succeeded(api.post("/api/admin/clients/acme/credits", json={"action": "reset"}))
    assert history(api)["items"] == []


def test_the_default_range_is_the_last_12_months_and_from_or_to_alone_work(api, acme, clock):
    at(clock, "2025-11")
    consumed(api, 1)
    at(clock, "2025-12")
    consumed(api, 2)
    at(clock, "2026-11")
    consumed(api, 3)
    assert months(history(api)) == [("2025-12", 2, 0), ("2026-11", 3, 0)]
    assert months(history(api, "?from=2025-01")) == [("2025-11", 1, 0), ("2025-12", 2, 0), ("2026-11", 3, 0)]
    body = history(api, "?to=2025-11")
    assert ((body["from"], body["to"]), months(body)) == (("2024-12", "2025-11"), [("2025-11", 1, 0)])


def test_a_range_of_exactly_120_months_is_allowed(api, acme):
    assert history(api, "?from=2017-01&to=2026-12")["items"] == []


@pytest.mark.parametrize("query, field", [
    ("?from=2026-13", "from"),
    ("?from=2026-1", "from"),
    ("?to=26-11", "to"),
    ("?to=2026-11-01", "to"),
    ("?from=0999-12", "from"),
    ("?from=2026-00", "from"),
    ("?from=2026-11%0A", "from"),
    ("?from=2026-12&to=2026-11", "from"),
    ("?from=2016-12&to=2026-12", "from"),
    ("?from=2026-12", "from"),  # after the test clock's month, the default `to`
    ("?month=2026-11", "month"),
])
def test_bad_months_and_ranges_are_400(api, acme, query, field):
    assert_error(api.get(HISTORY + query, key="read"), 400, field)


def test_history_of_an_unknown_client_is_404_and_needs_a_read_key(api, acme):
    assert_error(api.get("/api/admin/clients/nobody/usage", key="read"), 404)
    assert_error(api.get(HISTORY, key="service"), 403)
    assert history(api)["items"] == []
