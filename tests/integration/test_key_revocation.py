"""A revoked key is refused by every worker of every instance within 5 seconds.

Workers keep keys they found valid for a moment (services/keys.py) instead of asking the
database on every request; this proves the moment stays short across processes: two
instances of four workers each, the key revoked with the CLI, a separate process.
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import issue_keys
from credits_service.config import TestConfig

from .conftest import new_database
from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 5
# Per instance and round: more connections at once than workers, so every worker answers some.
PARALLEL = 16


@pytest.fixture(scope="module")
def database(request, tmp_path_factory):
    """PostgreSQL: two instances of four workers each share it."""
    return new_database(request, "postgresql", tmp_path_factory.mktemp("revocation"))


@pytest.fixture(scope="module")
def instances(database, tmp_path_factory):
    logs = tmp_path_factory.mktemp("revocation-logs")
    started = [Instance(database, workers=4, log_path=logs / f"gunicorn-{i}.log").start() for i in range(2)]
    yield started
    for instance in started:
        instance.stop()


def statuses(instances, key: str) -> list[int]:
    """PARALLEL requests to each instance at once, each on its own connection."""
    def status(url: str) -> int:
        return requests.get(f"{url}/api/admin/clients?limit=1", headers={"Authorization": f"Bearer {key}"},
                            timeout=30).status_code

    urls = [instance.url for instance in instances for _ in range(PARALLEL)]
    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(status, urls))


def test_revoked_key_is_refused_everywhere_within_five_seconds(database, instances):
    key = issue_keys(database, **{"leaver@example.com": "read"})["leaver@example.com"]
    for _ in range(3):  # every worker has checked the key and keeps it
        assert set(statuses(instances, key)) == {200}

    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "keys", "revoke", "leaver@example.com"],
                   cwd=ROOT, env={**os.environ, "DATABASE_URL": database, "AUDIT_HMAC_KEYS": TestConfig.AUDIT_HMAC_KEYS}, check=True, capture_output=True)
    revoked_at = time.monotonic()

    while set(statuses(instances, key)) != {401}:
        assert time.monotonic() - revoked_at < DEADLINE_SECONDS, "a worker still accepts the revoked key"
        time.sleep(0.2)
    refused_after = time.monotonic() - revoked_at
    for _ in range(3):  # and it stays refused on every worker
        assert set(statuses(instances, key)) == {401}
    assert refused_after < DEADLINE_SECONDS
