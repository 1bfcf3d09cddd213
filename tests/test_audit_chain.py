"""The audit log as a keyed hash chain: the database refuses changes, `flask audit verify`
catches the ones made with the triggers disabled, `audit heads` anchors catch a rollback."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from conftest import config_for, dispose_engines, triggers_disabled
from credits_service import create_app
from credits_service.audit.keys import load_audit_keys, make_dev_key
from credits_service.config import ConfigurationError
from credits_service.config import TestConfig
from credits_service.extensions import db
from credits_service.audit.chain import GENESIS, chain_hash
from helpers import assert_cli_refusal, set_limit

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY_ID, TEST_SECRET = TestConfig.AUDIT_HMAC_KEYS.split(":", 1)
NEW_KEY = "2027:a-newer-audit-key-for-the-rotation-test-0123456789"


def entries(api, client_id="acme"):
    """The client's entries, oldest first."""
    response = api.get(f"/api/admin/clients/{client_id}/audit-log", key="read")
    assert response.status_code == 200, response.get_json()
    return list(reversed(response.get_json()["items"]))


@pytest.fixture
def chains(api):
    """acme and other with three entries each, interleaved: acme #1, other #1, acme #2, ..."""
    api.create_client("acme", "Acme Corp")
    api.create_client("other", "Other")
    for value in (1, 2, 3):
        set_limit(api, value)
        set_limit(api, value * 10, client_id="other")
    return {client_id: [entry["id"] for entry in entries(api, client_id)] for client_id in ("acme", "other")}


def verify(runner, *args):
    return runner.invoke(args=["audit", "verify", *args])


