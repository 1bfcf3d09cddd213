"""Rate limits are per principal across instances only when the counters live in Redis."""

import os

import pytest
import redis
import requests

from conftest import issue_keys

from .conftest import new_database
from .servers import Instance

pytestmark = pytest.mark.integration


@pytest.fixture
def database(request, tmp_path):
    url = new_database(request, "sqlite", tmp_path)
    return url, issue_keys(url, **{"alice@example.com": "write"})["alice@example.com"]


def two_instances(url, tmp_path, storage):
    env = {"RATELIMIT_ENABLED": "true", "RATE_LIMIT_WRITE": "3/minute", "RATELIMIT_STORAGE_URI": storage}
    return [Instance(url, workers=1, log_path=tmp_path / f"gunicorn-{i}.log", env=env).start() for i in range(2)]


def writes(instances, key, count):
    statuses = []
    for i in range(count):
        response = requests.post(
            instances[i % 2].url + "/api/admin/clients",
            json={"name": f"Client {i}"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) > 0
            assert "error" in response.json()
    return statuses


def test_redis_shares_one_limit_across_instances(database, tmp_path):
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set")
    redis.Redis.from_url(redis_url).flushdb()
    url, key = database
    instances = two_instances(url, tmp_path, redis_url)
    try:
        assert writes(instances, key, 5) == [201, 201, 201, 429, 429]
    finally:
        for instance in instances:
            instance.stop()


def test_memory_storage_counts_per_instance(database, tmp_path):
    """Why the README says several instances need Redis: each one counts on its own."""
    url, key = database
    instances = two_instances(url, tmp_path, "memory://")
    try:
        assert writes(instances, key, 8) == [201] * 6 + [429, 429]
    finally:
        for instance in instances:
            instance.stop()
