"""Instructions per request, counted by valgrind (callgrind): a measure machine noise cannot move.

A throughput run on a shared 2-core machine moves by tens of percent from one minute to the
next (the ratio within a run is steadier, but not steady enough to see a 5 % change). The
number of instructions a request executes does not move: it only changes with the code. For
each endpoint and app (service, ceiling, and the framework floor on the platform routes), a
child process under `valgrind --tool=callgrind --instr-atstart=no` imports the app, answers
WARM requests uninstrumented, then counts the instructions of the next COUNT requests, which it
calls through the app's WSGI callable in-process, a random client each, against PostgreSQL.

Counted: everything the worker runs for a request from the WSGI call to the answer's last byte
(Flask, the libraries, SQLAlchemy, psycopg and libpq on the client side). Not counted:
gunicorn's HTTP parsing and socket writes, the kernel and PostgreSQL, which all sides share.
So the ratio of counts is not the throughput ratio: it says how much more Python one side runs
than the other, and a change's own effect on it.

count_within() counts only what runs inside given functions (bench/profile.py's layers): the
child wraps each so that callgrind collects from its entry to its return.

Prints a table and writes bench/results/instructions.json. Needs valgrind and a C compiler
(bench/run.sh installs valgrind): the start and stop of counting are callgrind's client
requests, compiled here into a small shared library the child calls through ctypes.
"""

import functools
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNT = int(os.environ.get("COUNT", "200"))
WARM = int(os.environ.get("WARM", "100"))
# count_within's target that measures what one wrapped call adds by itself.
CALIBRATION = "calibration"

