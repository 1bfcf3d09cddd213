"""The audit log at scale: the export streams in flat memory, and PostgreSQL reads a client's
entries through that client's index however the entries are spread."""

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest
from sqlalchemy import insert, text

from conftest import every_statement, make_key, triggers_disabled
from credits_service.extensions import db
from credits_service.models import CreditAuditLog

EXPORT_ENTRIES = 200_000
# Far below what the export holds: about 35 MB of CSV, and ten times that as loaded entries.
EXPORT_GROWTH_BOUND = 16 * 2**20

# Reads the export as a server would send it, in a process of its own, so its peak resident
# memory is the export's alone; a small export first, so imports and pools count as baseline.
EXPORTER = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, "tests")
    from conftest import config_for
    from credits_service import create_app

    url, key = sys.argv[1:]
    client = create_app(config_for(url, EXPORT_MAX_ROWS=10**6)).test_client()  # one answer, all of it
    headers = {"Authorization": "Bearer " + key}
    def export(query):
        response = client.get("/api/admin/audit-log/export" + query, headers=headers)
        assert response.status_code == 200 and response.is_streamed
        size = lines = 0
        for chunk in response.response:  # the body as the server sends it, chunk by chunk
            size += len(chunk)
            lines += chunk.count(b"\\n")
        response.close()
        return size, lines
    export("?format=csv&until=2026-01-01T00:10:00Z")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size, lines = export("?format=csv")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": size, "lines": lines, "growth": (peak - baseline) * 1024}))
""")


def bulk_entries(app, client_id: str, count: int) -> None:
    """Entries written straight into the table with Core inserts, one second apart.

    Their chain columns hold placeholders of the right shape: these tests read, never verify,
    so the triggers that would advance the client's head with each are off.
    """
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = (
        {"client_id": client_id, "seq": i + 1, "previous_hash": "0" * 64, "hash": f"{i:064x}", "key_id": "test",
         "admin_id": "alice@example.com", "action": "credit_grant",
         "details": {"amount": 1, "reason": f"bulk entry {i}, with a comma"}, "previous_value": str(i),
         "new_value": str(i + 1), "created_at": start + timedelta(seconds=i)}
        for i in range(count)
    )
    with triggers_disabled(app) as session:
        while batch := list(islice(rows, 20_000)):
            session.execute(insert(CreditAuditLog.__table__), batch)


def test_export_streams_in_flat_memory(app, api, database_url):
    api.create_client("acme", "Acme Corp")
    bulk_entries(app, "acme", EXPORT_ENTRIES)
    key = make_key(app, "exporter", "read")
    result = subprocess.run([sys.executable, "-c", EXPORTER, database_url, key], capture_output=True,
                            text=True, timeout=900, cwd=app.root_path + "/..")
    assert result.returncode == 0, result.stderr[-5000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    assert measured["lines"] == EXPORT_ENTRIES + 1  # and the header
    assert measured["size"] > 30 * 2**20
    assert measured["growth"] < EXPORT_GROWTH_BOUND, (
        f"memory grew {measured['growth'] / 2**20:.1f} MiB exporting {measured['size'] / 2**20:.1f} MiB"
    )


# ---- the plan on PostgreSQL ----------------------------------------------------

SKEWED = """
INSERT INTO clients (id, name, created_at, updated_at)
SELECT 'c' || i, 'Client ' || i, now(), now() FROM generate_series(0, 99) i;
INSERT INTO quota_limits (client_id, plan, monthly_generation_limit, storage_quota_mb, created_at, updated_at)
SELECT id, 'free', 100, 1000, now(), now() FROM clients;
INSERT INTO audit_heads (client_id, entry_count, last_entry_id, hash, updated_at)
SELECT id, 0, NULL, repeat('0', 64), now() FROM clients;
-- c0 holds the oldest fifth of the entries, as a long-standing client who has gone quiet.
-- The chain columns hold placeholders of the right shape: the plans are what is tested.
INSERT INTO credit_audit_log (client_id, seq, admin_id, action, details, created_at, previous_hash, hash, key_id)
SELECT client_id, row_number() OVER (PARTITION BY client_id ORDER BY i), admin_id, action, '{}', created_at,
       md5(i::text) || md5(i::text), md5(i::text || 'h') || md5(i::text || 'h'), 'test'
FROM (
    SELECT i, CASE WHEN i <= 20000 THEN 'c0' ELSE 'c' || (1 + i % 99) END AS client_id,
           'admin' || (i % 5) || '@example.com' AS admin_id,
           (ARRAY['plan_change', 'credit_grant', 'limit_change', 'usage_reset'])[1 + i % 4] AS action,
           timestamptz '2026-01-01' + i * interval '1 second' AS created_at
    FROM generate_series(1, 100000) i
) AS entries
ORDER BY i;
ANALYZE;
"""


def indexes_used(plan: dict) -> set[str]:
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= indexes_used(child)
    return found


@pytest.fixture
def skewed(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("the plan is PostgreSQL's")
    # Placeholder chains: the triggers that would advance each client's head are off.
    with triggers_disabled(app) as session:
        session.execute(text(SKEWED))


def planned_indexes(app, api, path):
    """The indexes PostgreSQL chooses for each audit log query the request runs."""
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM credit_audit_log" in statement:
            statements.append((statement, parameters))

    with app.app_context():
        with every_statement(app, capture):  # the quota read runs on the autocommit pool
            response = api.get(path, key="read")
        assert response.status_code == 200, response.get_json()
        assert statements, "no audit log query ran"
        with db.engine.connect() as conn:
            return [
                indexes_used(conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()[0]["Plan"])
                for statement, parameters in statements
            ]


def test_the_skewed_data_misleads_a_plain_query(app, skewed):
    """The trap the service's queries avoid: the primary key walked backwards, filtering."""
    with app.app_context():
        plan = db.session.execute(text(
            "EXPLAIN (FORMAT JSON) SELECT * FROM credit_audit_log WHERE client_id = 'c0' ORDER BY id DESC LIMIT 51"
        )).scalar()[0]["Plan"]
    assert indexes_used(plan) == {"pk_credit_audit_log"}


# A client's own indexes; with an action too, either can be the cheaper, neither walks other clients.
CLIENT = {"ix_credit_audit_log_client_id_desc", "ix_credit_audit_log_client_action_id"}


@pytest.mark.parametrize(("path", "indexes"), [
    ("/api/admin/clients/c0/audit-log", CLIENT),
    ("/api/admin/clients/c0/audit-log?before=15000", CLIENT),
    ("/api/admin/clients/c0/audit-log?action=usage_reset", CLIENT),
    ("/api/admin/clients/c0/quota", CLIENT),
    ("/api/admin/audit-log?clientId=c0", CLIENT),
    ("/api/admin/audit-log?clientId=c0&adminId=admin1@example.com", CLIENT),
    ("/api/admin/audit-log?clientId=c0&action=limit_change&since=2026-01-01T01:00:00Z", CLIENT),
    ("/api/admin/audit-log?adminId=admin1@example.com", {"ix_credit_audit_log_admin_id_id"}),
    ("/api/admin/audit-log?action=usage_reset", {"ix_credit_audit_log_action_id"}),
])
def test_a_filtered_listing_reads_its_own_index(app, api, skewed, path, indexes):
    [used] = planned_indexes(app, api, path)
    assert used and used <= indexes, used
