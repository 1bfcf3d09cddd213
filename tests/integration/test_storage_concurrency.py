"""Storage deltas racing on two gunicorn instances, on PostgreSQL and on SQLite (one file, two
processes): the quota is never passed, the level never goes below zero, and it ends equal to
the sum of the deltas that were accepted."""

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import issue_keys

from .servers import Instance

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def service(each_backend_database, tmp_path_factory):
    keys = issue_keys(each_backend_database, admin="write", platform="service")
    logs = tmp_path_factory.mktemp("storage-logs")
    instances = [Instance(each_backend_database, workers=2, log_path=logs / f"gunicorn-{i}.log").start()
                 for i in range(2)]
    yield instances, keys
    for instance in instances:
        instance.stop()


_clients = iter(range(10**6))


def new_client(service, quota_mb):
    instances, keys = service
    client_id = f"storage-{next(_clients)}"
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert requests.post(f"{instances[0].url}/api/admin/clients", json={"id": client_id, "name": "Storage"},
                         headers=admin, timeout=30).status_code == 201
    assert requests.put(f"{instances[0].url}/api/admin/clients/{client_id}/quota",
                        json={"storageQuotaMb": quota_mb}, headers=admin, timeout=30).status_code == 200
    return client_id


def deltas_in_parallel(service, client_id, deltas):
    """POST each delta, spread over both instances; (status, delta) in order."""
    instances, keys = service
    headers = {"Authorization": f"Bearer {keys['platform']}"}

    def send(i):
        url = f"{instances[i % 2].url}/api/clients/{client_id}/storage"
        return requests.post(url, json={"deltaBytes": deltas[i]}, headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(32) as pool:
        return list(zip(pool.map(send, range(len(deltas))), deltas))


def stored(service, client_id):
    instances, keys = service
    response = requests.get(f"{instances[1].url}/api/clients/{client_id}/quota-status",
                            headers={"Authorization": f"Bearer {keys['platform']}"}, timeout=30)
    assert response.status_code == 200
    return response.json()["storageUsedBytes"]


def test_parallel_adds_stop_exactly_at_the_quota(service):
    client_id = new_client(service, 1)
    results = deltas_in_parallel(service, client_id, [10_000] * 200)
    assert Counter(status for status, _ in results) == {200: 104, 402: 96}  # 104 x 10,000 <= 1 MiB < 105 x 10,000
    assert stored(service, client_id) == 1_040_000


def test_parallel_adds_and_frees_stay_within_bounds_and_add_up(service):
    client_id = new_client(service, 1)
    generator = random.Random(20261203)
    deltas = [generator.choice([1, -1]) * generator.randrange(1, 60_000) for _ in range(300)]
    results = deltas_in_parallel(service, client_id, deltas)
    accepted = [delta for status, delta in results if status == 200]
    assert {status for status, _ in results} <= {200, 402, 409}
    assert all(delta > 0 for status, delta in results if status == 402)
    assert all(delta < 0 for status, delta in results if status == 409)
    level = stored(service, client_id)
    assert level == sum(accepted)
    assert 0 <= level <= MIB
