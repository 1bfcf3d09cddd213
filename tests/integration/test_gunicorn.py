"""gunicorn.conf.py under a real gunicorn master: graceful shutdown, JSON logs, Prometheus files, bad settings."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psycopg
import pytest
import requests
from sqlalchemy import make_url

from conftest import issue_keys
from credits_service.config import EXIT_INVALID_CONFIGURATION

from .conftest import new_database
from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

CONFIG = ROOT / "gunicorn.conf.py"


@contextmanager
def grants_blocked(database_url, client_id):
    """Hold the lock every grant to this client must take first; yields once a grant could be waiting on it."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT 1 FROM quota_limits WHERE client_id = %s FOR UPDATE", (client_id,))

            def wait_for_blocked_grant():
                # Watched from the holder's own connection, so two server connections behind a
                # pooler suffice; each look clears the transaction's activity snapshot first.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    holder.execute("SELECT pg_stat_clear_snapshot()")
                    waiting = holder.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    ).fetchone()[0]
                    if waiting:
                        return
                    time.sleep(0.05)
                raise AssertionError("the grant never waited on the quota row lock")

            yield wait_for_blocked_grant
            holder.rollback()
    else:
        # SQLite writers begin IMMEDIATE: holding the write lock on the file makes a grant wait.
        holder = sqlite3.connect(url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield lambda: time.sleep(1)  # SQLite shows no waiters; give the request time to arrive
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(each_backend_database, tmp_path):
    database_url = each_backend_database
    key = issue_keys(database_url, **{"alice@example.com": "write"})["alice@example.com"]
    log_path = tmp_path / "gunicorn.log"
    instance = Instance(database_url, workers=2, log_path=log_path, config=CONFIG).start()
    try:
        auth = {"Authorization": f"Bearer {key}"}
        created = requests.post(instance.url + "/api/admin/clients", json={"id": "slow", "name": "Slow"},
                                headers=auth, timeout=10)
        assert created.status_code == 201, created.text

        answers = []

        def grant():
            answers.append(requests.post(instance.url + "/api/admin/clients/slow/credits",
                                         json={"action": "grant", "amount": 5}, headers=auth, timeout=30))

        with grants_blocked(database_url, "slow") as wait_for_blocked_grant:
            in_flight = threading.Thread(target=grant)
            in_flight.start()
            wait_for_blocked_grant()
            instance.process.send_signal(signal.SIGTERM)
            time.sleep(1)
            assert instance.process.poll() is None, "the master exited with a request still in flight"
        in_flight.join(timeout=30)

        assert len(answers) == 1 and answers[0].status_code == 200, answers and answers[0].text
        assert answers[0].json()["newLimit"] == 105
        assert instance.process.wait(timeout=25) == 0
    finally:
        instance.stop()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line["name"] == "gunicorn.error" and "Handling signal: term" in line["message"] for line in lines)
    assert all({"time", "level", "message"} <= set(line) for line in lines)


def test_sample_files_are_cleared_at_start_and_dead_workers_marked(request, tmp_path):
    url = new_database(request, "sqlite", tmp_path)
    folder = tmp_path / "prometheus"
    folder.mkdir()
    stale = folder / "counter_999999.db"
    stale.write_bytes(b"left by an earlier master")
    instance = Instance(url, workers=1, log_path=tmp_path / "gunicorn.log", config=CONFIG,
                        env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}).start()
    try:
        assert not stale.exists()
        [worker] = instance.worker_pids()
        live_gauge = folder / f"gauge_livesum_{worker}.db"
        live_gauge.write_bytes(b"")
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while live_gauge.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not live_gauge.exists(), "child_exit did not mark the killed worker dead"
    finally:
        instance.stop()


def test_without_a_folder_each_master_makes_its_own_and_removes_it(request, tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    temp = tmp_path / "temp"
    temp.mkdir()
    url = new_database(request, "sqlite", tmp_path)
    instance = Instance(url, workers=1, log_path=tmp_path / "gunicorn.log", config=CONFIG,
                        env={"TMPDIR": str(temp)}).start()
    try:
        assert [path.name[:19] for path in temp.iterdir()] == ["credits-prometheus-"]
    finally:
        instance.stop()
    assert instance.process.returncode == 0
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("variable, value", [("PORT", "70000"), ("PORT", "http"), ("WEB_CONCURRENCY", "0")])
def test_a_bad_setting_stops_gunicorn_with_one_line(variable, value):
    """(A non-integer WEB_CONCURRENCY never reaches this file: gunicorn parses it itself on import.)"""
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "--check-config", "app:app"],
                            cwd=ROOT, env={**os.environ, variable: value}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == EXIT_INVALID_CONFIGURATION
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f'gunicorn.conf.py: Environment variable "{variable}" invalid'), line
