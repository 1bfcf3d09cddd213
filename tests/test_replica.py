"""DATABASE_REPLICA_URL: the heavy admin reads go to the replica while it is fresh, everything
else to the primary, and a replica that does not answer sends its reads to the primary.

The "replica" here is a second migrated database that the primary's writes never reach, so an
answer shows which database gave it. Lag is proven on a real streaming replica by
scripts/cluster-smoke.sh (replay paused, reads fall back).
"""

import pytest

from conftest import config_for, migrated
from helpers import scrape, value

# Nothing listens on port 1; a SQLite file under a folder that does not exist cannot be opened.
UNREACHABLE = {"postgresql": "postgresql+psycopg://postgres@127.0.0.1:1/none",
               "sqlite": "sqlite:////nonexistent-folder/replica.sqlite3"}
FALLBACKS = "credits_replica_fallbacks_total"


@pytest.fixture(scope="module")
def replica_url(database_url, request, tmp_path_factory):
    """An empty migrated database of the primary's kind."""
    if database_url.startswith("sqlite"):
        url = "sqlite:///" + str(tmp_path_factory.mktemp("replica") / "replica.sqlite3")
    else:
        url = request.getfixturevalue("make_postgres_database")()
    migrated(url)
    return url


def backend(database_url) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


class TestWithAFreshReplica:
    @pytest.fixture
    def app_config(self, database_url, clock, replica_url):
        return config_for(database_url, CLOCK=clock, DATABASE_REPLICA_URL=replica_url)

    @pytest.fixture
    def acme(self, api):
        api.create_client(plan="starter")
        assert api.post("/api/admin/clients/acme/credits", json={
            "action": "grant", "amount": 5, "scope": "permanent", "reason": "welcome"}).status_code == 200

    def test_the_heavy_reads_come_from_the_replica(self, api, acme):
        assert api.get("/api/admin/clients", key="read").get_json()["items"] == []
        assert api.get("/api/admin/audit-log?clientId=acme", key="read").get_json()["items"] == []
        export = api.get("/api/admin/audit-log/export?format=ndjson&clientId=acme", key="read")
        assert export.status_code == 200 and export.get_data(as_text=True) == ""
        for path in ("/api/admin/clients/acme/grants", "/api/admin/clients/acme/usage",
                     "/api/admin/clients/acme/refunds"):
            response = api.get(path, key="read")
            assert response.status_code == 404, path  # acme exists only on the primary

    def test_what_must_see_its_own_writes_reads_the_primary(self, api, acme):
        quota = api.get("/api/admin/clients/acme/quota", key="read").get_json()
        assert quota["quota"]["monthlyGenerationLimit"] == 505
        assert api.get("/api/admin/clients/acme", key="read").status_code == 200
        assert api.get("/api/admin/clients/acme/audit-log", key="read").get_json()["items"][0]["action"] == "credit_grant"
        assert api.get("/api/clients/acme/quota-status", key="service").get_json()["generationsLimit"] == 505
        assert api.post("/api/clients/acme/usage", json={"count": 2}, key="service").status_code == 200

    def test_readiness_reports_the_replica(self, client):
        checks = client.get("/readyz").get_json()["checks"]
        assert checks["replica"]["status"] == "ok"
        assert checks["replica"]["fatal"] is False
        assert checks["replica"]["lagSeconds"] == 0

    def test_audit_verify_can_read_the_replica(self, api, acme, runner):
        on_primary = runner.invoke(args=["audit", "verify"])
        assert on_primary.exit_code == 0 and "1 entries" in on_primary.output
        on_replica = runner.invoke(args=["audit", "verify", "--replica"])
        assert on_replica.exit_code == 0 and "0 entries" in on_replica.output, on_replica.output


class TestWithAReplicaThatDoesNotAnswer:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, DATABASE_REPLICA_URL=UNREACHABLE[backend(database_url)])

    def test_its_reads_go_to_the_primary_and_are_counted(self, api, acme):
        before = value(scrape(api.client), FALLBACKS, reason="unavailable")
        clients = api.get("/api/admin/clients", key="read")
        assert clients.status_code == 200
        assert [c["id"] for c in clients.get_json()["items"]] == ["acme"]
        assert api.get("/api/admin/clients/acme/grants", key="read").status_code == 200
        assert api.get("/api/admin/audit-log/export?format=csv", key="read").status_code == 200
        assert value(scrape(api.client), FALLBACKS, reason="unavailable") == before + 3

    def test_readiness_stays_ready_and_says_why(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200
        replica = response.get_json()["checks"]["replica"]
        assert replica["status"] == "unavailable" and replica["fatal"] is False
        assert replica["error"] == "OperationalError"
        assert "primary" in replica["detail"]
        assert "127.0.0.1" not in response.get_data(as_text=True)


def test_without_a_replica_readiness_does_not_mention_one(client):
    assert "replica" not in client.get("/readyz").get_json()["checks"]


def test_audit_verify_on_the_replica_needs_one(runner):
    result = runner.invoke(args=["audit", "verify", "--replica"])
    assert result.exit_code == 2
    assert "DATABASE_REPLICA_URL" in result.output
