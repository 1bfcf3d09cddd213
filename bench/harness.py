"""What the benchmark modes share: a fresh PostgreSQL database, gunicorn servers, seeding, wrk,
and what each worker holds while a load runs (memory, database connections).

Everything runs on loopback, and every load is bounded in time.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
# The code measured in-process is this tree's, also in a worktree the editable install does not point to.
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
WORKERS = int(os.environ.get("WORKERS", "4"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
DURATION = int(os.environ.get("DURATION", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "1000"))
CLIENT_PREFIX = "bench-"
DATABASE = "credits_bench"
# Big enough that no consumption is refused and no grant passes the maximum during a run. The
# storage quota stays the default plan's, a finite 1,000 MB that +1 byte a request never reaches.
SEEDED_LIMIT = 1_000_000_000


class Endpoint(NamedTuple):
    name: str
    method: str
    path: str  # {id} stands for a client id
    role: str  # of the key that calls it
    body: str  # {id} stands for the client id here too
    sides: tuple[str, ...]  # the servers it is measured on
    # An endpoint pair: the request made of the first's 201 answer, on the same client ({id}, and
    # {hold} for its holdId; bench/wrk.lua).
    then: str = ""


# The platform's two calls per generation are measured against the framework floor too; the
# admin routes (rate-limited to tens or hundreds a minute) and the platform's other writes
# against the ceiling only.
PLATFORM = ("service", "floor", "ceiling")
CEILING_ONLY = ("service", "ceiling")
ENDPOINTS = [
    Endpoint("GET quota", "GET", "/api/admin/clients/{id}/quota", "write", "", CEILING_ONLY),
    Endpoint("POST credits grant", "POST", "/api/admin/clients/{id}/credits", "write",
             '{"action": "grant", "amount": 1}', CEILING_ONLY),
    Endpoint("POST usage", "POST", "/api/clients/{id}/usage", "service", '{"count": 1}', PLATFORM),
    Endpoint("GET quota-status", "GET", "/api/clients/{id}/quota-status", "service", "", PLATFORM),
    Endpoint("POST storage", "POST", "/api/clients/{id}/storage", "service", '{"deltaBytes": 1}', CEILING_ONLY),
]
# A hold, then the capture of that hold: two requests a pair, so only the endpoints mode, whose
# wrk makes the capture of the hold's answer, measures it. Measured last: a run's last holds
# are left open (until their ttl), and a month with anything held takes usage off its one
# statement. The reference carries the client id to the capture.
HOLD_CAPTURE = Endpoint("POST hold+capture", "POST", "/api/clients/{id}/holds", "service",
                        '{"count": 1, "ttlSeconds": 900, "reference": "{id}"}', CEILING_ONLY,
                        then="/api/clients/{id}/holds/{hold}/capture")
# Where each side's WSGI app is (gunicorn's module:attribute).
APPS = {"service": "app:app", "floor": "bench.floor:app", "ceiling": "bench.ceiling:app"}


def fresh_database(name: str = DATABASE) -> str:
    """Drop and create database `name`; returns its SQLAlchemy URL."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


# Signs the benchmark's audit entries unless AUDIT_HMAC_KEYS is set; the ceiling signs with it too.
BENCH_AUDIT_KEYS = "bench:" + "0123456789abcdef" * 4


def service_env(database_url: str) -> dict[str, str]:
    """The service as in production, with rate limits off, quiet logs (unless LOG_LEVEL says
    otherwise) and a benchmark audit key.

    The background jobs (credits_service/background.py) are off: their rounds every minute would
    add their own work to the instructions counted and their connections to the connections
    counted per worker.
    """
    return {"AUDIT_HMAC_KEYS": BENCH_AUDIT_KEYS, "LOG_LEVEL": "WARNING", **os.environ, "DATABASE_URL": database_url,
            "RATELIMIT_ENABLED": "false", "IDEMPOTENCY_PURGE_INTERVAL_SECONDS": "0", "HOLD_SWEEP_INTERVAL_SECONDS": "0"}


