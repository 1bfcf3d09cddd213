"""Capacity in numbers, on PostgreSQL: what docs/capacity.md plans with.

- one sync worker: req/s on the platform's two calls (a random client of CLIENTS), and the CPU
  seconds per request of the worker and of PostgreSQL (utime + stime from /proc/<pid>/stat,
  before and after the leg);
- PostgreSQL's own ceiling for the consumption statement: pgbench running consume_at_once with
  the default usage thresholds, a random seeded client per transaction, and PostgreSQL's CPU per
  statement;
- one hot client: WORKERS workers, every consumption on the same client (its quota row lock
  serialises them), beside the spread case, in the same run;
- connections: the most any worker held (pg_stat_activity), the pool's bounds and
  max_connections.

PostgreSQL's CPU is that of the run's own backends (matched by application_name in
pg_stat_activity) and of the server's auxiliary processes (WAL writer, checkpointer, ...), not
of other databases' backends on the same server. Writes bench/results/capacity.json.
"""

import inspect
import json
import os
import re
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import psycopg
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.pool import QueuePool

import harness
from endpoints import WARMUP, leg
from harness import (CONNECTIONS, DURATION, ENDPOINTS, RESULTS, SERVER, WORKERS, Gunicorn, fresh_database,
                     measured_commit, migrate_and_issue_keys, psycopg_url, seed_clients, wrk)

from credits_service.config import SETTINGS
from credits_service.months import month_of
from credits_service.services.consumption import consume_at_once

# A database of its own, so an endpoints run at the same time does not drop it under this one.
harness.DATABASE = "credits_capacity"
# Far more than a run consumes (nothing refused, no threshold crossed), and a limited client, so
# every consumption takes the statement's whole check against the limit.
harness.SEEDED_LIMIT = 10_000_000
USAGE, QUOTA_STATUS = (next(e for e in ENDPOINTS if e.name == name) for name in ("POST usage", "GET quota-status"))
THRESHOLDS = next(setting.default for setting in SETTINGS if setting.name == "WEBHOOK_THRESHOLDS")
TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def harness_settings(**settings):
    """The harness reads WORKERS and CLIENTS when it starts a server or a load: change them for one."""
    saved = {name: getattr(harness, name) for name in settings}
    for name, value in settings.items():
        setattr(harness, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(harness, name, value)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields 14 and 15 of proc(5), after the command's name
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuMeter:
    """CPU seconds spent during a leg by the given worker processes, by PostgreSQL's backends
    whose application_name is `application` and by its auxiliary processes.

    Sampled every `interval` s and once more at the end, so backends that connect during the
    leg (pgbench's) count from zero; one that exits before the end loses at most its last
    interval."""

    def __init__(self, application: str, worker_pids: list[int] = (), interval: float = 0.25):
        self.application, self.worker_pids, self.interval = application, list(worker_pids), interval
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, conn: psycopg.Connection) -> None:
        processes = [("worker", pid) for pid in self.worker_pids] + [
            ("backends" if kind == "client backend" else "auxiliary", pid) for pid, kind in conn.execute(
                "SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type <> 'client backend' "
                "OR (datname = %s AND application_name = %s)", (harness.DATABASE, self.application))]
        for process in processes:
            seconds = cpu_seconds(process[1])
            if seconds is not None:
                self.first.setdefault(process, seconds if not self._started else 0.0)
                self.last[process] = seconds
        self._started = True

    def _run(self) -> None:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True, application_name="bench-cpu") as conn:
            self._sample(conn)
            self._ready.set()
            while not self._stop.wait(self.interval):
                self._sample(conn)
            self._sample(conn)

    def __enter__(self) -> Self:
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self, kind: str) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last if p[0] == kind)

    def per_request(self, requests: int) -> dict:
        """Microseconds of CPU per request: the worker's, PostgreSQL's (backends + auxiliary)."""
        def us(seconds: float) -> float:
            return round(seconds * 1e6 / requests, 1)

        backends, auxiliary = self.seconds("backends"), self.seconds("auxiliary")
        row = {"postgres_cpu_us": us(backends + auxiliary), "postgres_backends_cpu_us": us(backends),
               "postgres_auxiliary_cpu_us": us(auxiliary)}
        if self.worker_pids:
            row = {"worker_cpu_us": us(self.seconds("worker")), **row}
        return row


def measured_leg(server: Gunicorn, endpoint, key: str) -> dict:
    """endpoints.leg (req/s, latencies, RSS, connections per worker) with the CPU it cost."""
    with CpuMeter(server.name, server.worker_pids()) as cpu:
        result = leg(server, endpoint, key)
    return {**result, **cpu.per_request(result["requests"])}


def pgbench_script(clients: int) -> str:
    """consume_at_once(THRESHOLDS) as a pgbench script: every bind parameter a :variable, a
    random seeded client per transaction (its id built from the harness's prefix), a count of 1,
    and the statement's constants and the columns' insert defaults as the service sends them."""
    compiled = consume_at_once(THRESHOLDS).compile(dialect=psycopg_dialect.dialect())
    constants = dict(compiled.params)
    for column in compiled.insert_prefetch:  # held, captured, refunded: 0, filled in by SQLAlchemy
        constants[column.key] = column.default.arg
    given = {"client_id", "month", "now", "count"}  # set below and by pgbench -D
    unknown = [name for name, value in constants.items() if name not in given and not isinstance(value, int)]
    if unknown:
        raise RuntimeError(f"no pgbench value for the statement's parameters {unknown}")
    sql = re.sub(r"%\((\w+)\)s", lambda m: f"('{harness.CLIENT_PREFIX}' || :client)" if m[1] == "client_id"
                 else f":{m[1]}", compiled.string)
    lines = [f"\\set client random(0, {clients - 1})", "\\set count 1"]
    lines += [f"\\set {name} {value}" for name, value in constants.items() if name not in given]
    return "\n".join(lines) + "\n" + sql + ";\n"