def assert_broken(result, client_id, kind, entry_id):
    """Exit 1, and a line naming the client, what is wrong and the first bad entry."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith(f"client {client_id!r}:")]
    assert line.startswith(f"client {client_id!r}: {kind}: "), line
    if entry_id is not None:
        assert re.search(rf"\bentry {entry_id}\b", line), line
    return line


# ---- the database refuses ---------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE credit_audit_log SET new_value = '0' WHERE client_id = 'acme'",
    "DELETE FROM credit_audit_log WHERE client_id = 'acme'",
    "UPDATE audit_heads SET entry_count = 1, last_entry_id = 1 WHERE client_id = 'acme'",
    "UPDATE audit_heads SET hash = '" + "f" * 64 + "' WHERE client_id = 'acme'",
    # One step forward, but to an entry that is not the client's next one.
    "UPDATE audit_heads SET entry_count = entry_count + 1, last_entry_id = last_entry_id + 100 "
    "WHERE client_id = 'acme'",
    "DELETE FROM audit_heads WHERE client_id = 'acme'",
    # A head made by hand for a chain forged beside it.
    "INSERT INTO audit_heads (client_id, entry_count, last_entry_id, hash, updated_at) "
    "VALUES ('forged', 1, 1, '" + "f" * 64 + "', CURRENT_TIMESTAMP)",
])
def test_the_database_refuses_direct_changes(app, api, chains, runner, statement):
    with app.app_context():
        session = db.session()
        with pytest.raises(DatabaseError, match="append-only|advance by one|start empty"):
            session.execute(text(statement))
            session.commit()
        session.rollback()
    assert verify(runner).exit_code == 0
    assert [entry["id"] for entry in entries(api)] == chains["acme"]


def test_deleting_a_client_keeps_its_chain_and_ends_it_with_who_deleted_it(app, api, chains, runner):
    assert api.delete("/api/admin/clients/acme").status_code == 204
    kept = entries(api)  # a deleted client's log is still read by its id
    assert [entry["id"] for entry in kept[:-1]] == chains["acme"]
    last = kept[-1]
    assert (last["action"], last["adminId"], last["seq"], last["newValue"]) == (
        "client_deleted", "alice@example.com", 4, None)
    assert json.loads(last["previousValue"]) == last["details"] == {
        "name": "Acme Corp", "plan": "free", "monthlyGenerationLimit": 3, "storageQuotaMb": 1000}
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Audit log intact: 7 entries of 2 client(s)")
    search = api.get("/api/admin/audit-log?clientId=acme", key="read").get_json()["items"]
    assert [entry["id"] for entry in search] == [last["id"], *reversed(chains["acme"])]
    export = api.get("/api/admin/audit-log/export?format=ndjson&clientId=acme", key="read")
    assert [json.loads(line)["id"] for line in export.get_data(as_text=True).splitlines()] == \
        [entry["id"] for entry in search]


def test_a_deleted_clients_id_cannot_be_used_again(api, chains, runner):
    assert api.delete("/api/admin/clients/other").status_code == 204
    refused = api.post("/api/admin/clients", json={"id": "other", "name": "Other again"})
    assert refused.status_code == 409
    assert refused.get_json() == {"error": "The id 'other' belonged to a client that was deleted; its audit "
                                           "history is kept under that id, so the id cannot be used again. "
                                           "Choose another id."}
    set_limit(api, 4)  # the others' chains go on
    assert [entry["seq"] for entry in entries(api)] == [1, 2, 3, 4]
    assert verify(runner).exit_code == 0


def test_a_client_deleted_outside_the_service_is_caught(app, api, chains, runner):
    """DELETE FROM clients keeps the audit log (no foreign key), but records no client_deleted entry."""
    with app.app_context():
        session = db.session()
        session.execute(text("DELETE FROM clients WHERE id = 'other'"))
        session.commit()
    assert len(entries(api, "other")) == 3
    assert_broken(verify(runner), "other", "deleted unrecorded", chains["other"][-1])


# ---- verify -------------------------------------------------------------------------


def test_an_intact_log_verifies_with_a_one_line_summary(api, chains, runner):
    api.create_client("empty", "No entries yet")
    assert api.post("/api/admin/clients/acme/credits", json={"action": "grant", "amount": 5,
                                                             "reason": "Ünïcode, \"quotes\"\nand lines"}).status_code == 200
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"Audit log intact: 7 entries of 3 client\(s\) verified in \d+\.\d s\.\n", result.output)


def test_the_chain_follows_the_documented_encoding(app, api, chains):
    """Another program, given the key, recomputes each hash from what the API shows."""
    previous = GENESIS
    for entry in entries(api):
        encoded = json.dumps(
            {name: entry[name] for name in ("id", "clientId", "seq", "adminId", "action", "details",
                                            "previousValue", "newValue", "createdAt")},
            sort_keys=True, separators=(",", ":"), ensure_ascii=True,
        ).encode("ascii")
        assert entry["hash"] == chain_hash(TEST_SECRET.encode(), previous, encoded)
        previous = entry["hash"]
    [head] = [json.loads(line) for line in app.test_cli_runner().invoke(args=["audit", "heads"]).output.splitlines()
              if json.loads(line)["clientId"] == "acme"]
    assert (head["entryCount"], head["lastEntryId"], head["hash"]) == (3, chains["acme"][-1], previous)


@pytest.mark.parametrize("edit", [
    "details = '{\"changes\": {}, \"reason\": \"nothing to see\"}'",
    "new_value = '{\"monthlyGenerationLimit\": 2000000}'",
    "previous_value = NULL",
    "admin_id = 'mallory@example.com'",
    "created_at = created_at + INTERVAL '1 day'",
    "hash = 'not a hash, and not ASCII: é'",
])
def test_an_edited_entry_is_changed(app, chains, runner, edit):
    target = chains["acme"][1]
    if "INTERVAL" in edit and app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        edit = "created_at = datetime(created_at, '+1 day')"
    with triggers_disabled(app) as session:
        session.execute(text(f"UPDATE credit_audit_log SET {edit} WHERE id = :id"), {"id": target})
    assert_broken(verify(runner), "acme", "changed", target)
    assert "other" not in verify(runner).output


def test_an_entry_deleted_from_the_middle_is_missing(app, chains, runner):
    first, second, third = chains["acme"]
    with triggers_disabled(app) as session:
        session.execute(text("DELETE FROM credit_audit_log WHERE id = :id"), {"id": second})
    line = assert_broken(verify(runner), "acme", "missing", third)
    assert "entry #2 is gone" in line and f"entry {first} (#1)" in line


def test_the_newest_entries_deleted_are_missing_before_the_stored_head(app, chains, runner):
    first, second, third = chains["acme"]
    with triggers_disabled(app) as session:
        session.execute(text("DELETE FROM credit_audit_log WHERE id IN (:a, :b)"), {"a": second, "b": third})
    line = assert_broken(verify(runner), "acme", "newest entries missing", first)
    assert f"counts 3 entries ending at entry {third}" in line


def test_entries_swapped_between_clients_are_reordered(app, chains, runner):
    ours, theirs = chains["acme"][1], chains["other"][1]
    with triggers_disabled(app) as session:
        # Through a parked client, as (client_id, seq) is unique.
        session.execute(text("INSERT INTO clients (id, name, created_at, updated_at) "
                             "VALUES ('parked', 'p', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        move = text("UPDATE credit_audit_log SET client_id = :to WHERE id = :id")
        session.execute(move, {"to": "parked", "id": ours})
        session.execute(move, {"to": "acme", "id": theirs})
        session.execute(move, {"to": "other", "id": ours})
        session.execute(text("DELETE FROM clients WHERE id = 'parked'"))
    result = verify(runner)
    assert_broken(result, "acme", "reordered", theirs)
    assert_broken(result, "other", "reordered", ours)
    assert result.output.splitlines()[-1].startswith("Audit log NOT intact: 2 broken chain(s)")


def test_entries_reordered_within_a_chain(app, chains, runner):
    """The rows' contents exchanged between two ids (the hash covers the id, so neither matches)."""
    first, second, _ = chains["acme"]
    columns = ["admin_id", "action", "details", "previous_value", "new_value", "created_at",
               "seq", "previous_hash", "hash", "key_id"]
    with triggers_disabled(app) as session:
        rows = {row.id: row for row in session.execute(
            text(f"SELECT id, {', '.join(columns)} FROM credit_audit_log WHERE id IN (:a, :b)"),
            {"a": first, "b": second})}
        session.execute(text("UPDATE credit_audit_log SET seq = -seq WHERE id IN (:a, :b)"), {"a": first, "b": second})
        for target, source in ((first, second), (second, first)):
            values = {name: getattr(rows[source], name) for name in columns}
            if isinstance(values["details"], dict):
                values["details"] = json.dumps(values["details"])
            assignments = ", ".join(f"{name} = :{name}" for name in columns)
            if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
                assignments = assignments.replace("details = :details", "details = CAST(:details AS jsonb)")
            session.execute(text(f"UPDATE credit_audit_log SET {assignments} WHERE id = :id"), {**values, "id": target})
    assert_broken(verify(runner), "acme", "reordered", first)


