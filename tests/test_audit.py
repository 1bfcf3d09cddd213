"""The credit audit log: GET /api/admin/clients/<id>/audit-log, and append-only in the database."""

import json
import re
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from conftest import assert_error
from credits_service.extensions import db
from helpers import consumed, set_limit, succeeded

ENTRY_FIELDS = {"id", "clientId", "adminId", "action", "details", "previousValue", "newValue", "createdAt",
                "seq", "hash"}


def log_page(api, query="", client_id="acme"):
    return succeeded(api.get(f"/api/admin/clients/{client_id}/audit-log{query}", key="read"))


def marker(entry):
    """The limit a limit_change entry set: set_limit(api, n) makes entries that mark insertion order."""
    return json.loads(entry["newValue"])["monthlyGenerationLimit"]


def one_of_each_action(api):
    """plan_change, limit_change, credit_grant, usage_reset, in that order."""
    writes = [
        ("put", "/api/admin/clients/acme/quota", {"plan": "starter", "reason": "upgrade"}),
        ("put", "/api/admin/clients/acme/quota", {"storageQuotaMb": 6000, "reason": "more room"}),
        ("post", "/api/admin/clients/acme/credits", {"action": "grant", "amount": 50, "reason": "goodwill"}),
        ("post", "/api/admin/clients/acme/credits", {"action": "reset", "reason": "new start"}),
    ]
    for method, path, body in writes:
        response = getattr(api, method)(path, json=body)
        assert response.status_code == 200, response.get_json()


def test_entries_are_newest_first_with_their_fields(api, clock):
    clock.set("2026-11-25T12:00:00+00:00")
    api.create_client("acme", "Acme Corp")
    consumed(api, 4)  # in the month the reset below empties
    one_of_each_action(api)
    page = log_page(api)
    assert set(page) == {"items", "limit", "offset", "nextOffset", "nextBefore"}
    assert (page["limit"], page["offset"], page["nextOffset"], page["nextBefore"]) == (50, 0, None, None)
    items = page["items"]
    assert [entry["action"] for entry in items] == ["usage_reset", "credit_grant", "limit_change", "plan_change"]
    for entry in items:
        assert set(entry) == ENTRY_FIELDS
        assert isinstance(entry["id"], int)
        assert (entry["clientId"], entry["adminId"]) == ("acme", "alice@example.com")
        assert entry["createdAt"].endswith("Z")
        assert datetime.fromisoformat(entry["createdAt"]) == datetime.fromisoformat("2026-11-25T12:00:00+00:00")
    assert len({entry["id"] for entry in items}) == 4
    assert [entry["seq"] for entry in items] == [4, 3, 2, 1]
    assert all(re.fullmatch("[0-9a-f]{64}", entry["hash"]) for entry in items)
    assert len({entry["hash"] for entry in items}) == 4
    reset, grant, _, _ = items
    assert grant["details"]["amount"] == 50
    assert grant["details"]["reason"] == "goodwill"
    assert (grant["previousValue"], grant["newValue"]) == ("500", "550")
    assert reset["details"]["previousUsage"] == 4
    assert reset["details"]["reason"] == "new start"
    assert (reset["previousValue"], reset["newValue"]) == ("4", "0")


def test_entries_belong_to_their_client_only(api):
    api.create_client("acme", "Acme Corp")
    api.create_client("other", "Other")
    set_limit(api, 1)
    set_limit(api, 2, client_id="other")
    assert [marker(entry) for entry in log_page(api)["items"]] == [1]
    assert [(entry["clientId"], marker(entry)) for entry in log_page(api, client_id="other")["items"]] == [("other", 2)]


def test_pagination_walks_every_entry_once(api):
    api.create_client("acme", "Acme Corp")
    for value in range(1, 6):
        set_limit(api, value)
    first = log_page(api, "?limit=2")
    assert ([marker(e) for e in first["items"]], first["limit"], first["offset"], first["nextOffset"]) == ([5, 4], 2, 0, 2)
    second = log_page(api, "?limit=2&offset=2")
    assert ([marker(e) for e in second["items"]], second["offset"], second["nextOffset"]) == ([3, 2], 2, 4)
    last = log_page(api, "?limit=2&offset=4")
    assert ([marker(e) for e in last["items"]], last["offset"], last["nextOffset"]) == ([1], 4, None)


def test_keyset_pages_walk_every_entry_once(api):
    api.create_client("acme", "Acme Corp")
    api.create_client("other", "Other")
    for value in range(1, 6):
        set_limit(api, value)
        set_limit(api, 100 + value, client_id="other")
    first = log_page(api, "?limit=2")
    assert [marker(e) for e in first["items"]] == [5, 4]
    assert first["nextBefore"] == first["items"][-1]["id"]
    second = log_page(api, f"?limit=2&before={first['nextBefore']}")
    assert ([marker(e) for e in second["items"]], second["offset"], second["nextOffset"]) == ([3, 2], 0, None)
    last = log_page(api, f"?limit=2&before={second['nextBefore']}&offset=0")
    assert ([marker(e) for e in last["items"]], last["nextBefore"], last["nextOffset"]) == ([1], None, None)


def test_offset_pages_give_next_before_too(api):
    api.create_client("acme", "Acme Corp")
    for value in range(1, 6):
        set_limit(api, value)
    page = log_page(api, "?limit=2&offset=2")
    assert ([marker(e) for e in page["items"]], page["nextOffset"]) == ([3, 2], 4)
    assert [marker(e) for e in log_page(api, f"?limit=5&before={page['nextBefore']}")["items"]] == [1]


