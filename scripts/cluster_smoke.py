"""The HTTP side of scripts/cluster-smoke.sh: proofs through HAProxy, one phase per run.

CLUSTER_PHASE=load          parallel grants, consumption and holds at the limit (exact totals),
                            then instance 2 killed under consumption load; the primary's
                            connections are sampled all along
CLUSTER_PHASE=replica-up    instance 2 back behind HAProxy; /readyz reports the replica; the
                            replica-routed reads reach it
CLUSTER_PHASE=replica-lag   the replica's replay paused after a grant: /readyz says lagging, the
                            reads come from the primary (the new grant among them), counted as
                            lagging; replay resumed, the replica is ok again
CLUSTER_PHASE=replica-down  the replica stopped: /readyz still 200, the same reads answered from
                            the primary, credits_replica_fallbacks_total risen

Each proof appends one line to CLUSTER_SUMMARY ("ok ..." or "FAILED ..."); a proof that fails
is recorded and the next one runs. The shell script passes everything else in CLUSTER_*.
"""

import csv
import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import requests

THREADS = 32
# SQLAlchemy's default pool per engine, one engine per worker.
SQLALCHEMY_POOL = 5 + 10
INSTANCES, WORKERS = 2, 2
# Clients the proofs make, fixed names in a database made for this run.
GRANTS, CONSUME, HOLDS, FAILOVER = "smoke-grants", "smoke-consume", "smoke-holds", "smoke-failover"
# The reads the service sends to the replica (a client's usage history, grants and refunds; the
# audit search; the clients list).
REPLICA_READS = [
    f"/api/admin/audit-log?clientId={GRANTS}&limit=20",
    "/api/admin/clients?limit=20",
    f"/api/admin/clients/{GRANTS}/usage",
    f"/api/admin/clients/{GRANTS}/grants?limit=20",
    f"/api/admin/clients/{GRANTS}/refunds",
]

setting = os.environ.__getitem__


class ProofFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ProofFailed(message)


def record(ok: bool, text: str) -> None:
    with open(setting("CLUSTER_SUMMARY"), "a") as summary:
        summary.write(f"{'ok' if ok else 'FAILED':8}{text}\n")
    print(f"{'ok' if ok else 'FAILED'}: {text}", flush=True)


def proof(name: str, run) -> None:
    """Run one proof: its return value is the summary line; any exception, the failure."""
    started = time.monotonic()
    try:
        line = run()
    except ProofFailed as failure:
        record(False, f"{name}: {failure}")
    except Exception as error:  # a proof that crashed failed; the others still run
        record(False, f"{name}: {type(error).__name__}: {error}")
    else:
        seconds = time.monotonic() - started
        record(True, f"{name}: {line}" + (f" ({seconds:.1f} s)" if seconds >= 0.1 else ""))


class Api:
    """Calls through HAProxy (or one instance), one requests session per thread."""

    def __init__(self):
        self.base = setting("CLUSTER_URL")
        self.keys = {"write": setting("CLUSTER_WRITE_KEY"), "service": setting("CLUSTER_SERVICE_KEY")}
        self.local = threading.local()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def call(self, method, path, key="write", body=None, headers=None, base=None):
        """(status, JSON body or None, response headers)."""
        response = self.session().request(
            method, (base or self.base) + path, json=body, timeout=30,
            headers={"Authorization": f"Bearer {self.keys[key]}", **(headers or {})},
        )
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return response.status_code, response.json() if is_json else response.text, response.headers

    def parallel(self, calls, threads=THREADS):
        """Run calls [(method, path, key, body)] at once; [(status, body)] in call order."""
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(self.call, *call) for call in calls]
            return [future.result()[:2] for future in futures]

    def ok(self, method, path, key="write", body=None, expected=(200, 201)):
        status, answer, _ = self.call(method, path, key, body)
        expect(status in expected, f"{method} {path} answered {status}: {answer}")
        return answer

    def new_client(self, client_id, limit=None):
        self.ok("POST", "/api/admin/clients", body={"id": client_id, "name": client_id})
        if limit is not None:
            self.ok("PUT", f"/api/admin/clients/{client_id}/quota", body={"monthlyGenerationLimit": limit})
        return client_id

    def quota_status(self, client_id):
        return self.ok("GET", f"/api/clients/{client_id}/quota-status", key="service")


