"""Where a request's cost goes, on PostgreSQL: round trips, instructions by layer, py-spy.

1. Round trips: each of the four endpoints once, in-process, with libpq's protocol trace on the
   connection; every Query or Sync the client sends waits for the server's answer: one round trip.
2. For the usage and quota-status endpoints, py-spy samples all gunicorn workers while wrk loads
   the endpoint for DURATION seconds, idle included so that waiting on PostgreSQL shows. Only
   samples inside a request (gunicorn's handle_request) count, from that frame down.
3. For the same two, the service's and the floor's instructions per request by layer
   (COUNTED_LAYERS), counted as bench/run.sh instructions counts them: callgrind collects only
   inside the layer's functions, one run per layer; what no layer holds is Flask, Werkzeug, the
   decorators' own wrappers (flask-smorest, flask-httpauth, Flask-Limiter) and the view.
Writes bench/results/profile.txt. Needs valgrind, as the instructions mode does.
"""

import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from harness import (BIN, CLIENT_PREFIX, DURATION, ENDPOINTS, RESULTS, Gunicorn, measured_commit, service_env,
                     wrk)
import instructions
from instructions import CALIBRATION, COUNT, count_within, counting, seeded_database

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
# Instructions by layer: (label, the layer it is part of or None, {side: functions (see
# instructions._resolve)}). A part is counted inside its layer too; the service method's parts
# are the floor's whole database work.
_ENGINE = "sqlalchemy.engine.base:"


def _both(function: str) -> dict[str, list[str]]:
    return {"service": [function], "floor": [function]}


COUNTED_LAYERS = [
    ("request id (its hooks)", None, {"service": ["hooks:credits_service.request_id"]}),
    ("access log (its hooks)", None, {"service": ["hooks:credits_service.logs"]}),
    ("metrics (its hook)", None, {"service": ["hooks:credits_service.metrics"]}),
    ("key check (verify_token)", None, {"service": ["credits_service.auth:auth.verify_token_callback"],
                                        "floor": ["bench.floor:auth.verify_token_callback"]}),
    ("ORM session made", "key check (verify_token)",
     {"service": ["credits_service.extensions:db.session.registry.createfunc"]}),
    ("ORM session removed (teardown)", None, {"service": ["hooks:flask_sqlalchemy"]}),
    ("services built for the view", None, {"service": ["credits_service.services:consumption"]}),
    ("service method", None, {"service": ["credits_service.services.consumption:ConsumptionService.quota_status",
                                          "credits_service.services.consumption:ConsumptionService.consume"]}),
    ("connection checked out", "service method", _both(_ENGINE + "Engine.connect")),
    ("AUTOCOMMIT option", "service method", _both(_ENGINE + "Connection.execution_options")),
    ("statement executed", "service method", _both(_ENGINE + "Connection.execute")),
    ("connection given back", "service method", _both(_ENGINE + "Connection.close")),
    ("body parsed (webargs)", None, _both("webargs.core:Parser.parse")),
    ("answer dumped (marshmallow)", None, _both("marshmallow.schema:Schema.dump")),
]
REST = "the rest: Flask, Werkzeug, wrappers, view"
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
    for _, method, path, role, body, *_ in ENDPOINTS:
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
    raw = RESULTS / "profile.tmp"
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


def layers(database_url: str, keys: dict[str, str]) -> str:
    """Instructions per request of each layer, service beside floor, for the PROFILED endpoints."""
    lines = [f"Instructions per request by layer ({COUNT} requests counted, valgrind callgrind, in-process; "
             + "blank: the side has no such layer):"]
    with counting(database_url) as (env, workdir):
        for endpoint in ENDPOINTS:
            if endpoint.name not in PROFILED:
                continue
            key = keys[endpoint.role]
            overhead, calls = count_within("service", endpoint, key, env, workdir, [CALIBRATION])
            per_call = overhead / calls  # what the wrapping adds to each call it collects
            totals = {side: instructions.count(side, endpoint, key, env, workdir) for side in ("service", "floor")}
            lines += ["", f"{endpoint.method} {endpoint.path}", f"{'layer':<44} {'service':>10} {'floor':>10}"]
            top = dict.fromkeys(totals, 0)  # the layers no other layer holds, per side
            parents = {label: targets for label, _, targets in COUNTED_LAYERS}
            for label, part_of, targets in COUNTED_LAYERS:
                cells = {}
                for side, functions in targets.items():
                    if endpoint.body == "" and functions == ["webargs.core:Parser.parse"]:
                        continue  # no body to parse
                    collected, calls = count_within(side, endpoint, key, env, workdir, functions)
                    cells[side] = max(round(collected - calls * per_call), 0)
                    if part_of is None or side not in parents[part_of]:
                        top[side] += cells[side]
                if cells:
                    lines.append(f"{'  of which ' + label if part_of else label:<44} "
                                 + " ".join(f"{cells[side]:>10,}" if side in cells else f"{'':>10}"
                                            for side in totals))
                    print(lines[-1], flush=True)
            lines.append(f"{REST:<44} " + " ".join(f"{totals[side] - top[side]:>10,}" for side in totals))
            lines.append(f"{'the request':<44} " + " ".join(f"{totals[side]:>10,}" for side in totals))
            print("\n".join(lines[-2:]), flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    database_url, keys = seeded_database()
    RESULTS.mkdir(exist_ok=True)
    sections = [f"commit {measured_commit()}", round_trips(database_url, keys)]
    print(sections[-1], flush=True)
    with Gunicorn("service", database_url) as service:
        for endpoint, method, path, role, body, _ in ENDPOINTS:
            if endpoint not in PROFILED:
                continue
            wrk(service.url, method, path, keys[role], body, duration=2)  # warm up
            sections.append(profile(service, method, path, keys[role], body))
            print(sections[-1], flush=True)
    sections.append(layers(database_url, keys))
    out = RESULTS / "profile.txt"
    out.write_text("\n".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
