"""The four hot endpoints, each beside the raw-psycopg ceiling (bench/ceiling.py), in one run.

For each endpoint: a short warm-up of both, then the service, then the ceiling, DURATION seconds
each, so machine noise falls on both alike. Prints a table and writes
bench/results/endpoints-<LABEL>.json and .png.
"""

import json
import os
import platform
from datetime import UTC, datetime

from harness import (CLIENTS, CONNECTIONS, DURATION, RESULTS, WORKERS, Gunicorn, RssSampler, fresh_database,
                     migrate_and_issue_keys, seed_clients, wrk)

LABEL = os.environ.get("LABEL", "latest")
WARMUP = int(os.environ.get("WARMUP", "2"))
# ONLY=grant measures the endpoints whose name contains it (a quicker run while working on one).
ONLY = os.environ.get("ONLY", "")
# Service and ceiling legs alternate ROUNDS times per endpoint; the median round is reported. On a
# shared machine one pair of 10 s legs can be off by tens of percent; three pairs rarely all are.
ROUNDS = int(os.environ.get("ROUNDS", "1"))

# name, method, path, key role, body
ENDPOINTS = [
    ("GET quota", "GET", "/api/admin/clients/{id}/quota", "write", ""),
    ("POST credits grant", "POST", "/api/admin/clients/{id}/credits", "write", '{"action": "grant", "amount": 1}'),
    ("POST usage", "POST", "/api/clients/{id}/usage", "service", '{"count": 1}'),
    ("GET quota-status", "GET", "/api/clients/{id}/quota-status", "service", ""),
]


def leg(server: Gunicorn, method: str, path: str, key: str, body: str) -> dict:
    with RssSampler(server.worker_pids()) as rss:
        result = wrk(server.url, method, path, key, body)
    result["errors"] = result.pop("non2xx") + result.pop("socket_errors")
    result["peak_rss_mb"] = rss.peak_mb
    return result


def run() -> dict:
    database_url = fresh_database("credits_bench")
    keys = migrate_and_issue_keys(database_url)
    rows = []
    with Gunicorn("app:app", database_url) as service, \
            Gunicorn("bench.ceiling:app", database_url) as ceiling:
        seed_clients(service.url, keys["write"])
        print(f"{CLIENTS} clients seeded; gunicorn {WORKERS} sync workers each, wrk {CONNECTIONS} connections, "
              f"{DURATION} s per leg, {os.cpu_count()} cores shared by everything", flush=True)
        print(HEADER)
        for name, method, path, role, body in (endpoint for endpoint in ENDPOINTS if ONLY in endpoint[0]):
            for server in (service, ceiling):
                wrk(server.url, method, path, keys[role], body, duration=WARMUP)
            rounds = []
            for _ in range(ROUNDS):
                measured = {side: leg(server, method, path, keys[role], body)
                            for side, server in (("service", service), ("ceiling", ceiling))}
                measured["ratio"] = round(measured["service"]["rps"] / measured["ceiling"]["rps"], 2)
                rounds.append(measured)
            # The round whose ratio is the median stands for the endpoint; every round's ratio is kept.
            middle = sorted(rounds, key=lambda measured: measured["ratio"])[len(rounds) // 2]
            rows.append({"endpoint": name, "method": method, "path": path, **middle,
                         "round_ratios": [measured["ratio"] for measured in rounds]})
            print_row(rows[-1])
    return {
        "label": LABEL,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"workers": WORKERS, "connections": CONNECTIONS, "duration_s": DURATION, "clients": CLIENTS,
                     "rounds": ROUNDS},
        "endpoints": rows,
    }


HEADER = (f"{'endpoint':<20} {'req/s':>7} {'ceiling':>7} {'ratio':>5} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'ceil p99':>8} {'errors':>7} {'RSS MB':>6} {'ceil RSS':>8}")


def print_row(row: dict) -> None:
    s, c = row["service"], row["ceiling"]
    errors = f"{s['errors']}/{c['errors']}"  # service/ceiling
    rounds = row.get("round_ratios", [])
    spread = f"  rounds {' '.join(f'{ratio:.2f}' for ratio in rounds)}" if len(rounds) > 1 else ""
    print(f"{row['endpoint']:<20} {s['rps']:>7.0f} {c['rps']:>7.0f} {row['ratio']:>5.2f} {s['p50_ms']:>7.1f} "
          f"{s['p99_ms']:>7.1f} {c['p99_ms']:>8.1f} {errors:>7} {s['peak_rss_mb']:>6.0f} "
          f"{c['peak_rss_mb']:>8.0f}{spread}", flush=True)


def chart(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["endpoints"]
    names = [row["endpoint"] for row in rows]
    x = range(len(rows))
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, metric, title in ((throughput, "rps", "requests/s (higher is better)"),
                                (latency, "p99_ms", "p99 latency, ms (lower is better)")):
        service = [row["service"][metric] for row in rows]
        ceiling = [row["ceiling"][metric] for row in rows]
        axis.bar([i - 0.2 for i in x], service, 0.4, label="service")
        axis.bar([i + 0.2 for i in x], ceiling, 0.4, label="raw-psycopg ceiling", color="#bbbbbb")
        axis.set_xticks(list(x), names, rotation=15)
        axis.set_title(title)
        axis.legend()
    for i, row in enumerate(rows):
        throughput.annotate(f"{row['ratio']:.2f}x", (i - 0.2, row["service"]["rps"]), ha="center", va="bottom")
    settings = report["settings"]
    figure.suptitle(f"credits-service vs raw psycopg ({report['label']}, {settings['workers']} workers, "
                    f"{settings['connections']} connections, {settings['duration_s']} s per leg)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    report = run()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"endpoints-{LABEL}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
