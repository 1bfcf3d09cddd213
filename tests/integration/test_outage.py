"""PostgreSQL stops under load and starts again: 503 fast, never a hang or a 500, nothing lost or doubled.

The test makes a PostgreSQL cluster of its own (initdb, pg_ctl) on a free port, so stopping it
disturbs nobody. Consumptions carry an Idempotency-Key and are retried on 503 (and on 409, the
answer while a claim whose request failed is still held), as the platform should: when the
connection breaks during COMMIT the service cannot know whether it committed, and the retry with
the same key either replays the committed answer or does the work once.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from conftest import issue_keys, migrated

from .servers import Instance, free_port

pytestmark = pytest.mark.integration

THREADS = 6
FAST = 1.0  # seconds: how soon a request must be answered while the database is down


def postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else shutil.which("initdb") and os.path.dirname(shutil.which("initdb"))


class Cluster:
    """A throwaway PostgreSQL cluster; as root its programs run as the postgres user."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="credits-outage-")
        self.data = os.path.join(self.dir, "data")
        self.as_owner = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root needs runuser to start PostgreSQL as the postgres user")
            try:
                shutil.chown(self.dir, "postgres")
            except LookupError:
                pytest.skip("running as root needs a 'postgres' user to own the temporary cluster")
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    def run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_owner, os.path.join(self.bindir, program), *args],
                       check=True, capture_output=True, timeout=60)

    def init(self) -> "Cluster":
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        subprocess.run([*self.as_owner, os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) are not installed: apt-get install postgresql")
    made = Cluster(bindir)
    try:
        made.init().start()
        with psycopg.connect(f"host=127.0.0.1 port={made.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE credits")
        yield made
    finally:
        made.remove()


class Load:
    """Threads consuming 1 generation per Idempotency-Key, retrying a key until it is answered 200."""

    def __init__(self, url: str, key: str):
        self.url = url + "/api/clients/acme/usage"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers = []  # (status, seconds, body) of every request
        self.consumed = set()  # keys answered 200
        self.failures = []  # what must never happen: a hang, a dropped connection, an unexpected status

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            key = uuid.uuid4().hex
            while True:  # the same key until it is answered 200, as a careful client does
                started = time.monotonic()
                try:
                    response = session.post(self.url, json={"count": 1}, timeout=10,
                                            headers={**self.headers, "Idempotency-Key": key})
                except requests.RequestException as error:
                    with self.lock:
                        self.failures.append(repr(error))
                    return
                answer = (response.status_code, time.monotonic() - started, response.json())
                with self.lock:
                    self.answers.append(answer)
                    if response.status_code == 200:
                        self.consumed.add(key)
                if response.status_code == 200:
                    break
                if response.status_code not in (503, 409):
                    with self.lock:
                        self.failures.append(answer)
                    return
                time.sleep(0.05)

    def statuses(self) -> Counter:
        with self.lock:
            return Counter(status for status, _, _ in self.answers)


def test_database_outage_under_load(cluster, tmp_path):
    url = cluster.url("credits")
    migrated(url)
    keys = issue_keys(url, **{"alice@example.com": "write", "platform": "service"})
    instance = Instance(url, workers=2, log_path=tmp_path / "gunicorn.log",
                        env={"IDEMPOTENCY_LOCK_SECONDS": "1"}).start()
    try:
        admin = {"Authorization": f"Bearer {keys['alice@example.com']}"}
        assert requests.post(instance.url + "/api/admin/clients", json={"id": "acme", "name": "Acme"},
                             headers=admin, timeout=10).status_code == 201
        assert requests.put(instance.url + "/api/admin/clients/acme/quota",
                            json={"monthlyGenerationLimit": 1_000_000}, headers=admin, timeout=10).status_code == 200
        workers = sorted(instance.worker_pids())
        load = Load(instance.url, keys["platform"])

        with ThreadPoolExecutor(THREADS) as pool:
            for _ in range(THREADS):
                pool.submit(load.run)
            time.sleep(1.5)
            before_outage = load.statuses()[200]
            cluster.stop()
            time.sleep(1.0)
            down_since = len(load.answers)
            ready = requests.get(instance.url + "/readyz", timeout=5)
            health = requests.get(instance.url + "/healthz", timeout=5)
            time.sleep(1.5)
            during_outage = load.answers[down_since:]
            cluster.start()
            time.sleep(2.0)
            load.stop.set()

        assert load.failures == []
        assert before_outage > 0
        # While the database is down: 503 in the one error shape, fast.
        assert during_outage and {status for status, _, _ in during_outage} == {503}
        assert all(set(body) == {"error"} for _, _, body in during_outage)
        slowest = max(seconds for _, seconds, _ in during_outage)
        assert slowest < FAST, f"a 503 took {slowest:.2f} s"
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "unavailable"
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert set(load.statuses()) <= {200, 503, 409}

        # Back up: the same processes serve, and every 200 is exactly one stored generation.
        assert sorted(instance.worker_pids()) == workers
        assert requests.get(instance.url + "/readyz", timeout=5).status_code == 200
        status = requests.get(instance.url + "/api/clients/acme/quota-status", timeout=10,
                              headers={"Authorization": f"Bearer {keys['platform']}"})
        assert status.status_code == 200
        assert len(load.consumed) > before_outage
        assert status.json()["generationsUsed"] == len(load.consumed)
        print(f"answers {dict(load.statuses())}; slowest 503 during the outage {slowest * 1000:.0f} ms")
    finally:
        instance.stop()