@pytest.mark.parametrize("tamper", [
    "UPDATE audit_heads SET entry_count = 1, last_entry_id = :first, hash = :hash WHERE client_id = 'acme'",
    "DELETE FROM audit_heads WHERE client_id = 'acme'",
])
def test_a_stored_head_that_does_not_match_its_chain(app, api, chains, runner, tamper):
    first = entries(api)[0]
    with triggers_disabled(app) as session:
        session.execute(text(tamper), {"first": first["id"], "hash": first["hash"]})
    assert_broken(verify(runner), "acme", "head mismatch", chains["acme"][-1])


def test_verify_one_client(app, chains, runner):
    with triggers_disabled(app) as session:
        session.execute(text("DELETE FROM credit_audit_log WHERE id = :id"), {"id": chains["other"][0]})
    result = verify(runner, "--client", "acme")
    assert result.exit_code == 0, result.output
    assert "3 entries of client 'acme'" in result.output
    assert_broken(verify(runner, "--client", "other"), "other", "missing", chains["other"][1])
    assert_broken(verify(runner, "--client", "nobody"), "nobody", "no such client", None)


# ---- keys -------------------------------------------------------------------------


def test_entries_signed_by_an_older_key_still_verify_after_a_rotation(database_url, clock, api, chains, runner):
    rotated = create_app(config_for(database_url, CLOCK=clock, AUDIT_HMAC_KEYS=f"{NEW_KEY},{TestConfig.AUDIT_HMAC_KEYS}"))
    api_after = type(api)(rotated.test_client(), api.keys)
    set_limit(api_after, 4)
    newest = entries(api_after)[-1]
    with rotated.app_context():
        key_ids = db.session().execute(text("SELECT key_id FROM credit_audit_log WHERE client_id = 'acme' "
                                            "ORDER BY id")).scalars().all()
    assert key_ids == [TEST_KEY_ID] * 3 + ["2027"]
    assert newest["seq"] == 4
    result = rotated.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "7 entries" in result.output

    without_old = create_app(config_for(database_url, CLOCK=clock, AUDIT_HMAC_KEYS=NEW_KEY))
    result = without_old.test_cli_runner().invoke(args=["audit", "verify"])
    assert_broken(result, "acme", "unknown key", chains["acme"][0])
    for app in (rotated, without_old):
        dispose_engines(app)