class HAProxy:
    """The backend's servers as HAProxy's stats page (CSV) reports them."""

    def __init__(self):
        self.url = setting("CLUSTER_STATS_URL")

    def servers(self) -> dict[str, dict]:
        text = requests.get(self.url, timeout=5).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row for row in rows
                if row["pxname"] == "instances" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_for(self, server, state, seconds=15.0) -> float:
        """Seconds until the server's status starts with state (UP or DOWN)."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if self.servers()[server]["status"].split()[0] == state:
                return time.monotonic() - started
            time.sleep(0.05)
        raise ProofFailed(f"HAProxy did not mark {server} {state} within {seconds:.0f} s "
                          f"(status {self.servers()[server]['status']})")


class ConnectionSampler:
    """Samples, every 50 ms, the primary's client backends on the service's database and
    PgBouncer's client connections: what the instances open against what the primary serves."""

    def __init__(self):
        self.server_max = self.clients_max = self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        # PgBouncer's admin console speaks the simple query protocol only: exec_ sends that.
        with psycopg.connect(setting("CLUSTER_PRIMARY_DSN"), autocommit=True) as primary, \
                psycopg.connect(setting("CLUSTER_PGBOUNCER_DSN"), autocommit=True) as pgbouncer:
            while not self.stop.is_set():
                servers = primary.execute(
                    "select count(*) from pg_stat_activity where datname = 'credits'"
                    " and backend_type = 'client backend' and pid <> pg_backend_pid()"
                ).fetchone()[0]
                pools = pgbouncer.pgconn.exec_(b"SHOW POOLS")
                columns = [pools.fname(i).decode() for i in range(pools.nfields)]
                clients = 0
                for row in range(pools.ntuples):
                    values = dict(zip(columns, (pools.get_value(row, i) for i in range(pools.nfields))))
                    if values["database"] == b"credits":
                        clients += int(values["cl_active"]) + int(values["cl_waiting"])
                self.server_max = max(self.server_max, servers)
                self.clients_max = max(self.clients_max, clients)
                self.samples += 1
                time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ---- load ------------------------------------------------------------------------------------


def parallel_grants(api):
    client_id, amount, grants = api.new_client(GRANTS), 7, 200
    results = api.parallel([("POST", f"/api/admin/clients/{client_id}/credits", "write",
                             {"action": "grant", "amount": amount})] * grants)
    statuses = Counter(status for status, _ in results)
    expect(statuses == {200: grants}, f"statuses {dict(statuses)}, expected {{200: {grants}}}")
    limit = api.quota_status(client_id)["generationsLimit"]
    expect(limit == 100 + grants * amount, f"limit {limit}, expected {100 + grants * amount}")
    new_limits = sorted(body["newLimit"] for _, body in results)
    expect(new_limits == [100 + amount * i for i in range(1, grants + 1)], "two grants reported the same newLimit")
    return f"{grants} x +{amount} in parallel: {grants} x 200, limit 100 -> {limit}, every newLimit distinct"