CONTROL_C = """
#include <valgrind/callgrind.h>
void count_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void count_stop(void) { CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
void count_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def _resolve(target: str, app) -> list[tuple[object, str]]:
    """A target -> the (owner, attribute) pairs to wrap.

    "module:Name.attribute" is an attribute (a function, a method of a class, a callback held
    by an object); "hooks:module" is every request hook of the app defined in that module.
    """
    import importlib

    kind, _, where = target.partition(":")
    if kind == "hooks":
        lists = [*app.before_request_funcs.values(), *app.after_request_funcs.values(),
                 *app.teardown_request_funcs.values(), app.teardown_appcontext_funcs]
        found = [(hooks, i) for hooks in lists for i, hook in enumerate(hooks)
                 if getattr(hook, "__module__", "").startswith(where)]
        if not found:
            raise LookupError(f"no request hook of the app comes from {where}")
        return found
    owner = importlib.import_module(kind)
    *path, attribute = where.split(".")
    for name in path:
        owner = getattr(owner, name)
    getattr(owner, attribute)  # fails loudly when a library or the service renamed it
    return [(owner, attribute)]


def _collecting(function, toggle, calls: list[int]):
    """function, with callgrind collecting from its entry to its return (the outermost call only)."""
    depth = [0]

    @functools.wraps(function)
    def collected(*args, **kwargs):
        depth[0] += 1
        if depth[0] == 1:
            calls[0] += 1
            toggle()
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                toggle()

    return collected


def child(side: str, method: str, path: str, key: str, body: str, control: str, targets: str) -> None:
    """Runs under valgrind: WARM requests, then COUNT counted ones; any answer but 200 fails it.
    With targets (JSON), only what runs inside them is collected; prints how often they ran."""
    import ctypes
    import importlib
    import io
    import random

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from harness import APPS, CLIENT_PREFIX, CLIENTS

    module, attribute = APPS[side].split(":")
    app = getattr(importlib.import_module(module), attribute)
    counting = ctypes.CDLL(control)

    calls = [0]
    calibrate = None
    for target in json.loads(targets):
        if target == CALIBRATION:
            calibrate = _collecting(lambda: None, counting.count_toggle, calls)
            continue
        for owner, name in _resolve(target, app):
            if isinstance(owner, list):
                owner[name] = _collecting(owner[name], counting.count_toggle, calls)
            else:
                setattr(owner, name, _collecting(getattr(owner, name), counting.count_toggle, calls))

    random.seed(1)
    statuses = []
    data = body.encode()

    def one() -> None:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path.format(id=f"{CLIENT_PREFIX}{random.randrange(CLIENTS)}"),
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.input": io.BytesIO(data), "CONTENT_LENGTH": str(len(data)),
            "CONTENT_TYPE": "application/json" if data else "", "HTTP_AUTHORIZATION": f"Bearer {key}",
        }
        for _ in app(environ, lambda status, headers, exc_info=None: statuses.append(status)):
            pass
        if calibrate:
            calibrate()

    for _ in range(WARM):
        one()
    calls[0] = 0
    counting.count_start()
    for _ in range(COUNT):
        one()
    counting.count_stop()
    refused = [status for status in statuses if not status.startswith("200")]
    if refused:
        sys.exit(f"{side} {method} {path}: {len(refused)} answers were not 200, e.g. {refused[0]}")
    print(f"CALLS {calls[0]}")


def _callgrind(side: str, endpoint, key: str, env: dict, workdir: Path, targets: list[str]) -> tuple[int, int]:
    """(instructions collected, wrapped calls) over the COUNT counted requests."""
    out = workdir / f"callgrind-{side}"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--collect-atstart={'no' if targets else 'yes'}",
         f"--callgrind-out-file={out}", sys.executable, __file__, "child", side, endpoint.method, endpoint.path,
         key, endpoint.body, str(workdir / "count.so"), json.dumps(targets)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} {endpoint.name} failed under valgrind:\n{done.stderr[-2000:]}")
    # count_stop's dump is <out>.1; <out> itself is the dump at exit, of nothing (counting stopped).
    counted = out.with_name(out.name + ".1")
    total = next(int(line.split()[1]) for line in counted.read_text().splitlines() if line.startswith("summary:"))
    for dump in workdir.glob(f"callgrind-{side}*"):
        dump.unlink()
    calls = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("CALLS "))
    return total, calls


def count(side: str, endpoint, key: str, env: dict, workdir: Path) -> int:
    """The instructions one request to endpoint costs on side, averaged over COUNT."""
    return _callgrind(side, endpoint, key, env, workdir, [])[0] // COUNT


def count_within(side: str, endpoint, key: str, env: dict, workdir: Path, targets: list[str]) -> tuple[int, float]:
    """The instructions per request run inside targets (see _resolve), and how many calls of them
    per request; the wrapping's own cost is still in it (subtract calls x count_within's
    CALIBRATION per call)."""
    total, calls = _callgrind(side, endpoint, key, env, workdir, targets)
    return total // COUNT, calls / COUNT


def seeded_database() -> tuple[str, dict[str, str]]:
    """A fresh database with CLIENTS clients, seeded through the service: (its URL, keys by role)."""
    from harness import Gunicorn, fresh_database, migrate_and_issue_keys, seed_clients

    database_url = fresh_database()
    keys = migrate_and_issue_keys(database_url)
    with Gunicorn("service", database_url) as service:
        seed_clients(service.url, keys["write"])
    return database_url, keys


@contextmanager
def counting(database_url: str):
    """What count() needs besides the endpoint and key: yields (environment, workdir)."""
    from harness import service_env

    # A valid key is checked again after API_KEY_CACHE_SECONDS of real time; under valgrind, which
    # runs some 50 times slower, the default 2 s would be every few dozen requests instead of
    # every thousand or so.
    env = {**service_env(database_url), "API_KEY_CACHE_SECONDS": "3600"}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "count.c").write_text(CONTROL_C)
        # Metrics as under gunicorn: each process's values in files of this folder.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
        (workdir / "metrics").mkdir()
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(workdir / "count.so"), str(workdir / "count.c")],
                       check=True)
        yield env, workdir


def run() -> dict:
    from harness import ENDPOINTS, measured_commit

    rows = []
    print(f"instructions per request, {COUNT} requests counted after {WARM} (valgrind callgrind, in-process)")
    print(f"{'endpoint':<20} {'service':>11} {'floor':>11} {'ceiling':>11} {'floor/service':>13} "
          f"{'ceiling/service':>15}", flush=True)
    database_url, keys = seeded_database()
    with counting(database_url) as (env, workdir):
        # The quota read first: the grants' audit entries would change what it answers.
        for endpoint in ENDPOINTS:
            counted = {side: count(side, endpoint, keys[endpoint.role], env, workdir) for side in endpoint.sides}
            row = {"endpoint": endpoint.name, **counted}
            if "floor" in counted:
                row["floor_to_service"] = round(counted["floor"] / counted["service"], 2)
            row["ceiling_to_service"] = round(counted["ceiling"] / counted["service"], 2)
            rows.append(row)
            floor = f"{counted['floor']:>11,}" if "floor" in counted else f"{'':>11}"
            to_floor = f"{row['floor_to_service']:.2f}" if "floor" in counted else ""
            print(f"{endpoint.name:<20} {counted['service']:>11,} {floor} {counted['ceiling']:>11,} "
                  f"{to_floor:>13} {row['ceiling_to_service']:>15.2f}", flush=True)
    return {"commit": measured_commit(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {"counted": COUNT, "warm": WARM, "clients": int(os.environ.get("CLIENTS", "1000"))},
            "endpoints": rows}


def main() -> None:
    from harness import RESULTS

    report = run()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "instructions.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(*sys.argv[2:])
    else:
        main()