def test_an_entry_signed_with_another_key_is_changed(database_url, clock, chains, runner):
    """Same key id, another secret: nothing verifies."""
    impostor = create_app(config_for(database_url, CLOCK=clock,
                                     AUDIT_HMAC_KEYS=f"{TEST_KEY_ID}:an-impostor-secret-of-enough-length-000"))
    result = impostor.test_cli_runner().invoke(args=["audit", "verify", "--client", "acme"])
    assert_broken(result, "acme", "changed", chains["acme"][0])
    dispose_engines(impostor)


@pytest.mark.parametrize(("value", "message"), [
    ("no-colon-here", "comma-separated id:secret pairs"),
    ("bad id:" + "s" * 40, "comma-separated id:secret pairs"),
    (":" + "s" * 40, "comma-separated id:secret pairs"),
    ("short:tooshort", "shorter than 32 characters"),
    ("a:" + "s" * 40 + ",a:" + "t" * 40, "names key 'a' a second time"),
    ("a:" + "s" * 40 + ",", "comma-separated id:secret pairs"),
])
def test_malformed_keys_refuse_to_start(value, message):
    with pytest.raises(ConfigurationError, match=message) as refused:
        create_app(config_for("sqlite://", AUDIT_HMAC_KEYS=value))
    assert "\n" not in str(refused.value)
    assert "s" * 40 not in str(refused.value)  # never the secret


def test_without_keys_the_development_key_file_is_used_and_otherwise_the_app_refuses(tmp_path):
    app = Flask("credits_service", instance_path=str(tmp_path / "instance"))
    app.config["AUDIT_HMAC_KEYS"] = None
    with pytest.raises(ConfigurationError, match="AUDIT_HMAC_KEYS is not set"):
        load_audit_keys(app)
    path = str(tmp_path / "instance" / "audit-hmac.key")
    assert make_dev_key(path) is True
    assert make_dev_key(path) is False
    keys = load_audit_keys(app)
    assert keys.signing_id == "dev" and len(keys.secrets["dev"]) == 64
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"


def test_the_entry_point_refuses_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AUDIT_HMAC_KEYS": "nonsense",
           "DATABASE_URL": "sqlite:///" + str(tmp_path / "x.sqlite3")}
    done = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        "Invalid configuration: AUDIT_HMAC_KEYS entry 1 of 1 is not an id:secret pair (a secret cannot contain ',') "
        "(expected comma-separated id:secret pairs, the first signing new entries)."
    ]


# ---- heads and anchors --------------------------------------------------------------


