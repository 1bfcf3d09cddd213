"""The endpoints under load: the service beside the framework floor (bench/floor.py, the
platform's two calls per generation) and the raw-psycopg ceiling (bench/ceiling.py), in one run.

For each endpoint: a short warm-up of every server, then DURATION seconds of each in turn, so
machine noise falls on all alike. Per leg: req/s, p50, p99, errors, the peak RSS of any worker
and the most database connections any worker held (one pool per worker shows as 1). Per
endpoint: service/floor and service/ceiling, and the service's p99 against the targets (at most
2x the ceiling's; admin routes at most ADMIN_P99_MS). A hold and its capture are measured as a
pair (harness.HOLD_CAPTURE): req/s and latencies count both requests, pairs/s the captures.
Prints a table and writes bench/results/endpoints.json and .png.
"""

import json
import os
import platform
from contextlib import ExitStack
from datetime import UTC, datetime

from harness import (CLIENTS, CONNECTIONS, DURATION, ENDPOINTS, HOLD_CAPTURE, PLATFORM, RESULTS, WORKERS,
                     Gunicorn, WorkerSampler, fresh_database, measured_commit, migrate_and_issue_keys, seed_clients,
                     wrk)

WARMUP = int(os.environ.get("WARMUP", "2"))
# ONLY=grant measures the endpoints whose name contains it (a quicker run while working on one).
ONLY = os.environ.get("ONLY", "")
# Every side's leg runs ROUNDS times per endpoint, in turn; the round with the median
# service/ceiling ratio is reported. On a shared machine one 10 s leg can be off by tens of
# percent; three rounds rarely all are.
ROUNDS = int(os.environ.get("ROUNDS", "1"))
ADMIN_P99_MS = 100
P99_TO_CEILING = 2


def leg(server: Gunicorn, endpoint, key: str, duration: int = DURATION) -> dict:
    with WorkerSampler(server) as workers:
        result = wrk(server.url, endpoint.method, endpoint.path, key, endpoint.body, duration, endpoint.then)
    result["errors"] = result.pop("non2xx") + result.pop("socket_errors")
    if "pairs" in result:
        result["pairs_per_s"] = round(result["pairs"] * result["rps"] / result["requests"], 1)
    result["peak_rss_mb"] = workers.peak_rss_mb
    result["connections_per_worker"] = workers.connections_per_worker
    return result


def judged(endpoint, measured: dict) -> dict:
    """The ratios and the service's p99 against its targets."""
    service, ceiling = measured["service"], measured["ceiling"]
    row = {"endpoint": endpoint.name, **measured, "service_to_ceiling": round(service["rps"] / ceiling["rps"], 2),
           "p99_to_ceiling": round(service["p99_ms"] / ceiling["p99_ms"], 2)}
    if "floor" in measured:
        row["service_to_floor"] = round(service["rps"] / measured["floor"]["rps"], 2)
    row["p99_within_target"] = row["p99_to_ceiling"] <= P99_TO_CEILING and (
        not endpoint.path.startswith("/api/admin/") or service["p99_ms"] <= ADMIN_P99_MS)
    return row


def run() -> dict:
    database_url = fresh_database()
    keys = migrate_and_issue_keys(database_url)
    rows = []
    with ExitStack() as servers:
        server = {side: servers.enter_context(Gunicorn(side, database_url)) for side in PLATFORM}
        seed_clients(server["service"].url, keys["write"])
        print(f"{CLIENTS} clients seeded; gunicorn {WORKERS} sync workers each, wrk {CONNECTIONS} connections, "
              f"{DURATION} s per leg, {os.cpu_count()} cores shared by everything", flush=True)
        print(HEADER)
        for endpoint in [*ENDPOINTS, HOLD_CAPTURE]:
            if ONLY not in endpoint.name:
                continue
            key = keys[endpoint.role]
            for side in endpoint.sides:
                wrk(server[side].url, endpoint.method, endpoint.path, key, endpoint.body, WARMUP, endpoint.then)
            rounds = [judged(endpoint, {side: leg(server[side], endpoint, key) for side in endpoint.sides})
                      for _ in range(ROUNDS)]
            # The round whose ratio is the median stands for the endpoint; every round's ratio is kept.
            row = sorted(rounds, key=lambda row: row["service_to_ceiling"])[len(rounds) // 2]
            row["round_ratios"] = [row["service_to_ceiling"] for row in rounds]
            rows.append(row)
            print_row(row)
    return {
        "commit": measured_commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"workers": WORKERS, "connections": CONNECTIONS, "duration_s": DURATION, "clients": CLIENTS,
                     "rounds": ROUNDS},
        "endpoints": rows,
    }


HEADER = (f"{'endpoint':<19} {'side':<8} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'RSS MB':>6} "
          f"{'conns/worker':>12}   {'vs floor':>8} {'vs ceiling':>10} {'p99 target':>10}")


def print_row(row: dict) -> None:
    for side in ("service", "floor", "ceiling"):
        if side not in row:
            continue
        leg = row[side]
        name = row["endpoint"] if side == "service" else ""
        line = (f"{name:<19} {side:<8} {leg['rps']:>6.0f} {leg['p50_ms']:>7.1f} {leg['p99_ms']:>7.1f} "
                f"{leg['errors']:>6} {leg['peak_rss_mb']:>6.0f} {leg['connections_per_worker']:>12}")
        if side == "service":
            floor = f"{row['service_to_floor']:.2f}x" if "service_to_floor" in row else ""
            target = f"{row['p99_to_ceiling']:.2f}x {'ok' if row['p99_within_target'] else 'MISSED'}"
            line += f"   {floor:>8} {row['service_to_ceiling']:>9.2f}x {target:>10}"
        print(line, flush=True)
    if "pairs_per_s" in row["service"]:
        per_side = ", ".join(f"{side} {row[side]['pairs_per_s']:.0f}" for side in ("service", "ceiling"))
        print(f"{'':<19} pairs/s (a hold and its capture): {per_side}", flush=True)
    rounds = row["round_ratios"]
    if len(rounds) > 1:
        print(f"{'':<19} rounds (service/ceiling): {' '.join(f'{ratio:.2f}' for ratio in rounds)}", flush=True)


def chart(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["endpoints"]
    names = [row["endpoint"] for row in rows]
    sides = [("service", "service", None), ("floor", "framework floor", "#88aadd"),
             ("ceiling", "raw-psycopg ceiling", "#bbbbbb")]
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, metric, title in ((throughput, "rps", "requests/s (higher is better)"),
                                (latency, "p99_ms", "p99 latency, ms (lower is better)")):
        for offset, (side, label, color) in zip((-0.27, 0, 0.27), sides):
            present = [(i, row[side][metric]) for i, row in enumerate(rows) if side in row]
            axis.bar([i + offset for i, _ in present], [value for _, value in present], 0.27, label=label, color=color)
        axis.set_xticks(range(len(rows)), names, rotation=15)
        axis.set_title(title)
        axis.legend()
    for i, row in enumerate(rows):
        throughput.annotate(f"{row['service_to_ceiling']:.2f}x", (i - 0.27, row["service"]["rps"]),
                            ha="center", va="bottom")
    settings = report["settings"]
    figure.suptitle(f"credits-service, framework floor and raw psycopg ({report['commit']}, "
                    f"{settings['workers']} workers, {settings['connections']} connections, "
                    f"{settings['duration_s']} s per leg)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    report = run()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / "endpoints"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
