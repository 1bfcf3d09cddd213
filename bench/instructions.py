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
gunicorn's HTTP parsing and socket writes, the kernel and PostgreSQL, which the service and the
ceiling share. So the ratio of counts is not the throughput ratio: it says how much more Python
one side runs than the other, and a change's own effect on it.

Prints a table and writes bench/results/instructions-<LABEL>.json. Needs valgrind and a C
compiler (bench/run.sh installs valgrind): the start and stop of counting are callgrind's client
requests, compiled here into a small shared library the child calls through ctypes.
"""

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
# side -> module[:attribute] holding its WSGI app (attribute "app" when not given). The bounds
# mode's variants (bench/bounds.py) are counted here too.
APPS = {"service": "app", "floor": "bench.floor", "ceiling": "bench.ceiling",
        "floor-plain": "bench.bounds:floor_plain", "service-plain": "bench.bounds:service_plain",
        "service-bare": "bench.bounds:service_bare"}
PLATFORM = ("POST usage", "GET quota-status")

CONTROL_C = """
#include <valgrind/callgrind.h>
void count_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void count_stop(void) { CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
"""


def child(side: str, method: str, path: str, key: str, body: str, control: str) -> None:
    """Runs under valgrind: WARM requests, then COUNT counted ones; any answer but 200 fails it."""
    import ctypes
    import importlib
    import io
    import random

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    module, _, attribute = APPS[side].partition(":")
    app = getattr(importlib.import_module(module), attribute or "app")
    if side.startswith("service"):
        # A valid key is checked again after 2 s of real time; under valgrind, which runs some 50
        # times slower, that would be every few dozen requests instead of every thousand or so.
        from credits_service.services import keys

        keys.KEY_CHECK_CACHE_SECONDS = 10**9
    from harness import CLIENT_PREFIX, CLIENTS

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

    counting = ctypes.CDLL(control)
    for _ in range(WARM):
        one()
    counting.count_start()
    for _ in range(COUNT):
        one()
    counting.count_stop()
    refused = [status for status in statuses if not status.startswith("200")]
    if refused:
        sys.exit(f"{side} {method} {path}: {len(refused)} answers were not 200, e.g. {refused[0]}")


def count(side: str, method: str, path: str, key: str, body: str, env: dict, workdir: Path) -> int:
    out = workdir / f"callgrind-{side}"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "child", side, method, path, key, body, str(workdir / "count.so")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} {method} {path} failed under valgrind:\n{done.stderr[-2000:]}")
    # count_stop's dump is <out>.1; <out> itself is the dump at exit, of nothing (counting stopped).
    counted = out.with_name(out.name + ".1")
    total = next(int(line.split()[1]) for line in counted.read_text().splitlines() if line.startswith("summary:"))
    for dump in workdir.glob(f"callgrind-{side}*"):
        dump.unlink()
    return total // COUNT


@contextmanager
def counting_setup():
    """A seeded database and what count() needs: yields (keys by role, environment, workdir)."""
    from harness import (
        Gunicorn,
        fresh_database,
        migrate_and_issue_keys,
        seed_clients,
        service_env,
    )

    database_url = fresh_database("credits_bench")
    keys = migrate_and_issue_keys(database_url)
    with Gunicorn("app:app", database_url) as service:
        seed_clients(service.url, keys["write"])
    env = service_env(database_url)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "count.c").write_text(CONTROL_C)
        # Metrics as under gunicorn: each process's values in files of this folder.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
        (workdir / "metrics").mkdir()
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(workdir / "count.so"), str(workdir / "count.c")],
                       check=True)
        yield keys, env, workdir


def run(label: str) -> dict:
    from endpoints import ENDPOINTS

    rows = []
    print(f"instructions per request, {COUNT} requests counted after {WARM} (valgrind callgrind, in-process)")
    print(f"{'endpoint':<20} {'service':>11} {'floor':>11} {'ceiling':>11} {'ceiling/service':>15}", flush=True)
    with counting_setup() as (keys, env, workdir):
        # The quota read first: the grants' audit entries would change what it answers.
        for name, method, path, role, body in ENDPOINTS:
            sides = ("service", "floor", "ceiling") if name in PLATFORM else ("service", "ceiling")
            counted = {side: count(side, method, path, keys[role], body, env, workdir) for side in sides}
            row = {"endpoint": name, **counted, "ceiling_to_service": round(counted["ceiling"] / counted["service"], 2)}
            rows.append(row)
            floor = f"{counted['floor']:>11,}" if "floor" in counted else f"{'':>11}"
            print(f"{name:<20} {counted['service']:>11,} {floor} {counted['ceiling']:>11,} "
                  f"{row['ceiling_to_service']:>15.2f}", flush=True)
    return {"label": label, "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {"counted": COUNT, "warm": WARM, "clients": int(os.environ.get("CLIENTS", "1000"))},
            "endpoints": rows}


def main() -> None:
    label = os.environ.get("LABEL", "latest")
    report = run(label)
    from harness import RESULTS

    out = RESULTS / f"instructions-{label}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(*sys.argv[2:])
    else:
        main()
