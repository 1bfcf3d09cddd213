"""Clients: create, list, read and delete (POST/GET/DELETE /api/admin/clients)."""

import re
from datetime import datetime

import pytest

from conftest import assert_error

CLIENTS = "/api/admin/clients"
CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PLAN_DEFAULTS = {
    "free": (100, 1000),
    "starter": (500, 5000),
    "pro": (2000, 20000),
    "enterprise": (-1, -1),
}


def parse_instant(text):
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def list_page(api, query=""):
    response = api.get(f"{CLIENTS}{query}", key="read")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ---- create ------------------------------------------------------------------


def test_create_answers_201_with_the_client(api, clock):
    clock.set("2026-11-25T12:00:00+00:00")
    response = api.post(CLIENTS, json={"id": "acme", "name": "Acme Corp", "plan": "pro"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {"id", "name", "plan", "createdAt"}
    assert body["id"] == "acme"
    assert body["name"] == "Acme Corp"
    assert body["plan"] == "pro"
    assert parse_instant(body["createdAt"]) == datetime.fromisoformat("2026-11-25T12:00:00+00:00")


def test_created_client_is_readable(api):
    created = api.create_client("acme", "Acme Corp")
    response = api.get(f"{CLIENTS}/acme", key="read")
    assert response.status_code == 200
    assert response.get_json() == created


def test_plan_defaults_to_free(api):
    response = api.post(CLIENTS, json={"id": "acme", "name": "Acme Corp"})
    assert response.status_code == 201
    assert response.get_json()["plan"] == "free"
    quota = api.get(f"{CLIENTS}/acme/quota", key="read").get_json()["quota"]
    assert (quota["plan"], quota["monthlyGenerationLimit"], quota["storageQuotaMb"]) == ("free", 100, 1000)


@pytest.mark.parametrize("plan", list(PLAN_DEFAULTS))
def test_plan_given_at_creation_applies_its_default_limits(api, plan):
    assert api.create_client("acme", "Acme Corp", plan=plan)["plan"] == plan
    quota = api.get(f"{CLIENTS}/acme/quota", key="read").get_json()["quota"]
    assert quota["plan"] == plan
    assert (quota["monthlyGenerationLimit"], quota["storageQuotaMb"]) == PLAN_DEFAULTS[plan]


def test_id_is_generated_when_absent(api):
    first = api.post(CLIENTS, json={"name": "First"})
    second = api.post(CLIENTS, json={"name": "Second"})
    assert first.status_code == second.status_code == 201
    ids = [first.get_json()["id"], second.get_json()["id"]]
    for client_id in ids:
        assert CLIENT_ID.fullmatch(client_id), client_id
        assert api.get(f"{CLIENTS}/{client_id}", key="read").get_json()["name"] in {"First", "Second"}
    assert ids[0] != ids[1]


def test_duplicate_id_is_a_conflict(api):
    api.create_client("acme", "Acme Corp")
    response = api.post(CLIENTS, json={"id": "acme", "name": "Another"})
    assert_error(response, 409)
    assert api.get(f"{CLIENTS}/acme", key="read").get_json()["name"] == "Acme Corp"
    assert list_page(api)["items"] == [api.get(f"{CLIENTS}/acme", key="read").get_json()]


@pytest.mark.parametrize(
    "client_id",
    ["", "a" * 65, "a b", "a/b", "é", "acme\n", "a:b", 123, ["acme"]],
    ids=["empty", "65-chars", "space", "slash", "non-ascii", "trailing-newline", "colon", "number", "list"],
)
def test_invalid_id_is_refused(api, client_id):
    response = api.post(CLIENTS, json={"id": client_id, "name": "Acme Corp"})
    assert_error(response, 400, "id")
    assert list_page(api)["items"] == []


@pytest.mark.parametrize("client_id", ["a" * 64, "A", "Acme.corp_2-x", "0"])
def test_valid_id_is_kept(api, client_id):
    assert api.create_client(client_id, "Acme Corp")["id"] == client_id
    response = api.get(f"{CLIENTS}/{client_id}", key="read")
    assert response.status_code == 200
    assert response.get_json()["id"] == client_id


@pytest.mark.parametrize(
    "body",
    [
        {"id": "acme"},
        {"id": "acme", "name": ""},
        {"id": "acme", "name": "   "},
        {"id": "acme", "name": "\t\n"},
        {"id": "acme", "name": "a" * 201},
        {"id": "acme", "name": 42},
        {"id": "acme", "name": None},
        {"id": "acme", "name": ["Acme"]},
        {"id": "acme", "name": "Acme\u0000Corp"},
    ],
    ids=["missing", "empty", "spaces", "whitespace", "201-chars", "number", "null", "list", "nul-char"],
)
def test_invalid_name_is_refused(api, body):
    assert_error(api.post(CLIENTS, json=body), 400, "name")
    assert_error(api.get(f"{CLIENTS}/acme", key="read"), 404)


@pytest.mark.parametrize("name", ["a" * 200, "Ünïcødé 株式会社 🚀", "x"])
def test_valid_name_is_stored_exactly(api, name):
    assert api.create_client("acme", name)["name"] == name
    assert api.get(f"{CLIENTS}/acme", key="read").get_json()["name"] == name


def test_unknown_field_is_refused(api):
    response = api.post(CLIENTS, json={"id": "acme", "name": "Acme Corp", "color": "red"})
    assert_error(response, 400, "color")
    assert_error(api.get(f"{CLIENTS}/acme", key="read"), 404)


@pytest.mark.parametrize("plan", ["gold", "FREE", "", 1])
def test_unknown_plan_is_refused(api, plan):
    response = api.post(CLIENTS, json={"id": "acme", "name": "Acme Corp", "plan": plan})
    assert_error(response, 400, "plan")
    assert_error(api.get(f"{CLIENTS}/acme", key="read"), 404)


def test_creating_a_client_writes_no_audit_entry(api):
    api.create_client("acme", "Acme Corp", plan="starter")
    log = api.get(f"{CLIENTS}/acme/audit-log", key="read")
    assert log.status_code == 200
    assert log.get_json()["items"] == []
    assert api.get(f"{CLIENTS}/acme/quota", key="read").get_json()["auditLog"] == []
    assert api.get("/api/admin/audit-log", key="read").get_json()["items"] == []


# ---- list --------------------------------------------------------------------


def test_list_shape_and_defaults(api):
    created = [api.create_client(f"c{i}", f"Client {i}") for i in range(3)]
    page = list_page(api)
    assert set(page) == {"items", "limit", "offset", "nextOffset"}
    assert (page["limit"], page["offset"], page["nextOffset"]) == (50, 0, None)
    assert sorted(page["items"], key=lambda item: item["id"]) == created


def test_default_limit_is_50(api):
    ids = {api.create_client(f"c{i:02}", f"Client {i}")["id"] for i in range(51)}
    first = list_page(api)
    assert (len(first["items"]), first["limit"], first["nextOffset"]) == (50, 50, 50)
    second = list_page(api, "?offset=50")
    assert (len(second["items"]), second["offset"], second["nextOffset"]) == (1, 50, None)
    assert {item["id"] for item in first["items"] + second["items"]} == ids


def test_next_offset_is_null_on_the_page_holding_the_last_item(api):
    for i in range(4):
        api.create_client(f"c{i}", f"Client {i}")
    first = list_page(api, "?limit=2")
    assert (len(first["items"]), first["limit"], first["offset"], first["nextOffset"]) == (2, 2, 0, 2)
    second = list_page(api, "?limit=2&offset=2")
    assert (len(second["items"]), second["limit"], second["offset"], second["nextOffset"]) == (2, 2, 2, None)
    assert list_page(api, "?limit=4")["nextOffset"] is None
    assert list_page(api, "?limit=3")["nextOffset"] == 3


def test_offset_past_the_end_is_an_empty_last_page(api):
    api.create_client("acme", "Acme Corp")
    page = list_page(api, "?offset=5")
    assert (page["items"], page["offset"], page["nextOffset"]) == ([], 5, None)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pages_have_no_duplicates_and_no_gaps(api, clock, limit):
    # Same createdAt for some clients: the order must still be total and stable.
    clock.set("2026-11-25T12:00:00+00:00")
    ids = {api.create_client(f"same-{i}", "Same instant")["id"] for i in (3, 1, 2)}
    clock.set("2026-11-25T12:00:01+00:00")
    ids |= {api.create_client(f"later-{i}", "Later")["id"] for i in (2, 1)}

    seen, offset = [], 0
    while offset is not None:
        page = list_page(api, f"?limit={limit}&offset={offset}")
        assert len(page["items"]) == (limit if page["nextOffset"] is not None else len(ids) - offset)
        seen += [item["id"] for item in page["items"]]
        offset = page["nextOffset"]
    assert len(seen) == len(set(seen)) == len(ids)
    assert set(seen) == ids
    assert seen == [item["id"] for item in list_page(api, "?limit=100")["items"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=", "limit"),
        ("?offset=-1", "offset"),
        ("?offset=abc", "offset"),
        ("?page=2", "page"),
    ],
)
def test_invalid_query_is_refused(api, query, field):
    api.create_client("acme", "Acme Corp")
    assert_error(api.get(f"{CLIENTS}{query}", key="read"), 400, field)


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(api, limit):
    api.create_client("acme", "Acme Corp")
    page = list_page(api, f"?limit={limit}")
    assert (page["limit"], len(page["items"]), page["nextOffset"]) == (limit, 1, None)


# ---- read and delete ---------------------------------------------------------


def test_get_unknown_client_is_404(api):
    assert_error(api.get(f"{CLIENTS}/nobody", key="read"), 404)


def test_delete_removes_the_client_and_everything_under_it(api):
    api.create_client("acme", "Acme Corp")
    api.create_client("other", "Other")
    response = api.delete(f"{CLIENTS}/acme")
    assert response.status_code == 204
    assert response.get_data() == b""
    for path in ("", "/quota", "/grants", "/usage"):
        assert_error(api.get(f"{CLIENTS}/acme{path}", key="read"), 404)
    # Its audit log stays, ending with its deletion (tests/test_audit_chain.py).
    assert api.get(f"{CLIENTS}/acme/audit-log", key="read").get_json()["items"][0]["action"] == "client_deleted"
    assert [item["id"] for item in list_page(api)["items"]] == ["other"]
    assert api.get(f"{CLIENTS}/other", key="read").status_code == 200


def test_delete_unknown_client_is_404(api):
    assert_error(api.delete(f"{CLIENTS}/nobody"), 404)


def test_delete_twice_is_404_the_second_time(api):
    api.create_client("acme", "Acme Corp")
    assert api.delete(f"{CLIENTS}/acme").status_code == 204
    assert_error(api.delete(f"{CLIENTS}/acme"), 404)


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("post", CLIENTS, "read", 403),
        ("post", CLIENTS, "service", 403),
        ("post", CLIENTS, None, 401),
        ("delete", f"{CLIENTS}/acme", "read", 403),
        ("get", CLIENTS, "service", 403),
        ("get", CLIENTS, None, 401),
    ],
)
def test_roles_guard_the_client_routes(api, method, path, key, status):
    api.create_client("acme", "Acme Corp")
    kwargs = {"json": {"id": "new", "name": "New"}} if method == "post" else {}
    assert_error(getattr(api, method)(path, key=key, **kwargs), status)
    assert [item["id"] for item in list_page(api)["items"]] == ["acme"]