def measured_commit() -> str:
    """The commit whose code a result measures, marked when the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "credits_service", "bench")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")


def flask_cli(database_url: str, *args: str) -> str:
    done = subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=service_env(database_url),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def migrate_and_issue_keys(database_url: str) -> dict[str, str]:
    flask_cli(database_url, "db", "upgrade")
    return {
        "write": flask_cli(database_url, "keys", "create", "bench-admin", "--role", "write"),
        "service": flask_cli(database_url, "keys", "create", "bench-platform", "--role", "service"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """One gunicorn master with WORKERS sync workers, serving one side's app (APPS) on a free port.

    Its database connections carry "bench-<side>" as their application_name (libpq's PGAPPNAME),
    so pg_stat_activity tells them from the other servers' (WorkerSampler).
    """

    def __init__(self, side: str, database_url: str):
        self.app, self.name, self.port, self.database_url = APPS[side], f"bench-{side}", free_port(), database_url
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        self.process = subprocess.Popen(
            # Sync workers, as the targets are stated: gunicorn.conf.py, read from the working
            # directory, asks for threads (which turn sync into gthread), and the ceiling keeps
            # one connection per worker.
            [str(BIN / "gunicorn"), "--workers", str(WORKERS), "--worker-class", "sync", "--threads", "1",
             "--bind", f"127.0.0.1:{self.port}", "--no-control-socket", self.app],
            cwd=ROOT, env={**service_env(self.database_url), "PGAPPNAME": self.name},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app} exited with {self.process.returncode}")
            try:
                requests.get(self.url + "/", timeout=2)
                if len(self.worker_pids()) == WORKERS:
                    return self
            except requests.RequestException:  # still booting
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"gunicorn {self.app} did not start within 30 s")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]


def seed_clients(url: str, write_key: str) -> None:
    """CLIENTS clients through the API, each with a limit no run reaches."""
    headers = {"Authorization": f"Bearer {write_key}"}
    local = threading.local()

    def seed(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        client_id = f"{CLIENT_PREFIX}{i}"
        created = session.post(f"{url}/api/admin/clients", headers=headers,
                               json={"id": client_id, "name": f"Bench {i}"}, timeout=30)
        created.raise_for_status()
        limited = session.put(f"{url}/api/admin/clients/{client_id}/quota", headers=headers,
                              json={"monthlyGenerationLimit": SEEDED_LIMIT}, timeout=30)
        limited.raise_for_status()

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(seed, range(CLIENTS)))


def _tcp_ports_by_inode() -> dict[str, int]:
    """Every IPv4 TCP socket of this network namespace: its inode -> its local port."""
    ports = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports[fields[9]] = int(fields[1].split(":")[1], 16)
    return ports


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


class WorkerSampler:
    """While a load runs, samples every `interval` s what each of a server's workers holds: its
    resident memory (VmRSS) and its connections to the benchmark's database, as PostgreSQL lists
    them in pg_stat_activity (matched to the worker by the connection's client port). Keeps the
    peak of each per worker."""

    def __init__(self, server: Gunicorn, interval: float = 0.2):
        self.server, self.pids, self.interval = server, server.worker_pids(), interval
        self.rss_kb = {pid: 0 for pid in self.pids}
        self.connections = {pid: 0 for pid in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True, application_name="bench-sampler") as conn:
            while not self._stop.is_set():
                server_side = {port for (port,) in conn.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    (DATABASE, self.server.name))}
                ports = _tcp_ports_by_inode()
                for pid in self.pids:
                    try:
                        status = Path(f"/proc/{pid}/status").read_text()
                        held = sum(ports.get(inode) in server_side for inode in _socket_inodes(pid))
                    except FileNotFoundError:  # a worker gunicorn replaced
                        continue
                    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
                    self.rss_kb[pid] = max(self.rss_kb[pid], rss)
                    self.connections[pid] = max(self.connections[pid], held)
                self._stop.wait(self.interval)

    def __enter__(self) -> "WorkerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_rss_mb(self) -> float:
        """The largest resident memory any one worker reached."""
        return round(max(self.rss_kb.values()) / 1024, 1)

    @property
    def connections_per_worker(self) -> int:
        """The most database connections any one worker held at once."""
        return max(self.connections.values())


def wrk(url: str, method: str, path: str, key: str, body: str = "", duration: int = DURATION, then: str = "") -> dict:
    """One wrk run, a random client per request (bench/wrk.lua), with `then` made of each 201
    answer (Endpoint.then); its RESULT line as a dict."""
    env = {**os.environ, "CLIENTS": str(CLIENTS), "CLIENT_PREFIX": CLIENT_PREFIX, "METHOD": method,
           "PATH_TEMPLATE": path, "BODY": body, "KEY": key, "THEN_TEMPLATE": then}
    done = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "-s", str(ROOT / "bench" / "wrk.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
