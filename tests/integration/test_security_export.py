"""Two slow readers of long audit exports on the project's own gunicorn.conf.py: the platform's
calls and /healthz still answer at once, and neither export is cut off by the worker timeout.

Before, on sync workers, two such readers held both workers: /healthz timed out and a
consumption waited for seconds, and at gunicorn's timeout both workers were killed mid-stream.
"""

import json
import threading
import time

import requests
from sqlalchemy import create_engine, text

from conftest import issue_keys
from integration.servers import ROOT, Instance

ENTRIES = 60_000
PADDING = "p" * 300  # each NDJSON line about 700 bytes: far more than the sockets' buffers hold
# gunicorn's worker timeout, made short here: the slow readers stall past it.
WORKER_TIMEOUT = 5


def seed_entries(database_url: str) -> None:
    """One client's long audit log, written in one statement: placeholder hashes (nothing verifies
    them), so on PostgreSQL the triggers that advance its head with each entry are off."""
    engine = create_engine(database_url)
    numbers = ("SELECT generate_series(1, :n) AS x" if engine.dialect.name == "postgresql" else
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT x FROM c")
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("INSERT INTO audit_heads (client_id, entry_count, last_entry_id, hash, updated_at) "
                                "VALUES ('bulk', 0, NULL, :genesis, CURRENT_TIMESTAMP)"), {"genesis": "0" * 64})
        connection.execute(text(
            "INSERT INTO credit_audit_log (id, client_id, admin_id, action, details, previous_value, new_value, "
            "created_at, seq, previous_hash, hash, key_id) "
            f"SELECT x, 'bulk', 'seed', 'limit_change', :details, '1', '2', CURRENT_TIMESTAMP, x, :zeros, :hash, 'test' "
            f"FROM ({numbers}) AS numbers ORDER BY x"),
            {"n": ENTRIES, "details": json.dumps({"reason": PADDING}), "zeros": "0" * 64, "hash": "a" * 64})
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT setval('credit_audit_log_id_seq', :n)"), {"n": ENTRIES})
    engine.dispose()


class SlowReader(threading.Thread):
    """Reads an export 4 KiB every 0.2 s, until told to read the rest at full speed."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.finish = threading.Event()
        self.lines = 0
        self.error: Exception | None = None
        self.status: int | None = None

    def run(self) -> None:
        try:
            with requests.get(self.url, headers={"Authorization": f"Bearer {self.key}"}, stream=True,
                              timeout=120) as response:
                self.status = response.status_code
                chunks = response.iter_content(4096)
                while not self.finish.is_set():
                    self.lines += next(chunks, b"").count(b"\n")
                    time.sleep(0.2)
                for chunk in chunks:  # a cut-off chunked body raises here
                    self.lines += chunk.count(b"\n")
        except Exception as error:  # reported by the test
            self.error = error


def timed(call) -> float:
    started = time.monotonic()
    response = call()
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_two_slow_exports_starve_nothing_and_are_not_cut_off(server_database, tmp_path):
    seed_entries(server_database)
    keys = issue_keys(server_database, admin="write", platform="service")
    service = Instance(server_database, workers=2, config=ROOT / "gunicorn.conf.py",
                       log_path=tmp_path / "gunicorn.log",
                       env={"GUNICORN_CMD_ARGS": f"--timeout {WORKER_TIMEOUT}", "WEB_THREADS": "4"}).start()
    try:
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        platform = {"Authorization": f"Bearer {keys['platform']}"}
        assert requests.post(f"{service.url}/api/admin/clients", json={"id": "acme", "name": "Acme"},
                             headers=admin, timeout=10).status_code == 201
        assert requests.put(f"{service.url}/api/admin/clients/acme/quota", json={"monthlyGenerationLimit": -1},
                            headers=admin, timeout=10).status_code == 200

        def consume():
            return requests.post(f"{service.url}/api/clients/acme/usage", json={"count": 1}, headers=platform, timeout=10)

        def healthz():
            return requests.get(f"{service.url}/healthz", timeout=10)

        usual = max(timed(call) for call in [consume, healthz] * 5)
        readers = [SlowReader(f"{service.url}/api/admin/audit-log/export?format=ndjson", keys["admin"])
                   for _ in range(2)]
        for reader in readers:
            reader.start()
        time.sleep(1)  # both exports are streaming and their readers have stalled them
        during = [timed(call) for call in [consume, healthz] * 10]
        assert max(during) < max(1.0, 10 * usual), (during, usual)
        time.sleep(WORKER_TIMEOUT + 2)  # past the worker timeout, still reading slowly
        assert timed(healthz) < 1.0
        for reader in readers:
            reader.finish.set()
        for reader in readers:
            reader.join(timeout=120)
        for reader in readers:
            assert reader.error is None, reader.error
            assert (reader.status, reader.lines) == (200, 50_000)  # one whole answer: EXPORT_MAX_ROWS
        assert "WORKER TIMEOUT" not in (tmp_path / "gunicorn.log").read_text()
    finally:
        service.stop()
