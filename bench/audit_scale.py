"""The audit log as it grows: the same reads at 1,000 and at 1,000,000 entries, in-process.

The entries come from bench/audit_entries.sql (one client holds the oldest 20 %). Each request
runs through the Flask test client on PostgreSQL RUNS times; the median is reported with the
ratio of the large log to the small one (also in bench/results/audit-scale.txt).
Requests the service does not offer are skipped: keyset paging (`before=`, detected by a 400
naming it) and the global listing (404).
"""

import os
import statistics
import time
from pathlib import Path

import psycopg

from harness import (CLIENT_PREFIX, RESULTS, fresh_database, measured_commit, migrate_and_issue_keys, psycopg_url,
                     service_env)

RUNS = int(os.environ.get("RUNS", "15"))
CLIENTS = 1000
SIZES = [(1_000, 200), (1_000_000, 200_000)]  # (entries, of which the heavy client's)
LOADER = Path(__file__).with_name("audit_entries.sql")


def load_entries(database_url: str, total: int, heavy: int) -> None:
    with psycopg.connect(psycopg_url(database_url)) as conn:
        psycopg.ClientCursor(conn).execute(
            LOADER.read_text(), {"total": total, "heavy": heavy, "prefix": CLIENT_PREFIX, "clients": CLIENTS}
        )


def requests_for(client, headers, heavy: int) -> dict[str, str]:
    """name -> URL, for what this service offers."""
    base = f"/api/admin/clients/{CLIENT_PREFIX}0"
    urls = {
        "audit-log first page": f"{base}/audit-log?limit=50",
        "audit-log first page, action=usage_reset": f"{base}/audit-log?limit=50&action=usage_reset",
        # 199,900 at a million: the page 100 entries from the client's oldest.
        "audit-log deep page, offset=heavy-100": f"{base}/audit-log?limit=50&offset={heavy - 100}",
    }
    probe = client.get(f"{base}/audit-log?limit=1&before=1", headers=headers)
    if probe.status_code == 200:
        # The heavy client holds ids 1..heavy: before=101 is the page at the same depth.
        urls["audit-log keyset page, before=101"] = f"{base}/audit-log?limit=50&before=101"
    if client.get("/api/admin/audit-log?limit=50", headers=headers).status_code != 404:
        urls["global audit-log first page"] = "/api/admin/audit-log?limit=50"
    urls["GET quota (10 newest entries)"] = f"{base}/quota"
    return urls


def median_ms(client, url: str, headers) -> float:
    timings = []
    for _ in range(RUNS + 1):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True))
    return statistics.median(timings[1:])  # the first warms caches


def timings_at(total: int, heavy: int) -> dict[str, float]:
    """A fresh database with CLIENTS clients and `total` entries: each request's median, in ms.

    Each size gets its own database: the log refuses to be emptied."""
    database_url = fresh_database("credits_audit_scale")
    keys = migrate_and_issue_keys(database_url)
    os.environ.update(service_env(database_url))
    from credits_service import create_app  # reads its configuration from the environment above

    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {keys['write']}"}
    for i in range(CLIENTS):
        created = client.post("/api/admin/clients", headers=headers, json={"id": f"{CLIENT_PREFIX}{i}", "name": "x"})
        assert created.status_code == 201, created.get_json()
    started = time.monotonic()
    load_entries(database_url, total, heavy)
    print(f"loaded {total:,} entries ({heavy:,} for {CLIENT_PREFIX}0) in {time.monotonic() - started:.1f} s",
          flush=True)
    return {name: median_ms(client, url, headers) for name, url in requests_for(client, headers, heavy).items()}


def main() -> None:
    timings = [timings_at(total, heavy) for total, heavy in SIZES]
    small, large = timings
    lines = [(f"median of {RUNS} in-process requests on PostgreSQL, client {CLIENT_PREFIX}0, "
              f"commit {measured_commit()}"),
             f"{'request':<44} {'1,000':>9} {'1,000,000':>10} {'ratio':>6}"]
    for name, ms_small in small.items():
        lines.append(f"{name:<44} {ms_small:>7.1f}ms {large[name]:>8.1f}ms {large[name] / ms_small:>6.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "audit-scale.txt"
    out.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines) + f"\nwrote {out}")


if __name__ == "__main__":
    main()