def heads_file(runner, tmp_path):
    result = runner.invoke(args=["audit", "heads"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "heads.jsonl"
    path.write_text(result.output)
    return path


def test_heads_are_json_lines(api, chains, runner, tmp_path, clock):
    lines = [json.loads(line) for line in heads_file(runner, tmp_path).read_text().splitlines()]
    assert [set(line) for line in lines] == [{"clientId", "entryCount", "lastEntryId", "hash", "updatedAt"}] * 2
    acme = lines[0]
    newest = entries(api)[-1]
    assert (acme["clientId"], acme["entryCount"], acme["lastEntryId"], acme["hash"], acme["updatedAt"]) == (
        "acme", 3, newest["id"], newest["hash"], newest["createdAt"])


def test_a_chain_rolled_back_whole_passes_alone_but_not_against_the_anchor(app, api, chains, runner, tmp_path):
    anchor = heads_file(runner, tmp_path)
    first, second, third = chains["acme"]
    with triggers_disabled(app) as session:
        # Back to the state after the first entry: entries and head consistent with each other.
        session.execute(text("DELETE FROM credit_audit_log WHERE id IN (:b, :c)"), {"b": second, "c": third})
        session.execute(text("UPDATE audit_heads SET entry_count = 1, last_entry_id = :id, "
                             "hash = (SELECT hash FROM credit_audit_log WHERE id = :id) WHERE client_id = 'acme'"),
                        {"id": first})
    assert verify(runner).exit_code == 0
    line = assert_broken(verify(runner, "--against", str(anchor)), "acme", "rolled back", first)
    assert "the anchor records 3 entries" in line
    assert verify(runner, "--against", str(anchor), "--client", "other").exit_code == 0


def test_an_anchor_passes_a_chain_grown_past_it_even_by_its_deletion(api, chains, runner, tmp_path):
    anchor = heads_file(runner, tmp_path)
    set_limit(api, 9)  # growing past the anchor is fine
    assert verify(runner, "--against", str(anchor)).exit_code == 0
    assert api.delete("/api/admin/clients/other").status_code == 204
    assert verify(runner, "--against", str(anchor)).exit_code == 0


NOT_A_HEAD = "is not a head written by `flask audit heads`"
WRONG_TYPE = "has a field of the wrong type"


@pytest.mark.parametrize(("line", "problem"), [
    ('{"clientId": "acme", "entryCount": 3, "hash": ', NOT_A_HEAD),
    ("acme 3 " + "a" * 64, NOT_A_HEAD),
    ('["acme", 3, "' + "a" * 64 + '"]', NOT_A_HEAD),
    ('{"clientId": "acme", "entryCount": 3}', NOT_A_HEAD),
    ('{"entryCount": 3, "hash": "' + "a" * 64 + '"}', NOT_A_HEAD),
    ('{"clientId": "acme", "entryCount": "3", "hash": "' + "a" * 64 + '"}', WRONG_TYPE),
    ('{"clientId": 7, "entryCount": 3, "hash": "' + "a" * 64 + '"}', WRONG_TYPE),
    ('{"clientId": "acme", "entryCount": 3, "hash": null}', WRONG_TYPE),
    ('{"clientId": "acme", "entryCount": -1, "hash": "' + "a" * 64 + '"}', WRONG_TYPE),
    ('{"clientId": "acme", "entryCount": true, "hash": "' + "a" * 64 + '"}', WRONG_TYPE),
], ids=["cut-short", "not-json", "not-an-object", "no-hash", "no-client-id", "count-as-text", "numeric-client-id",
        "null-hash", "negative-count", "count-as-boolean"])
def test_a_bad_anchor_file_is_a_usage_error_naming_its_line(chains, runner, tmp_path, line, problem):
    anchor = heads_file(runner, tmp_path)
    heads = anchor.read_text()
    assert heads.count("\n") == 2
    anchor.write_text(heads + "\n" + line + "\n")  # after the two heads and a blank line: line 4
    result = verify(runner, "--against", str(anchor))
    assert_cli_refusal(result, 2, f"line 4 {problem}")
    assert "--against" in result.output
    assert "Audit log" not in result.output  # refused before anything was verified


def test_an_anchor_file_that_is_not_utf8_is_a_usage_error(chains, runner, tmp_path):
    anchor = heads_file(runner, tmp_path)
    anchor.write_bytes(anchor.read_bytes() + b'{"clientId": "\xff"}\n')
    result = verify(runner, "--against", str(anchor))
    assert_cli_refusal(result, 2, "is not UTF-8 text")
    assert "Audit log" not in result.output


def test_a_missing_anchor_file_is_a_usage_error(chains, runner, tmp_path):
    result = verify(runner, "--against", str(tmp_path / "nowhere.jsonl"))
    assert_cli_refusal(result, 2, "Invalid value for '--against'")
    assert "nowhere.jsonl" in result.output
