"""A running service deletes expired Idempotency-Key answers by itself, while it serves."""

import time
from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from conftest import config_for, dispose_engines, issue_keys
from credits_service import create_app
from credits_service.config import utc_now
from credits_service.extensions import db
from credits_service.models import IdempotencyRecord

from .servers import Instance

pytestmark = pytest.mark.integration

EXPIRED = 7


def stored(database_url, write_old: int = 0) -> list[str]:
    """The stored keys, after writing `write_old` answers made two days ago."""
    app = create_app(config_for(database_url))
    with app.app_context():
        session = db.session()
        old = utc_now() - timedelta(days=2)
        session.add_all(
            IdempotencyRecord(principal="platform", key=f"old-{i}", fingerprint="0" * 64, status_code=200,
                              response_body={"generationCount": i}, created_at=old, locked_at=old)
            for i in range(write_old)
        )
        session.commit()
        keys = sorted(session.scalars(select(IdempotencyRecord.key)))
        session.close()
    dispose_engines(app)
    return keys


def purged_metric(url) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "credits_idempotency_answers_purged_total")


def test_expired_answers_disappear_without_a_restart(each_backend_database, tmp_path):
    database_url = each_backend_database
    keys = issue_keys(database_url, **{"alice@example.com": "write", "platform": "service"})
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    instance = Instance(database_url, workers=2, log_path=tmp_path / "gunicorn.log", env={
        "IDEMPOTENCY_PURGE_INTERVAL_SECONDS": "1",
        "IDEMPOTENCY_PURGE_BATCH": "3",  # several batches
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }).start()
    try:
        def post(path, key, body, **headers):
            return requests.post(instance.url + path, json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {keys[key]}", **headers}).status_code

        assert post("/api/admin/clients", "alice@example.com", {"id": "acme", "name": "Acme"}) == 201
        assert post("/api/clients/acme/usage", "platform", {"count": 1}, **{"Idempotency-Key": "fresh"}) == 200
        assert len(stored(database_url, write_old=EXPIRED)) == EXPIRED + 1
        pid = instance.process.pid

        deadline = time.monotonic() + 20
        while stored(database_url) != ["fresh"]:
            assert time.monotonic() < deadline, "expired answers were not purged"
            # Requests go on meanwhile, and are answered.
            assert post("/api/clients/acme/usage", "platform", {"count": 1}) == 200
            time.sleep(0.2)
        assert instance.process.pid == pid and instance.process.poll() is None
        assert purged_metric(instance.url) == EXPIRED
        # The answer still within its retention is replayed.
        response = requests.post(instance.url + "/api/clients/acme/usage", json={"count": 1}, timeout=30,
                                 headers={"Authorization": f"Bearer {keys['platform']}", "Idempotency-Key": "fresh"})
        assert response.headers.get("Idempotent-Replayed") == "true"
    finally:
        instance.stop()
