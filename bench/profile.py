"""Where a request's time goes, on PostgreSQL: round trips, then py-spy under gunicorn and wrk.

1. Round trips: each of the four endpoints once, in-process, with libpq's protocol trace on the
   connection; every Query or Sync the client sends waits for the server's answer: one round trip.
2. For the usage and quota-status endpoints, py-spy samples all gunicorn workers while wrk loads
   the endpoint for DURATION seconds, idle included so that waiting on PostgreSQL shows. Only
   samples inside a request (gunicorn's handle_request) count, from that frame down.
Writes bench/results/profile-<LABEL>.txt: the share by layer, by function (inclusive) and by leaf.
"""

import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from endpoints import ENDPOINTS
from harness import (BIN, CLIENT_PREFIX, DURATION, RESULTS, Gunicorn, fresh_database, migrate_and_issue_keys,
                     seed_clients, service_env, wrk)

LABEL = os.environ.get("LABEL", "latest")
PROFILED = ("POST usage", "GET quota-status")
TOP = 30

# The innermost frame from one of these decides the layer a sample is charged to.
LAYERS = [
    ("PostgreSQL round trips (psycopg)", ("psycopg/",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("flask-smorest / webargs / marshmallow", ("flask_smorest/", "webargs/", "marshmallow/", "apispec/")),
    ("Flask-Limiter / limits", ("flask_limiter/", "limits/")),
    ("Flask-HTTPAuth", ("flask_httpauth",)),
    ("Flask / Werkzeug", ("flask/", "werkzeug/")),
    ("logging", ("logging/", "pythonjsonlogger/")),
    ("credits_service", ("credits_service/",)),
    ("gunicorn", ("gunicorn/",)),
]
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def parse(raw: Path) -> Counter:
    """py-spy's raw (collapsed) output: 'frame;frame;... count' -> {(frames...): samples}."""
    stacks = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        inside = [i for i, frame in enumerate(frames) if ".handle_request (" in frame]
        if inside:
            stacks[tuple(frames[inside[0] + 1:])] += int(count)
    return stacks


def name(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def layer(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        _, file = name(frame)
        for title, markers in LAYERS:
            if any(marker in file for marker in markers):
                return title
    return "other (stdlib, interpreter)"


def summary(title: str, stacks: Counter) -> str:
    stacks = Counter({frames: count for frames, count in stacks.items() if frames})
    total = sum(stacks.values())
    layers, inclusive, leaves = Counter(), Counter(), Counter()
    for frames, count in stacks.items():
        layers[layer(frames)] += count
        for function in {"{} ({})".format(*name(frame)) for frame in frames}:
            inclusive[function] += count
        leaves["{} ({})".format(*name(frames[-1]))] += count

    def table(counter: Counter, limit: int) -> list[str]:
        return [f"{count * 100 / total:6.1f}%  {what}" for what, count in counter.most_common(limit)]

    return "\n".join([
        f"{title}: {total} samples inside requests",
        "", "By layer (the innermost frame of a known package):", *table(layers, len(LAYERS) + 1),
        "", f"Top {TOP} functions, inclusive:", *table(inclusive, TOP),
        "", f"Top {TOP} leaf frames (self):", *table(leaves, TOP), "",
    ])


def round_trips(database_url: str, keys: dict[str, str]) -> str:
    """The statements each endpoint sends, one line per round trip, from libpq's trace."""
    os.environ.update(service_env(database_url))
    from psycopg.pq import Trace
    from sqlalchemy import event

    from credits_service import create_app
    from credits_service.extensions import db

    trace = tempfile.NamedTemporaryFile("w+", suffix=".trace")
    app = create_app()
    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _trace(dbapi_connection, _record):
            dbapi_connection.pgconn.trace(trace.fileno())
            dbapi_connection.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

    client = app.test_client()
    lines = ["Round trips to PostgreSQL for one request (in-process, libpq trace; ';' is the pool's pre-ping):", ""]
    for endpoint, method, path, role, body in ENDPOINTS:
        url = path.replace("{id}", f"{CLIENT_PREFIX}1")
        headers = {"Authorization": f"Bearer {keys[role]}", "Content-Type": "application/json"}
        for _ in range(2):  # the first request connects and fills caches
            start = os.path.getsize(trace.name)
            response = client.open(url, method=method, headers=headers, data=body or None)
            assert response.status_code == 200, response.get_data(as_text=True)
        trace.seek(start)
        # The client waits for the answer to each Query (simple protocol) or Sync (extended).
        trips, statement = [], None
        for line in trace.read().splitlines():
            direction, _, kind, *rest = line.split("\t") + ["", ""]
            if direction != "F":
                continue
            if kind == "Parse":
                statement = rest[0].strip().split('" "')[-1].strip('"')
            elif kind in ("Query", "Sync"):
                if kind == "Query":
                    statement = rest[0].strip().strip('"')
                trips.append("  " + (" ".join((statement or "(a prepared statement)").split()[:7])))
                statement = None
        lines += [f"{method} {path}: {len(trips)} round trips", *trips, ""]
    return "\n".join(lines)


def profile(service: Gunicorn, method: str, path: str, key: str, body: str) -> str:
    raw = RESULTS / f"profile-{LABEL}.tmp"
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(service.process.pid), "--subprocesses", "--nonblocking",
         "--idle", "--format", "raw", "--duration", str(DURATION), "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wrk(service.url, method, path, key, body)
    if spy.wait(timeout=60):
        raise RuntimeError(f"py-spy failed: {spy.stderr.read()}")
    text = summary(f"{method} {path}, wall time", parse(raw))
    raw.unlink()
    return text


def main() -> None:
    database_url = fresh_database("credits_bench")
    keys = migrate_and_issue_keys(database_url)
    RESULTS.mkdir(exist_ok=True)
    sections = []
    with Gunicorn("app:app", database_url) as service:
        seed_clients(service.url, keys["write"])
        sections.append(round_trips(database_url, keys))
        print(sections[-1], flush=True)
        for endpoint, method, path, role, body in ENDPOINTS:
            if endpoint not in PROFILED:
                continue
            wrk(service.url, method, path, keys[role], body, duration=2)  # warm up
            sections.append(profile(service, method, path, keys[role], body))
            print(sections[-1], flush=True)
    out = RESULTS / f"profile-{LABEL}.txt"
    out.write_text("\n".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
