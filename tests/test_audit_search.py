"""Investigating across clients: GET /api/admin/audit-log, its export, and `flask audit export`."""

import csv
import io
import json

import pytest

from conftest import assert_error, make_key

SEARCH = "/api/admin/audit-log"
EXPORT = "/api/admin/audit-log/export"
ENTRY_FIELDS = {"id", "clientId", "adminId", "action", "details", "previousValue", "newValue", "createdAt"}


def search(api, query="", key="read"):
    response = api.get(f"{SEARCH}{query}", key=key)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def write(api, client_id, body, key="write", method="post"):
    path = f"/api/admin/clients/{client_id}/" + ("credits" if method == "post" else "quota")
    response = getattr(api, method)(path, json=body, key=key)
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def history(api, app, clock):
    """Entries of two clients by two admins at known instants; returns their ids, oldest first.

    | # | at (UTC)   | client | admin | action       |
    | 0 | 10:00      | acme   | alice | plan_change  |
    | 1 | 11:00      | other  | bob   | credit_grant |
    | 2 | 12:00      | acme   | bob   | credit_grant |
    | 3 | 12:00      | other  | alice | usage_reset  |
    | 4 | 13:00      | acme   | alice | usage_reset  |
    """
    api.keys["bob"] = make_key(app, "bob@example.com", "write")
    api.create_client("acme", "Acme Corp")
    api.create_client("other", "Other")
    steps = [
        ("10:00", "acme", "write", "put", {"plan": "starter", "reason": "upgrade"}),
        ("11:00", "other", "bob", "post", {"action": "grant", "amount": 5, "reason": "goodwill"}),
        ("12:00", "acme", "bob", "post", {"action": "grant", "amount": 7, "reason": "apology"}),
        ("12:00", "other", "write", "post", {"action": "reset", "reason": "outage"}),
        ("13:00", "acme", "write", "post", {"action": "reset", "reason": "new month"}),
    ]
    for at, client_id, key, method, body in steps:
        clock.set(f"2026-11-25T{at}:00+00:00")
        write(api, client_id, body, key=key, method=method)
    return [entry["id"] for entry in reversed(search(api)["items"])]


def picked(page, history):
    """The history row numbers of a page's entries."""
    return [history.index(entry["id"]) for entry in page["items"]]


def test_every_client_newest_first_in_the_api_shape(api, history):
    page = search(api)
    assert set(page) == {"items", "limit", "nextBefore"}
    assert (page["limit"], page["nextBefore"]) == (50, None)
    assert picked(page, history) == [4, 3, 2, 1, 0]
    for entry in page["items"]:
        assert set(entry) >= ENTRY_FIELDS
    grant = page["items"][2]
    assert (grant["clientId"], grant["adminId"], grant["action"]) == ("acme", "bob@example.com", "credit_grant")
    assert grant["details"]["reason"] == "apology"
    assert grant["createdAt"] == "2026-11-25T12:00:00.000Z"
    assert grant in api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"]


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("?clientId=acme", [4, 2, 0]),
        ("?clientId=other", [3, 1]),
        ("?clientId=nobody", []),
        ("?adminId=bob@example.com", [2, 1]),
        ("?adminId=nobody@example.com", []),
        ("?action=usage_reset", [4, 3]),
        ("?action=usage_reset&action=plan_change", [4, 3, 0]),
        ("?action=credit_grant&action=credit_grant", [2, 1]),
        ("?since=2026-11-25T12:00:00Z", [4, 3, 2]),  # since is inclusive
        ("?until=2026-11-25T12:00:00Z", [1, 0]),  # until is exclusive
        ("?since=2026-11-25T11:00:00Z&until=2026-11-25T13:00:00Z", [3, 2, 1]),
        ("?since=2026-11-25T13:00:00%2B01:00", [4, 3, 2]),  # 12:00 UTC
        ("?until=2026-11-25T08:00:00-05:00", [3, 2, 1, 0]),  # 13:00 UTC
        ("?clientId=acme&adminId=alice@example.com", [4, 0]),
        ("?clientId=acme&action=credit_grant", [2]),
        ("?adminId=alice@example.com&action=usage_reset&action=plan_change", [4, 3, 0]),
        ("?clientId=other&since=2026-11-25T11:30:00.000Z", [3]),
        ("?adminId=bob@example.com&until=2026-11-25T11:59:59.999Z", [1]),
        ("?action=credit_grant&since=2026-11-25T11:00:01Z", [2]),
    ],
)
def test_filters_select_exactly_their_entries(api, history, query, rows):
    assert picked(search(api, query), history) == rows


