"""Real server processes for the concurrency tests: gunicorn instances on loopback ports."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from credits_service.config import TestConfig

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Instance:
    """One gunicorn master with its workers, serving the app on one port.

    With config (a gunicorn config file such as gunicorn.conf.py) the file's settings apply,
    but for the bind address and the worker count given here; without, short test settings.
    """

    def __init__(self, database_url: str, workers: int = 4, log_path: Path | None = None,
                 env: dict[str, str] | None = None, config: Path | None = None):
        self.database_url = database_url
        self.extra_env = env or {}
        self.workers = workers
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Instance":
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "RATELIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            # The key the tests' own apps verify with.
            "AUDIT_HMAC_KEYS": TestConfig.AUDIT_HMAC_KEYS,
            **self.extra_env,
        }
        settings = ["-c", str(self.config)] if self.config else ["--graceful-timeout", "2", "--no-control-socket"]
        with open(self.log_path or os.devnull, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", *settings, "--workers", str(self.workers),
                 "--bind", f"127.0.0.1:{self.port}", "app:app"],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/api/admin/clients", timeout=5).status_code == 401:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start within 30 s")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
