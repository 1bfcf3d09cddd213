"""Connections are pinged at checkout only after sitting idle (credits_service/pool.py).

The database's side of every pooled connection is ended (as a PostgreSQL restart would), then
a request comes: with the idle threshold passed, the ping finds the dead connection and the
request is served on a new one; within it, no ping is sent, and the request that meets the dead
connection is answered 503, after which the pool has recovered. On PostgreSQL there are two
pools, each pinged alike: the engine's (key checks, transactions: a grant) and its autocommit
sibling's (one-statement reads and consumption: quota-status).
"""

import psycopg
import pytest

from credits_service import pool
from credits_service.extensions import db

STATUS = "/api/clients/acme/quota-status"
GRANT = "/api/admin/clients/acme/credits"


@pytest.fixture
def end_pooled_connections(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server side to lose")
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def end() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]

    return end


def test_an_idle_connection_that_died_is_replaced_before_use(api, acme, end_pooled_connections, monkeypatch):
    for _ in range(2):  # the second, with its key cached, on the autocommit pool
        assert api.get(STATUS, key="service").status_code == 200
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    assert end_pooled_connections() >= 2
    monkeypatch.setattr(pool, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert api.get(STATUS, key="service").status_code == 200
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    assert api.get(STATUS, key="service").get_json()["generationsLimit"] == 102


def test_a_busy_connection_is_not_pinged_and_a_dead_one_costs_one_request_per_pool(
        api, acme, end_pooled_connections, monkeypatch):
    for _ in range(2):  # the second, with its key cached, on the autocommit pool
        assert api.get(STATUS, key="service").status_code == 200
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    monkeypatch.setattr(pool, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert end_pooled_connections() >= 2
    refused = api.get(STATUS, key="service")
    assert refused.status_code == 503, refused.get_json()
    assert api.get(STATUS, key="service").status_code == 200
    # The engine's own pool meets its dead connection on its next use, once, and nothing is written.
    refused = api.post(GRANT, json={"action": "grant", "amount": 1}, key="write")
    assert refused.status_code == 503, refused.get_json()
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    assert api.get(STATUS, key="service").get_json()["generationsLimit"] == 102