def month_total(database_url: str, month: str) -> int:
    with psycopg.connect(psycopg_url(database_url)) as conn:
        return conn.execute("SELECT coalesce(sum(generation_count), 0) FROM usage_records WHERE month = %s",
                            (month,)).fetchone()[0]


def pgbench_ceiling(database_url: str) -> dict:
    """pgbench -n -M prepared -c 16 -j 2 -T DURATION with the consumption statement; checks that
    every transaction consumed (the month's total grew by exactly the transactions)."""
    now = datetime.now(UTC)
    month = month_of(now)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="consume-") as script:
        script.write(pgbench_script(harness.CLIENTS))
        script.flush()
        command = ["pgbench", "-n", "-M", "prepared", "-c", "16", "-j", "2", "-T", str(DURATION),
                   "-D", f"month={month}", "-D", f"now={now.isoformat()}", "-f", script.name,
                   psycopg_url(database_url)]
        before = month_total(database_url, month)
        with CpuMeter("pgbench") as cpu:
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env={**os.environ, "PGAPPNAME": "pgbench"})
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed: {done.stderr.strip()}")
    consumed = month_total(database_url, month) - before

    def number(label: str) -> float:
        return float(re.search(rf"{label}\D*([\d.]+)", done.stdout)[1])

    transactions = int(number("number of transactions actually processed"))
    return {"command": " ".join(command[:-2] + ["consume.sql", "<database>"]), "clients": 16, "threads": 2,
            "tps": number("tps ="), "latency_avg_ms": number("latency average ="), "transactions": transactions,
            "failed": int(number("number of failed transactions")), "all_consumed": consumed == transactions,
            **cpu.per_request(transactions)}


def settings(database_url: str) -> dict:
    with psycopg.connect(psycopg_url(database_url)) as conn:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "server_version", "max_connections", "superuser_reserved_connections", "shared_buffers", "fsync",
            "synchronous_commit")}
    pool = inspect.signature(QueuePool.__init__).parameters
    return {"postgresql": shown, "sqlalchemy_pool": {"pool_size": pool["pool_size"].default,
                                                     "max_overflow": pool["max_overflow"].default}}


def run() -> dict:
    load_before = os.getloadavg()
    database_url = fresh_database(harness.DATABASE)
    keys = migrate_and_issue_keys(database_url)
    report = {"commit": measured_commit(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                          "note": "PostgreSQL runs on the same machine and shares its cores"},
              "settings": {"duration_s": DURATION, "connections": CONNECTIONS, "clients": harness.CLIENTS,
                           "workers_shared": WORKERS, "thresholds": list(THRESHOLDS),
                           "client_limit": harness.SEEDED_LIMIT}}
    print(f"load average {load_before[0]:.2f}; {DURATION} s per leg, wrk {CONNECTIONS} connections", flush=True)

    with Gunicorn("service", database_url) as server:
        seed_clients(server.url, keys["write"])
        wrk(server.url, USAGE.method, USAGE.path, keys["service"], USAGE.body, duration=WARMUP)
        spread = measured_leg(server, USAGE, keys["service"])
        with harness_settings(CLIENTS=1):  # wrk.lua's random client of 1 is always bench-0
            hot = measured_leg(server, USAGE, keys["service"])
    report["hot_client"] = {"workers": WORKERS, "spread": spread, "one_client": hot,
                            "one_client_to_spread": round(hot["rps"] / spread["rps"], 2)}
    print(f"{WORKERS} workers, POST usage: spread {spread['rps']:.0f} req/s p99 {spread['p99_ms']:.1f} ms; "
          f"one client {hot['rps']:.0f} req/s p99 {hot['p99_ms']:.1f} ms; "
          f"errors {spread['errors']} and {hot['errors']}", flush=True)

    with harness_settings(WORKERS=1), Gunicorn("service", database_url) as server:
        one_worker = {}
        for endpoint in (USAGE, QUOTA_STATUS):
            wrk(server.url, endpoint.method, endpoint.path, keys[endpoint.role], endpoint.body, duration=WARMUP)
            one_worker[endpoint.name] = result = measured_leg(server, endpoint, keys[endpoint.role])
            print(f"1 worker, {endpoint.name}: {result['rps']:.0f} req/s, worker {result['worker_cpu_us']:.0f} µs, "
                  f"PostgreSQL {result['postgres_cpu_us']:.0f} µs CPU per request; errors {result['errors']}",
                  flush=True)
    report["one_worker"] = one_worker

    report["pgbench_consumption"] = ceiling = pgbench_ceiling(database_url)
    print(f"pgbench, the consumption statement: {ceiling['tps']:.0f} tps, PostgreSQL "
          f"{ceiling['postgres_cpu_us']:.0f} µs CPU per statement, all consumed: {ceiling['all_consumed']}", flush=True)

    report["connections"] = {"per_worker_measured": spread["connections_per_worker"], **settings(database_url)}
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"connections per worker {spread['connections_per_worker']}; max_connections "
          f"{report['connections']['postgresql']['max_connections']}; load average after "
          f"{report['machine']['load_average_after'][0]:.2f}", flush=True)
    return report


def main() -> None:
    report = run()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "capacity.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
