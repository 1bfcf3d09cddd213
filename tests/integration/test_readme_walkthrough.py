"""The README's "Try it" walk-through runs as written against a live server and answers as shown.

The bash block after the `<!-- walkthrough ... -->` marker is run as a newcomer runs it after
`make run`: from the repository root, with CREDITS_KEY a write key named `admin`, against a
gunicorn instance on a fresh database (the block's own `flask keys create` reaches the same
database through DATABASE_URL and AUDIT_HMAC_KEYS). Each call prints `HTTP <status>` after its
answer. The block after `<!-- walkthrough-answers -->` shows those answers: the statuses must
be the same, in the same order, and every answer shown whole must carry the same fields and
values, but for those that change with the day or the run.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import issue_keys, migrated
from credits_service.config import TestConfig

from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
STATUS_LINE = re.compile(r"^HTTP (\d{3})$", re.MULTILINE)
HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*: \S")
# Fields whose values depend on the date, the clock or the key: the README shows them as examples.
VARYING = {"createdAt", "updatedAt", "expiresAt", "resetDate", "month", "hash", "error"}


def fenced_block_after(marker: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert marker in text, f"README.md has lost its {marker!r} marker"
    block = re.search(r"^```[a-z]*\n(.*?)^```$", text[text.index(marker):], re.MULTILINE | re.DOTALL)
    assert block, f"README.md has no fenced block after {marker!r}"
    return block.group(1)


def answers(output: str) -> list[tuple[int, str]]:
    """(status, what the call printed before it) for each `HTTP <status>` line, in order."""
    found, start = [], 0
    for status in STATUS_LINE.finditer(output):
        found.append((int(status.group(1)), output[start:status.start()].replace("\r", "")))
        start = status.end()
    return found


def json_body(printed: str):
    """The answer's JSON, when it is whole: its last line (after any headers `curl -i` shows)."""
    lines = [line for line in printed.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("{"):
        return None
    try:
        return json.loads(lines[-1])
    except ValueError:  # shown cut short
        return None


def assert_same(shown, got, where: str) -> None:
    if isinstance(shown, dict):
        assert isinstance(got, dict) and shown.keys() == got.keys(), (
            f"{where}: the README shows the fields {sorted(shown)}, the service answered {got!r}")
        for name, value in shown.items():
            if name not in VARYING:
                assert_same(value, got[name], f"{where}.{name}")
    else:
        assert shown == got, f"{where}: the README shows {shown!r}, the service answered {got!r}"


@pytest.fixture
def fresh_database(request, tmp_path):
    if os.environ.get("TEST_DATABASE_URL"):
        url = request.getfixturevalue("make_postgres_database")()
    else:
        url = "sqlite:///" + str(tmp_path / "credits.sqlite3")
    migrated(url)
    return url


def test_the_walkthrough_runs_and_answers_as_the_readme_shows(fresh_database, tmp_path):
    walkthrough = fenced_block_after("<!-- walkthrough:")
    shown = answers(fenced_block_after("<!-- walkthrough-answers -->"))
    assert shown, "the README shows no answers after the walk-through"
    assert (ROOT / ".venv" / "bin" / "flask").exists(), "the walk-through runs .venv/bin/flask: `make install` makes it"

    # The key `make run` prints: a write key named admin, which the audit search filters on.
    admin_key = issue_keys(fresh_database, admin="write")["admin"]
    instance = Instance(fresh_database, workers=2, log_path=tmp_path / "gunicorn.log").start()
    try:
        run = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + walkthrough],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ,
                 "API": instance.url, "CREDITS_KEY": admin_key,
                 "DATABASE_URL": fresh_database, "AUDIT_HMAC_KEYS": TestConfig.AUDIT_HMAC_KEYS,
                 "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])},
        )
    finally:
        instance.stop()
    assert run.returncode == 0, f"the walk-through failed:\n{run.stdout}\n{run.stderr}"
    got = answers(run.stdout)

    assert [status for status, _ in got] == [status for status, _ in shown], (
        f"statuses: the README shows {[s for s, _ in shown]}, the walk-through got {[s for s, _ in got]}:\n{run.stdout}")
    for number, ((_, shown_text), (_, got_text)) in enumerate(zip(shown, got), start=1):
        where = f"answer {number}"
        body = json_body(got_text)
        if body is not None and "items" in body:
            assert body["items"], f"{where}: the walk-through's search finds nothing:\n{got_text}"
        if got_text.lstrip().startswith("id,clientId,"):
            assert len(got_text.strip().splitlines()) > 1, f"{where}: the export has no entries"
        for line in shown_text.splitlines():
            if HEADER_LINE.match(line) and "…" not in line:
                assert line in got_text.splitlines(), f"{where}: no {line!r} in\n{got_text}"
        shown_body = json_body(shown_text)
        if shown_body is not None:
            assert_same(shown_body, body, where)