def consumption_at_the_limit(api):
    limit, calls = 50, 200
    client_id = api.new_client(CONSUME, limit)
    results = api.parallel([("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1})] * calls)
    statuses = Counter(status for status, _ in results)
    expect(statuses == {200: limit, 402: calls - limit}, f"statuses {dict(statuses)}")
    counts = sorted(body["generationCount"] for status, body in results if status == 200)
    expect(counts == list(range(1, limit + 1)), "two successes saw the same count")
    used = api.quota_status(client_id)["generationsUsed"]
    expect(used == limit, f"stored usage {used}, expected {limit}")
    return f"{calls} x 1 against a limit of {limit}: {statuses[200]} x 200, {statuses[402]} x 402, stored {used}"


def holds_at_the_limit(api):
    limit, calls = 50, 200
    client_id = api.new_client(HOLDS, limit)
    results = api.parallel([("POST", f"/api/clients/{client_id}/holds", "service", {"count": 1})] * calls)
    statuses = Counter(status for status, _ in results)
    expect(statuses == {201: limit, 402: calls - limit}, f"statuses {dict(statuses)}")
    expect(len({body["holdId"] for status, body in results if status == 201}) == limit, "a hold id repeated")
    status = api.quota_status(client_id)
    numbers = (status["generationsHeld"], status["generationsUsed"], status["generationsRemaining"])
    expect(numbers == (limit, 0, 0), f"held, used, remaining = {numbers}, expected ({limit}, 0, 0)")
    return f"{calls} holds of 1 against a limit of {limit}: {statuses[201]} x 201, {statuses[402]} x 402, held {limit}"


class Consumer:
    """Consumptions of 1, each with an Idempotency-Key of its own, retried with that same key
    until answered 200: a retry of one that did commit replays its answer, one that did not runs
    again, so the stored usage must equal the number of consumptions, however many attempts."""

    RETRY_FOR_SECONDS = 30

    def __init__(self, api, client_id):
        self.api, self.path = api, f"/api/clients/{client_id}/usage"
        self.keys = itertools.count()
        self.lock = threading.Lock()
        self.answered = self.replayed = 0
        self.retried = 0  # consumptions that needed more than one attempt
        self.failed_attempts = Counter()  # why an attempt failed: 502, 409, ConnectionError, ...
        self.unanswered = Counter()  # consumptions that never got their 200, by last reason

    def consume(self) -> None:
        key = f"{self.path}#{next(self.keys)}"
        deadline = time.monotonic() + self.RETRY_FOR_SECONDS
        failures = []
        while time.monotonic() < deadline:
            try:
                status, _, headers = self.api.call("POST", self.path, "service", {"count": 1},
                                                   headers={"Idempotency-Key": key})
                reason = status
            except requests.RequestException as error:
                status, reason = None, type(error).__name__
            if status == 200:
                with self.lock:
                    self.answered += 1
                    self.replayed += headers.get("Idempotent-Replayed") == "true"
                    self.retried += bool(failures)
                    self.failed_attempts.update(failures)
                return
            failures.append(reason)
            # 409: the key's first attempt died with its worker; its claim is taken over after
            # IDEMPOTENCY_LOCK_SECONDS. 502/503 or no answer: the instance went away mid-request.
            if reason not in (409, 502, 503, 504) and status is not None:
                break
            time.sleep(0.2)
        with self.lock:
            self.failed_attempts.update(failures)
            self.unanswered[failures[-1]] += 1

    def run_until(self, stop: threading.Event, threads: int):
        def loop():
            while not stop.is_set():
                self.consume()

        pool = [threading.Thread(target=loop) for _ in range(threads)]
        for thread in pool:
            thread.start()
        return pool


def kill_instance(master: int) -> list[int]:
    """SIGKILL a gunicorn master and its workers, by process id: no graceful anything."""
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False)
    pids = [master, *map(int, found.stdout.split())]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def instance_killed_under_load(api):
    haproxy, victim = HAProxy(), int(setting("CLUSTER_VICTIM_PID"))
    client_id = api.new_client(FAILOVER, 1_000_000)
    consumer = Consumer(api, client_id)
    stop = threading.Event()
    threads = consumer.run_until(stop, 16)
    try:
        time.sleep(2)
        killed = kill_instance(victim)
        down_after = haproxy.wait_for("web-2", "DOWN")
        sent_before = int(haproxy.servers()["web-2"]["stot"])
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    during = consumer.answered
    # Once it is down, every request goes to web-1 and succeeds at the first attempt.
    after = Counter(status for status, _ in api.parallel(
        [("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1})] * 100))
    sent_after = int(haproxy.servers()["web-2"]["stot"]) - sent_before
    used = api.quota_status(client_id)["generationsUsed"]
    stored_expected = during + after[200]
    waited = consumer.failed_attempts[409]
    cut_off = Counter({reason: n for reason, n in consumer.failed_attempts.items() if reason != 409})
    expect(not consumer.unanswered, f"consumptions never answered 200: {dict(consumer.unanswered)}")
    expect(after == {200: 100}, f"after web-2 was marked DOWN, 100 consumptions answered {dict(after)}")
    expect(sent_after == 0, f"HAProxy sent web-2 {sent_after} sessions after marking it DOWN")
    expect(used == stored_expected, f"stored usage {used}, but {stored_expected} consumptions were answered 200")
    expect(cut_off, "no attempt was cut off: the kill met no request in flight, so it proved nothing")
    return (f"killed web-2 (pids {', '.join(map(str, killed))}) under 16 threads of consumption; HAProxy marked it "
            f"DOWN {down_after:.1f} s later and sent it nothing after. {during} consumptions answered 200 under "
            f"load, {consumer.retried} of them after retries with the same Idempotency-Key (attempts cut off: "
            f"{', '.join(f'{n} x {reason}' for reason, n in cut_off.items())}; {waited} x 409 while a dead "
            f"attempt's claim was held; {consumer.replayed} replayed a committed answer), then {after[200]}/100 at "
            f"the first attempt; stored usage {used} = {stored_expected} answered 200")


def load_phase(api):
    with ConnectionSampler() as sampler:
        proof("parallel grants", lambda: parallel_grants(api))
        proof("consumption at the limit", lambda: consumption_at_the_limit(api))
        proof("holds at the limit", lambda: holds_at_the_limit(api))
        proof("instance killed under load", lambda: instance_killed_under_load(api))

    def connections():
        pool_size = int(setting("CLUSTER_POOL_SIZE"))
        expect(sampler.samples > 0, "no sample of pg_stat_activity was taken")
        line = (f"{sampler.samples} samples of pg_stat_activity during the load: at most {sampler.server_max} "
                f"client backends on the primary's credits database, for up to {sampler.clients_max} client "
                f"connections at PgBouncer from {INSTANCES} instances x {WORKERS} workers (a ceiling of "
                f"{INSTANCES * WORKERS * SQLALCHEMY_POOL} with SQLAlchemy's pool of {SQLALCHEMY_POOL} each); "
                f"default_pool_size {pool_size}")
        expect(sampler.server_max <= pool_size, line)
        return line

    proof("primary connections bounded by PgBouncer", connections)


# ---- replica ---------------------------------------------------------------------------------


def instances() -> list[str]:
    return setting("CLUSTER_INSTANCES").split()


def replica_status(api, expected):
    """Every instance's /readyz: 200, with the replica reported as expected and never fatal.
    Each worker reuses its answer for a second, so a change shows within a few."""
    seen = []
    for base in instances():
        deadline = time.monotonic() + 5
        while True:
            response = requests.get(base + "/readyz", timeout=10)
            expect(response.status_code == 200, f"{base}/readyz answered {response.status_code}: {response.text}")
            replica = response.json().get("checks", {}).get("replica")
            expect(replica is not None, f"{base}/readyz reports no replica check: {response.text}")
            if replica.get("status") == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect(replica.get("status") == expected and replica.get("fatal") is False,
               f"{base}/readyz reports the replica as {replica}, expected status {expected!r}, fatal false")
        seen.append(replica["status"])
    return f"/readyz 200 on both instances, replica {' and '.join(seen)}, fatal false"


def replica_reads(api, rounds):
    """Each replica-routed read, rounds times through HAProxy: 200 with the rows written before."""
    for _ in range(rounds):
        for path in REPLICA_READS:
            answer = api.ok("GET", path, expected=(200,))
            if path.startswith("/api/admin/audit-log"):
                expect(answer["items"] and {item["clientId"] for item in answer["items"]} == {GRANTS},
                       f"the audit search for {GRANTS} found {answer['items'][:2]}")
            elif path.startswith("/api/admin/clients?"):
                found = {item["id"] for item in answer["items"]}
                expect({GRANTS, CONSUME, HOLDS, FAILOVER} <= found, f"the clients list holds {sorted(found)}")
    return rounds * len(REPLICA_READS)


def instance_back(api):
    haproxy = HAProxy()
    up_after = haproxy.wait_for("web-2", "UP")
    before = int(haproxy.servers()["web-2"]["stot"])
    statuses = Counter(status for status, _ in api.parallel([("GET", "/api/admin/clients?limit=1", "write", None)] * 40))
    served = int(haproxy.servers()["web-2"]["stot"]) - before
    expect(statuses == {200: 40}, f"40 reads answered {dict(statuses)}")
    expect(served > 0, "HAProxy sent the restarted web-2 none of 40 requests")
    return f"restarted web-2 marked UP {up_after:.1f} s after answering /readyz; it served {served} of 40 requests"


def reads_from_the_replica(api):
    reads = replica_reads(api, 2)
    with psycopg.connect(setting("CLUSTER_REPLICA_DSN"), autocommit=True) as replica:
        connections = replica.execute(
            "select count(*) from pg_stat_activity where datname = 'credits'"
            " and backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchone()[0]
    expect(connections > 0, "the replica has no connection from the service after its reads")
    return f"{reads} replica-routed reads answered 200; the replica holds {connections} connections from the instances"


def fallbacks(reason: str = "") -> float | None:
    """credits_replica_fallbacks_total summed over every instance, of one reason or all; None if absent."""
    total, found = 0.0, False
    prefix = "credits_replica_fallbacks_total" + (f'{{reason="{reason}"}}' if reason else "")
    for base in instances():
        for line in requests.get(base + "/metrics", timeout=10).text.splitlines():
            if line.startswith(prefix):
                total += float(line.rsplit(" ", 1)[1])
                found = True
    return total if found else None


def reads_fall_back(api):
    before = fallbacks()
    reads = replica_reads(api, 3)
    after = fallbacks()
    line = f"{reads} replica-routed reads answered 200 from the primary"
    expect(after is not None, f"{line}, but /metrics has no credits_replica_fallbacks_total")
    expect(after > (before or 0), f"{line}, but credits_replica_fallbacks_total stayed at {after:g}")
    return f"{line}; credits_replica_fallbacks_total {before or 0:g} -> {after:g} over both instances"


def replica_up_phase(api):
    proof("instance back behind HAProxy", lambda: instance_back(api))
    proof("replica reported ready", lambda: replica_status(api, "ok"))
    proof("reads from the replica", lambda: reads_from_the_replica(api))


def reads_while_lagging(api):
    """A grant made while the replica's replay is paused: once it is more than
    REPLICA_MAX_LAG_SECONDS behind, the grant listing still shows the new grant (the primary's)."""
    max_lag = float(setting("CLUSTER_REPLICA_MAX_LAG"))
    with psycopg.connect(setting("CLUSTER_REPLICA_DSN"), autocommit=True) as replica:
        replica.execute("select pg_wal_replay_pause()")
        try:
            grant = api.ok("POST", f"/api/admin/clients/{GRANTS}/credits",
                           body={"action": "grant", "amount": 1, "reason": "made while the replica lags"})
            time.sleep(max_lag + 1.5)
            lag = replica.execute("select extract(epoch from now() - pg_last_xact_replay_timestamp())").fetchone()[0]
            status = replica_status(api, "lagging")
            before = fallbacks("lagging") or 0
            newest = api.ok("GET", f"/api/admin/clients/{GRANTS}/grants?limit=1", expected=(200,))["items"][0]
            after = fallbacks("lagging")
        finally:
            replica.execute("select pg_wal_replay_resume()")
    expect(newest["id"] == grant["grantId"], f"the grant listing's newest is {newest['id']}, not the new {grant['grantId']}")
    expect(after is not None and after > before, f"credits_replica_fallbacks_total{{reason=lagging}} stayed at {after}")
    back = replica_status(api, "ok")
    return (f"replay paused, {float(lag):.1f} s behind: {status}; the grant listing showed grant "
            f"{grant['grantId']} from the primary, lagging fallbacks {before:g} -> {after:g}; replay resumed: {back}")


def replica_lag_phase(api):
    proof("replica behind: its reads go to the primary", lambda: reads_while_lagging(api))


def replica_down_phase(api):
    proof("replica down, still ready", lambda: replica_status(api, "unavailable"))
    proof("reads fall back to the primary", lambda: reads_fall_back(api))


PHASES = {"load": load_phase, "replica-up": replica_up_phase, "replica-lag": replica_lag_phase,
          "replica-down": replica_down_phase}

if __name__ == "__main__":
    PHASES[setting("CLUSTER_PHASE")](Api())
    sys.exit(0)
