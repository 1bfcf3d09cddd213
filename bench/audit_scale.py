"""Audit log reads at 1,000 and at 1,000,000 entries, in-process on PostgreSQL.

    .venv/bin/python bench/audit_scale.py [--server postgresql+psycopg://postgres@127.0.0.1:5432/test]

Builds a throwaway database per size (dropped afterwards), loads it with generate_series as a
long-lived service would look: 1,000 clients, one of them ('old') holding the oldest fifth of
the entries and nothing since. Times each request (median of REPEAT) and prints a Markdown
table with the ratio of the large to the small. A benchmark to run by hand, never a test.
"""

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from flask_migrate import upgrade
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from credits_service import create_app  # noqa: E402
from credits_service.config import TestConfig  # noqa: E402
from credits_service.extensions import db  # noqa: E402
from credits_service.services.keys import ApiKeys  # noqa: E402

SIZES = (1_000, 1_000_000)
REPEAT = 30

LOAD = """
INSERT INTO clients (id, name, created_at, updated_at)
SELECT 'old', 'Old client', now(), now()
UNION ALL SELECT 'c' || lpad(i::text, 4, '0'), 'Client ' || i, now(), now() FROM generate_series(1, 999) i;
INSERT INTO quota_limits (client_id, plan, monthly_generation_limit, storage_quota_mb, created_at, updated_at)
SELECT id, 'free', 100, 1000, now(), now() FROM clients;
INSERT INTO credit_audit_log (client_id, admin_id, action, details, previous_value, new_value, created_at)
SELECT CASE WHEN i <= {total} / 5 THEN 'old' ELSE 'c' || lpad((1 + i % 999)::text, 4, '0') END,
       'admin' || (i % 5) || '@example.com',
       (ARRAY['plan_change', 'credit_grant', 'limit_change', 'usage_reset'])[1 + i % 4],
       jsonb_build_object('reason', 'entry ' || i), '1', '2',
       timestamptz '2025-01-01' + i * interval '1 second'
FROM generate_series(1, {total}) i;
VACUUM ANALYZE;
"""


def requests_for(total: int) -> dict[str, str]:
    old = total // 5  # the old client's entries are ids 1..old
    # Entry i was written at 2025-01-01 plus i seconds.
    recent = (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=int(total * 0.99))).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "per-client first page, limit 50": "/api/admin/clients/old/audit-log",
        "per-client first page, `action=usage_reset`": "/api/admin/clients/old/audit-log?action=usage_reset",
        "per-client deep page by keyset (its oldest 100, `before=101`)": "/api/admin/clients/old/audit-log?before=101",
        "per-client deep page by offset (its oldest 100)": f"/api/admin/clients/old/audit-log?offset={old - 100}",
        "`GET .../quota` (10 newest entries)": "/api/admin/clients/old/quota",
        "global first page": "/api/admin/audit-log",
        "global, `adminId=admin3@example.com`": "/api/admin/audit-log?adminId=admin3@example.com",
        "global, `action=usage_reset`": "/api/admin/audit-log?action=usage_reset",
        "global, `since` = the newest 1%": f"/api/admin/audit-log?since={recent}",
        "global, `clientId=old&action=usage_reset`": "/api/admin/audit-log?clientId=old&action=usage_reset",
    }


def loaded_app(server, total: int):
    """An app on a fresh database holding `total` entries, and a read key for it."""
    name = f"credits_audit_scale_{total}"
    with psycopg.connect(_dsn(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    app = create_app(type("Config", (TestConfig,), {
        "SQLALCHEMY_DATABASE_URI": server.set(database=name).render_as_string(hide_password=False)}))
    with app.app_context():
        upgrade()
        key = ApiKeys(db.session(), app.config["CLOCK"]).create("bench", "read")
    with psycopg.connect(_dsn(server.set(database=name)), autocommit=True) as conn:
        for statement in LOAD.format(total=total).split(";"):
            if statement.strip():
                conn.execute(statement)
    return app, {"Authorization": f"Bearer {key}"}


def _dsn(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def timed(client, path: str, headers) -> float:
    started = time.perf_counter()
    response = client.get(path, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.get_json())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    server = make_url(parser.parse_args().server)
    apps = [loaded_app(server, total) for total in SIZES]
    try:
        print(f"| request | {SIZES[0]:,} entries | {SIZES[1]:,} entries | ratio |")
        print("|---|---|---|---|")
        requests = [requests_for(total) for total in SIZES]
        for label in requests[0]:
            samples = [[], []]
            # Alternating the sizes request by request, so the machine's noise hits both alike.
            for round_ in range(REPEAT + 3):
                for size, (app, headers) in enumerate(apps):
                    elapsed = timed(app.test_client(), requests[size][label], headers)
                    if round_ >= 3:
                        samples[size].append(elapsed * 1000)
            small, large = (statistics.median(s) for s in samples)
            print(f"| {label} | {small:.1f} ms | {large:.1f} ms | {large / small:.2f} |", flush=True)
    finally:
        with psycopg.connect(_dsn(server), autocommit=True) as conn:
            for total, (app, _) in zip(SIZES, apps):
                with app.app_context():
                    db.engine.dispose()
                conn.execute(f'DROP DATABASE IF EXISTS "credits_audit_scale_{total}" WITH (FORCE)')


if __name__ == "__main__":
    main()
