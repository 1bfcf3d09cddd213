"""Connections are pinged at checkout only after sitting idle (credits_service/database.py).

The database's side of every pooled connection is ended (as a PostgreSQL restart would), then
requests come: with the idle threshold passed, the ping finds each dead connection and the
request is served on a new one; within it, no ping is sent, so the one request that meets a
dead connection is answered 503, SQLAlchemy invalidates the pool's older connections with it,
and the next requests are served.
"""

import psycopg
import pytest

from conftest import POOLER, config_for
from credits_service import database
from credits_service.extensions import db

STATUS = "/api/clients/acme/quota-status"
GRANT = "/api/admin/clients/acme/credits"


@pytest.fixture
def app_config(database_url, clock):
    return config_for(database_url, CLOCK=clock, API_KEY_CACHE_SECONDS=3600)


@pytest.fixture
def end_pooled_connections(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server side to lose")
    if POOLER != "none":
        pytest.skip("behind a pooler the server connections are the pooler's to replace; the pool's own live on")
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def end() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]

    return end


def warm(api) -> None:
    """A pooled connection or two, and every key checked and cached."""
    for _ in range(2):
        assert api.get(STATUS, key="service").status_code == 200
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200


def test_an_idle_connection_that_died_is_replaced_before_use(api, acme, end_pooled_connections, monkeypatch):
    warm(api)
    assert end_pooled_connections() >= 1
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert api.get(STATUS, key="service").status_code == 200
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    assert api.get(STATUS, key="service").get_json()["generationsLimit"] == 102


def test_a_busy_connection_is_not_pinged_and_a_dead_one_costs_one_request(
        api, acme, end_pooled_connections, monkeypatch):
    warm(api)
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert end_pooled_connections() >= 1
    refused = api.get(STATUS, key="service")
    assert refused.status_code == 503, refused.get_json()
    assert api.get(STATUS, key="service").status_code == 200
    # The pool's older connections were invalidated with the dead one: the grant gets a live one.
    assert api.post(GRANT, json={"action": "grant", "amount": 1}, key="write").status_code == 200
    assert api.get(STATUS, key="service").get_json()["generationsLimit"] == 102
