"""Webhook delivery with real processes: a worker killed mid-delivery, two workers sharing the
outbox, and thresholds crossed by parallel consumptions on two instances."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text
from standardwebhooks import Webhook

from conftest import issue_keys
from credits_service.config import TestConfig
from webhook_receiver import Receiver

from .servers import ROOT, Instance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(server_database):
    return server_database


@pytest.fixture(scope="module")
def keys(database):
    return issue_keys(database, admin="write", platform="service")


@pytest.fixture(scope="module")
def instances(database, tmp_path_factory):
    logs = tmp_path_factory.mktemp("webhook-logs")
    count = 2 if database.startswith("postgresql") else 1
    started = [Instance(database, workers=2, log_path=logs / f"gunicorn-{i}.log").start() for i in range(count)]
    yield started
    for instance in started:
        instance.stop()


def worker(database, log_path, timeout=1):
    """`flask webhooks deliver` in a process of its own (real clock, retries after 1 s)."""
    env = {**os.environ, "DATABASE_URL": database, "AUDIT_HMAC_KEYS": TestConfig.AUDIT_HMAC_KEYS,
           "LOG_LEVEL": "WARNING", "WEBHOOK_TIMEOUT_SECONDS": str(timeout), "WEBHOOK_RETRY_SCHEDULE": "1,1,1"}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "webhooks", "deliver"],
                                cwd=ROOT, env=env, stdout=log, stderr=log)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Admin:
    def __init__(self, instances, keys):
        self.url = instances[0].url
        self.headers = {"Authorization": f"Bearer {keys['admin']}"}

    def __call__(self, method, path, body=None, expected=(200, 201, 202, 204)):
        response = requests.request(method, self.url + path, json=body, headers=self.headers, timeout=30)
        assert response.status_code in expected, response.text
        return response.json() if response.content else None


@pytest.fixture
def admin(instances, keys):
    return Admin(instances, keys)


@pytest.fixture
def endpoint(admin):
    """An endpoint registered for the test, deleted after it (its deliveries with it)."""
    created = []

    def register(url, events=("*",)):
        created.append(admin("POST", "/api/admin/webhooks", {"url": url, "events": list(events)}))
        return created[-1]

    yield register
    for made in created:
        admin("DELETE", f"/api/admin/webhooks/{made['id']}", expected=(204, 404))


_ids = iter(range(10**6))


def new_client(admin, limit=None):
    client_id = f"hooks-{os.getpid()}-{next(_ids)}"
    admin("POST", "/api/admin/clients", {"id": client_id, "name": "Hooks"})
    if limit is not None:
        admin("PUT", f"/api/admin/clients/{client_id}/quota", {"monthlyGenerationLimit": limit})
    return client_id


def wait_for(condition, seconds=60, what="the condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.05)


def test_a_worker_killed_after_sending_is_followed_by_a_redelivery_with_the_same_id(database, admin, endpoint,
                                                                                    tmp_path):
    got_it, release = threading.Event(), threading.Event()

    def hold_the_first(_received):
        if not got_it.is_set():
            got_it.set()
            release.wait(30)  # the worker waits for this answer; it is killed first

    with Receiver(on_request=hold_the_first) as receiver:
        hook = endpoint(receiver.url, ["credits.granted"])
        client_id = new_client(admin)
        admin("POST", f"/api/admin/clients/{client_id}/credits", {"action": "grant", "amount": 1})
        first = worker(database, tmp_path / "worker-1.log")
        try:
            assert got_it.wait(30), "the receiver got nothing"
            first.send_signal(signal.SIGKILL)  # after the receiver got it, before the worker recorded it
            first.wait(10)
        finally:
            release.set()
            stop(first)
        second = worker(database, tmp_path / "worker-2.log")
        try:  # once the dead worker's lease runs out (its timeout, 1 s, and 5 s more)
            wait_for(lambda: len(receiver.received) >= 2, what="the redelivery")
        finally:
            stop(second)
        ids = [request.headers["webhook-id"] for request in receiver.received]
        assert ids[0] == ids[1]
        for request in receiver.received[:2]:
            assert Webhook(hook["secret"]).verify(request.body, request.headers)["data"]["clientId"] == client_id
    [delivery] = admin("GET", f"/api/admin/webhooks/{hook['id']}/deliveries")["items"]
    assert (delivery["status"], delivery["eventId"]) == ("succeeded", ids[0])


def test_two_workers_deliver_each_event_exactly_once(database, admin, endpoint, tmp_path):
    if not database.startswith("postgresql"):
        pytest.skip("several workers share the outbox on PostgreSQL (FOR UPDATE SKIP LOCKED); SQLite runs one")
    with Receiver() as receiver:
        hook = endpoint(receiver.url, ["credits.granted"])
        client_id = new_client(admin)
        for _ in range(60):
            admin("POST", f"/api/admin/clients/{client_id}/credits", {"action": "grant", "amount": 1})
        workers = [worker(database, tmp_path / f"worker-{i}.log") for i in range(2)]
        try:
            wait_for(lambda: len(receiver.received) >= 60, what="60 deliveries")
            time.sleep(1)  # anything sent twice would have arrived by now
        finally:
            for process in workers:
                stop(process)
        ids = Counter(request.headers["webhook-id"] for request in receiver.received)
        assert len(ids) == 60 and set(ids.values()) == {1}
    statuses = Counter(d["status"] for d in admin("GET", f"/api/admin/webhooks/{hook['id']}/deliveries?limit=100")["items"])
    assert statuses == {"succeeded": 60}


def threshold_events(database, client_id):
    engine = create_engine(database)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT body FROM webhook_events WHERE type = 'usage.threshold_reached' "
                                        "AND client_id = :client"), {"client": client_id}).scalars().all()
    engine.dispose()
    return sorted(json.loads(body)["data"]["threshold"] for body in rows)


def test_parallel_consumptions_fire_each_threshold_once_and_again_after_a_reset(database, instances, keys, admin,
                                                                                endpoint):
    endpoint("https://platform.invalid/hooks", ["usage.threshold_reached"])  # the outbox is what is counted
    client_id = new_client(admin, limit=100)
    headers = {"Authorization": f"Bearer {keys['platform']}"}

    def consume(i):
        url = f"{instances[i % len(instances)].url}/api/clients/{client_id}/usage"
        return requests.post(url, json={"count": 1}, headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(32) as pool:
        assert Counter(pool.map(consume, range(120))) == {200: 100, 402: 20}
    assert threshold_events(database, client_id) == [80, 100]
    admin("POST", f"/api/admin/clients/{client_id}/credits", {"action": "reset"})
    with ThreadPoolExecutor(32) as pool:
        assert Counter(pool.map(consume, range(120))) == {200: 100, 402: 20}
    assert threshold_events(database, client_id) == [80, 80, 100, 100]