def test_keyset_paging_within_an_action(api):
    api.create_client("acme", "Acme Corp")
    for _ in range(3):
        one_of_each_action(api)
    first = log_page(api, "?action=credit_grant&limit=2")
    rest = log_page(api, f"?action=credit_grant&limit=2&before={first['nextBefore']}")
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert [e["action"] for e in first["items"] + rest["items"]] == ["credit_grant"] * 3
    assert ids == sorted(ids, reverse=True) and rest["nextBefore"] is None


def test_next_offset_is_null_when_the_page_ends_exactly_at_the_last_entry(api):
    api.create_client("acme", "Acme Corp")
    for value in range(1, 5):
        set_limit(api, value)
    assert log_page(api, "?limit=2")["nextOffset"] == 2
    last = log_page(api, "?limit=2&offset=2")
    assert ([marker(e) for e in last["items"]], last["nextOffset"]) == ([2, 1], None)
    assert log_page(api, "?limit=4")["nextOffset"] is None
    past = log_page(api, "?offset=9")
    assert (past["items"], past["nextOffset"]) == ([], None)


def test_empty_log(api):
    api.create_client("acme", "Acme Corp")
    assert log_page(api) == {"items": [], "limit": 50, "offset": 0, "nextOffset": None, "nextBefore": None}


@pytest.mark.parametrize("action", ["plan_change", "limit_change", "credit_grant", "usage_reset"])
def test_action_filter_keeps_only_that_action(api, action):
    api.create_client("acme", "Acme Corp")
    one_of_each_action(api)
    one_of_each_action(api)
    page = log_page(api, f"?action={action}")
    assert [entry["action"] for entry in page["items"]] == [action, action]
    first, second = page["items"]
    assert first["id"] > second["id"]
    assert page["nextOffset"] is None


def test_action_filter_paginates_within_the_action(api):
    api.create_client("acme", "Acme Corp")
    for value in range(1, 4):
        set_limit(api, value)
        one_of_each_action(api)
    page = log_page(api, "?action=credit_grant&limit=2")
    assert [entry["action"] for entry in page["items"]] == ["credit_grant"] * 2
    assert page["nextOffset"] == 2
    rest = log_page(api, "?action=credit_grant&limit=2&offset=2")
    assert [entry["action"] for entry in rest["items"]] == ["credit_grant"]
    assert rest["nextOffset"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?action=client_create", "action"),
        ("?action=PLAN_CHANGE", "action"),
        ("?action=", "action"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1.5", "limit"),
        ("?offset=-1", "offset"),
        ("?sort=asc", "sort"),
        ("?before=0", "before"),
        ("?before=-3", "before"),
        ("?before=abc", "before"),
        ("?before=2.5", "before"),
        ("?before=", "before"),
        ("?before=9223372036854775808", "before"),
        ("?before=5&offset=2", "before"),
    ],
)
def test_invalid_query_is_refused(api, query, field):
    api.create_client("acme", "Acme Corp")
    assert_error(api.get(f"/api/admin/clients/acme/audit-log{query}", key="read"), 400, field)


def test_unknown_client_is_404(api):
    assert_error(api.get("/api/admin/clients/nobody/audit-log", key="read"), 404)


@pytest.mark.parametrize(("key", "status"), [("service", 403), (None, 401), ("not-a-key", 401)])
def test_reading_needs_an_admin_key(api, key, status):
    api.create_client("acme", "Acme Corp")
    assert_error(api.get("/api/admin/clients/acme/audit-log", key=key), status)


def test_entries_at_the_same_instant_keep_reverse_insertion_order(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-25T12:00:00+00:00")
    # Values out of numeric order, so sorting by value would not pass by luck.
    values = [7, 3, 9, 1, 5, 8]
    for value in values:
        set_limit(api, value)
    items = log_page(api)["items"]
    assert len({entry["createdAt"] for entry in items}) == 1
    assert [marker(entry) for entry in items] == list(reversed(values))
    walked = [marker(e) for offset in (0, 2, 4) for e in log_page(api, f"?limit=2&offset={offset}")["items"]]
    assert walked == list(reversed(values))
    assert [marker(entry) for entry in api.get("/api/admin/clients/acme/quota", key="read").get_json()["auditLog"]] == (
        list(reversed(values))
    )


def test_order_is_insertion_order_even_when_the_clock_goes_back(api, clock):
    api.create_client("acme", "Acme Corp")
    clock.set("2026-11-25T12:00:00+00:00")
    set_limit(api, 1)
    set_limit(api, 2)
    clock.set("2026-11-25T11:00:00+00:00")
    set_limit(api, 3)
    set_limit(api, 4)
    assert [marker(entry) for entry in log_page(api)["items"]] == [4, 3, 2, 1]
    assert [marker(entry) for entry in log_page(api, "?limit=3")["items"]] == [4, 3, 2]


def test_the_database_refuses_to_update_an_entry(app, api):
    api.create_client("acme", "Acme Corp")
    set_limit(api, 42)
    [before] = log_page(api)["items"]
    with app.app_context():
        session = db.session()
        with pytest.raises(DatabaseError):
            session.execute(
                text("UPDATE credit_audit_log SET admin_id = 'mallory', new_value = '0' WHERE id = :id"),
                {"id": before["id"]},
            )
            session.commit()
        session.rollback()
    assert log_page(api)["items"] == [before]