@pytest.mark.parametrize("query", ["", "?clientId=acme", "?adminId=alice@example.com",
                                   "?action=usage_reset&action=plan_change", "?since=2026-11-25T11:00:00Z"])
def test_keyset_pages_walk_every_match_once(api, history, query):
    everything = picked(search(api, query), history)
    walked, before = [], None
    while True:
        joined = "&" if query else "?"
        page = search(api, query + (f"{joined}limit=2" + (f"&before={before}" if before else "")))
        assert page["limit"] == 2
        walked += picked(page, history)
        before = page["nextBefore"]
        if before is None:
            break
        assert before == page["items"][-1]["id"] and len(page["items"]) == 2
    assert walked == everything


def test_next_before_is_null_when_the_page_ends_at_the_last_entry(api, history):
    assert search(api, "?limit=5")["nextBefore"] is None
    assert search(api, "?limit=4")["nextBefore"] == history[1]
    assert search(api, f"?limit=1&before={history[1]}") == {
        "items": search(api, "?clientId=acme&until=2026-11-25T10:00:01Z")["items"], "limit": 1, "nextBefore": None
    }
    assert search(api, f"?before={history[0]}")["items"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?action=client_create", "action"),
        ("?action=usage_reset&action=bogus", "action"),
        ("?action=", "action"),
        ("?since=2026-11-25T13:00:00Z&until=2026-11-25T12:00:00Z", "until"),
        ("?since=2026-11-25T12:00:00Z&until=2026-11-25T12:00:00Z", "until"),
        ("?since=2026-11-25T12:00:00Z&until=2026-11-25T13:00:00%2B02:00", "until"),  # 11:00 UTC
        ("?since=yesterday", "since"),
        ("?since=2026-13-01T00:00:00Z", "since"),
        ("?until=2026-11-25", "until"),
        ("?since=2026-11-25T12:00:00", "since"),  # no offset: refused, not guessed
        ("?until=0001-01-01T00:00:00%2B01:00", "until"),  # before year 1 in UTC
        ("?before=0", "before"),
        ("?before=-1", "before"),
        ("?before=abc", "before"),
        ("?before=1.5", "before"),
        ("?before=9223372036854775808", "before"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?clientId=a%20b", "clientId"),
        ("?adminId=", "adminId"),
        ("?offset=10", "offset"),
        ("?client_id=acme", "client_id"),
    ],
)
def test_bad_input_is_refused_with_its_field(api, query, field):
    assert_error(api.get(f"{SEARCH}{query}", key="read"), 400, field)
    if field not in {"before", "limit"}:  # the export takes the filters, not the paging
        assert_error(api.get(f"{EXPORT}{query}", key="read"), 400, field)


@pytest.mark.parametrize(("path", "key", "status"), [
    (SEARCH, "service", 403), (SEARCH, None, 401), (SEARCH, "not-a-key", 401),
    (EXPORT, "service", 403), (EXPORT, None, 401), (EXPORT, "not-a-key", 401),
])
def test_reading_needs_an_admin_key(api, path, key, status):
    assert_error(api.get(path, key=key), status)


def test_write_keys_may_read(api, history):
    assert len(search(api, key="write")["items"]) == 5


# ---- export ------------------------------------------------------------------


