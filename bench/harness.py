"""What the benchmark modes share: a fresh PostgreSQL database, gunicorn servers, seeding, wrk, RSS.

Everything runs on loopback, and every load is bounded in time.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
WORKERS = int(os.environ.get("WORKERS", "4"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
DURATION = int(os.environ.get("DURATION", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "1000"))
CLIENT_PREFIX = "bench-"
# Big enough that no consumption is refused and no grant passes the maximum during a run.
SEEDED_LIMIT = 1_000_000_000


def fresh_database(name: str) -> str:
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
    """The service as in production, with rate limits off, quiet logs and a benchmark audit key."""
    return {"AUDIT_HMAC_KEYS": BENCH_AUDIT_KEYS, **os.environ, "DATABASE_URL": database_url,
            "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING"}


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
    """One gunicorn master with WORKERS sync workers, serving `app` on `port`."""

    def __init__(self, app: str, database_url: str):
        self.app, self.port, self.database_url = app, free_port(), database_url
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", str(WORKERS), "--bind", f"127.0.0.1:{self.port}",
             "--no-control-socket", self.app],
            cwd=ROOT, env=service_env(self.database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


class RssSampler:
    """Samples VmRSS of the given processes from /proc while a load runs; peak per process, in MB."""

    def __init__(self, pids: list[int], interval: float = 0.2):
        self.pids, self.interval = pids, interval
        self.peaks = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except FileNotFoundError:  # a worker gunicorn replaced
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        self.peaks[pid] = max(self.peaks[pid], int(line.split()[1]))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(max(self.peaks.values()) / 1024, 1)


def wrk(url: str, method: str, path: str, key: str, body: str = "", duration: int = DURATION) -> dict:
    """One wrk run, a random client per request (bench/wrk.lua); its RESULT line as a dict."""
    env = {**os.environ, "CLIENTS": str(CLIENTS), "CLIENT_PREFIX": CLIENT_PREFIX, "METHOD": method,
           "PATH_TEMPLATE": path, "BODY": body, "KEY": key}
    done = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "-s", str(ROOT / "bench" / "wrk.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
