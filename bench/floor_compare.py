"""The two platform routes three ways in one run: the service, the framework floor (bench/floor.py)
and the raw-psycopg ceiling (bench/ceiling.py), alternating per leg as bench/endpoints.py does.

floor / ceiling is what the libraries the service is built on cost; service / floor is what the
service's own code costs on top. Prints a table and writes bench/results/floor-<LABEL>.json.
"""

import json
import os
from datetime import UTC, datetime

from endpoints import ENDPOINTS, LABEL, WARMUP, leg
from harness import CLIENTS, CONNECTIONS, DURATION, RESULTS, WORKERS, Gunicorn, fresh_database, \
    migrate_and_issue_keys, seed_clients, wrk

ROUTES = ("POST usage", "GET quota-status")
SIDES = ("service", "floor", "ceiling")


def run() -> dict:
    database_url = fresh_database("credits_bench")
    keys = migrate_and_issue_keys(database_url)
    rows = []
    with Gunicorn("app:app", database_url) as service, Gunicorn("bench.floor:app", database_url) as floor, \
            Gunicorn("bench.ceiling:app", database_url) as ceiling:
        servers = dict(zip(SIDES, (service, floor, ceiling)))
        seed_clients(service.url, keys["write"])
        print(f"{'endpoint':<18} " + " ".join(f"{side + ' req/s':>14}" for side in SIDES)
              + f" {'floor/ceil':>10} {'svc/floor':>9} {'svc/ceil':>8}", flush=True)
        for name, method, path, role, body in ENDPOINTS:
            if name not in ROUTES:
                continue
            for server in servers.values():
                wrk(server.url, method, path, keys[role], body, duration=WARMUP)
            measured = {side: leg(server, method, path, keys[role], body) for side, server in servers.items()}
            rps = {side: measured[side]["rps"] for side in SIDES}
            row = {"endpoint": name, **measured,
                   "floor_to_ceiling": round(rps["floor"] / rps["ceiling"], 2),
                   "service_to_floor": round(rps["service"] / rps["floor"], 2),
                   "service_to_ceiling": round(rps["service"] / rps["ceiling"], 2)}
            rows.append(row)
            print(f"{name:<18} " + " ".join(f"{rps[side]:>14.0f}" for side in SIDES)
                  + f" {row['floor_to_ceiling']:>10.2f} {row['service_to_floor']:>9.2f}"
                  f" {row['service_to_ceiling']:>8.2f}", flush=True)
    return {"label": LABEL, "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cores": os.cpu_count()},
            "settings": {"workers": WORKERS, "connections": CONNECTIONS, "duration_s": DURATION, "clients": CLIENTS},
            "routes": rows}


if __name__ == "__main__":
    report = run()
    out = RESULTS / f"floor-{LABEL}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