def export(api, query=""):
    response = api.get(f"{EXPORT}{query}", key="read")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_csv_export_has_a_header_and_every_entry_as_the_api_shows_it(api, history):
    response = export(api, "?format=csv")
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="audit-log-')
    assert response.headers["Content-Disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    items = search(api)["items"]
    assert [int(row["id"]) for row in rows] == [entry["id"] for entry in items]
    for row, entry in zip(rows, items):
        assert json.loads(row["details"]) == entry["details"]
        assert row["reason"] == entry["details"]["reason"]
        for name in ("clientId", "adminId", "action", "createdAt", "previousValue", "newValue"):
            assert row[name] == (entry[name] or "")


def test_csv_is_the_default_format(api, history):
    assert export(api).mimetype == "text/csv"


def test_ndjson_export_is_one_api_entry_per_line(api, history):
    response = export(api, "?format=ndjson&clientId=acme")
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"].endswith('.ndjson"')
    lines = response.get_data(as_text=True).split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == search(api, "?clientId=acme")["items"]


def test_export_applies_the_filters(api, history):
    lines = export(api, "?format=ndjson&adminId=alice@example.com&action=usage_reset&since=2026-11-25T12:30:00Z")
    assert [json.loads(line)["id"] for line in lines.get_data(as_text=True).splitlines()] == [history[4]]
    empty = export(api, "?clientId=nobody").get_data(as_text=True)
    assert list(csv.reader(io.StringIO(empty)))[1:] == []


def test_export_of_an_unknown_format_is_refused(api):
    assert_error(api.get(f"{EXPORT}?format=xlsx", key="read"), 400, "format")
    assert_error(api.get(f"{EXPORT}?format=csv&limit=5", key="read"), 400, "limit")


TRICKY_REASONS = [
    'commas, "quotes" and\nnew lines',
    "=HYPERLINK(\"http://evil.example\",\"click\")",
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\tindented",
    "\rcarriage",
    "plain",
]


def test_csv_quotes_and_defuses_formulas(api, clock):
    api.create_client("acme", "Acme Corp")
    for reason in TRICKY_REASONS:
        write(api, "acme", {"action": "grant", "amount": 1, "reason": reason})
    write(api, "acme", {"monthlyGenerationLimit": -1}, method="put")
    text = export(api, "?format=csv&clientId=acme").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    unlimited, *grants = rows
    assert [row["reason"] for row in reversed(grants)] == [
        reason if reason[0] not in "=+-@\t\r" else "'" + reason for reason in TRICKY_REASONS
    ]
    # A value no spreadsheet should run: -1 (unlimited) is shown as text too.
    assert json.loads(unlimited["newValue"])["monthlyGenerationLimit"] == -1
    for row in rows:
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())


def test_cli_export_writes_the_same_to_stdout(api, history, runner):
    result = runner.invoke(args=["audit", "export", "--format", "ndjson", "--action", "usage_reset",
                                 "--action", "plan_change", "--client-id", "acme"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == search(
        api, "?action=usage_reset&action=plan_change&clientId=acme")["items"]
    as_csv = runner.invoke(args=["audit", "export", "--admin-id", "bob@example.com",
                                 "--since", "2026-11-25T11:00:00Z", "--until", "2026-11-25T12:00:00Z"])
    assert as_csv.exit_code == 0, as_csv.output
    [header, row] = list(csv.reader(io.StringIO(as_csv.stdout, newline="")))
    assert header[0] == "id" and int(row[0]) == history[1]


@pytest.mark.parametrize(("args", "named"), [
    (["--since", "2026-11-25T12:00:00"], "since"),
    (["--since", "2026-11-25T12:00:00Z", "--until", "2026-11-25T11:00:00Z"], "until"),
    (["--action", "bogus"], "action"),
    (["--format", "xml"], "format"),
])
def test_cli_export_refuses_bad_input(runner, app, args, named):
    result = runner.invoke(args=["audit", "export", *args])
    assert result.exit_code == 2
    assert named in result.output
