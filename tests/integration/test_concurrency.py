"""Concurrency proofs against real processes: gunicorn workers and two instances sharing a database.

Each test drives many parallel HTTP clients and then checks the numbers are exact: no lost
grant, no oversold credit, one change per idempotency key, every audit entry matching a
committed change. PostgreSQL is the production database; SQLite runs where one instance applies.
"""

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import config_for, dispose_engines, issue_keys
from credits_service import create_app

from .servers import Instance

pytestmark = pytest.mark.integration

THREADS = 32


@pytest.fixture(scope="module")
def backend(each_backend_database):
    """(backend name, database URL, {"write": key, "service": key})."""
    url = each_backend_database
    issued = issue_keys(url, **{"alice@example.com": "write", "platform": "service"})
    name = "postgresql" if url.startswith("postgresql") else "sqlite"
    return name, url, {"write": issued["alice@example.com"], "service": issued["platform"]}


@pytest.fixture(scope="module")
def instances(backend, tmp_path_factory):
    """Two instances (PostgreSQL) or one (SQLite: one machine, one file), four workers each."""
    name, url, _ = backend
    logs = tmp_path_factory.mktemp("logs")
    count = 2 if name == "postgresql" else 1
    started = [Instance(url, workers=4, log_path=logs / f"gunicorn-{i}.log").start() for i in range(count)]
    yield started
    for instance in started:
        instance.stop()


class Caller:
    """A requests session per thread, spreading calls across the instances."""

    def __init__(self, instances, keys):
        self.urls = [instance.url for instance in instances]
        self.keys = keys
        self.local = threading.local()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def call(self, i, method, path, key="write", body=None, headers=None):
        url = self.urls[i % len(self.urls)] + path
        headers = {"Authorization": f"Bearer {self.keys[key]}", **(headers or {})}
        response = self.session().request(method, url, json=body, headers=headers, timeout=60)
        return response.status_code, response.json() if response.content else None

    def parallel(self, calls):
        """Run calls [(method, path, key, body, headers)] in parallel; results in call order."""
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(self.call, i, *c) for i, c in enumerate(calls)]
            return [f.result() for f in futures]


@pytest.fixture
def caller(instances, backend):
    return Caller(instances, backend[2])


_ids = iter(range(10**6))


@pytest.fixture
def client_id(caller):
    """A fresh client on the free plan (limit 100)."""
    client_id = f"race-{os.getpid()}-{next(_ids)}"
    status, body = caller.call(0, "POST", "/api/admin/clients", body={"id": client_id, "name": "Race"})
    assert status == 201, body
    return client_id


def audit_entries(caller, client_id, action=None):
    """Every audit entry of the client, oldest first."""
    entries, offset = [], 0
    while offset is not None:
        query = f"?limit=100&offset={offset}" + (f"&action={action}" if action else "")
        status, page = caller.call(0, "GET", f"/api/admin/clients/{client_id}/audit-log{query}")
        assert status == 200, page
        entries.extend(page["items"])
        offset = page["nextOffset"]
    return sorted(entries, key=lambda e: e["id"])


def assert_grant_chain(entries, start, amount):
    """previousValue -> newValue of successive grants form one unbroken chain."""
    expected = start
    for entry in entries:
        assert entry["previousValue"] == str(expected)
        expected += amount
        assert entry["newValue"] == str(expected)
    return expected


def assert_audit_chain_intact(backend, client_id):
    """The client's hash chain, appended by racing workers, recomputes without a gap or fork."""
    app = create_app(config_for(backend[1]))
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--client", client_id])
    dispose_engines(app)
    assert result.exit_code == 0, result.output


def quota_status(caller, client_id):
    status, body = caller.call(0, "GET", f"/api/clients/{client_id}/quota-status", key="service")
    assert status == 200, body
    return body


def test_parallel_grants_lose_no_increment(backend, caller, client_id):
    amount, grants = 7, 200
    results = caller.parallel(
        [("POST", f"/api/admin/clients/{client_id}/credits", "write", {"action": "grant", "amount": amount})]
        * grants
    )
    assert Counter(status for status, _ in results) == {200: grants}
    assert quota_status(caller, client_id)["generationsLimit"] == 100 + grants * amount

    entries = audit_entries(caller, client_id)
    assert len(entries) == grants
    assert {e["action"] for e in entries} == {"credit_grant"}
    assert assert_grant_chain(entries, 100, amount) == 100 + grants * amount
    # Each answer reports the change its own entry recorded.
    assert sorted(body["newLimit"] for _, body in results) == [int(e["newValue"]) for e in entries]
    assert [e["seq"] for e in entries] == list(range(1, grants + 1))
    assert_audit_chain_intact(backend, client_id)


def test_parallel_consumption_never_oversells(caller, client_id):
    limit = 50
    status, _ = caller.call(0, "PUT", f"/api/admin/clients/{client_id}/quota",
                            body={"monthlyGenerationLimit": limit})
    assert status == 200
    results = caller.parallel(
        [("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1})] * (4 * limit)
    )
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: limit, 402: 3 * limit}
    # Each success saw a distinct count: 1..limit, no two requests shared an increment.
    assert sorted(body["generationCount"] for status, body in results if status == 200) == list(
        range(1, limit + 1)
    )
    assert all(body["remaining"] == 0 for status, body in results if status == 402)
    assert quota_status(caller, client_id)["generationsUsed"] == limit


def test_one_change_per_idempotency_key(caller, client_id):
    headers = {"Idempotency-Key": f"grant-{client_id}"}
    results = caller.parallel(
        [("POST", f"/api/admin/clients/{client_id}/credits", "write", {"action": "grant", "amount": 25},
          headers)] * 20
    )
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {200, 409}, statuses
    assert statuses[200] >= 1
    answers = [body for status, body in results if status == 200]
    assert {json.dumps(body, sort_keys=True) for body in answers} == {
        json.dumps({"action": "grant", "grantId": answers[0]["grantId"], "scope": "permanent", "month": None,
                    "expiresAt": None, "currentUsage": 0, "previousLimit": 100, "newLimit": 125,
                    "remaining": 125}, sort_keys=True)
    }
    assert quota_status(caller, client_id)["generationsLimit"] == 125
    assert len(audit_entries(caller, client_id)) == 1

    usage_headers = {"Idempotency-Key": f"use-{client_id}"}
    results = caller.parallel(
        [("POST", f"/api/clients/{client_id}/usage", "service", {"count": 3}, usage_headers)] * 20
    )
    assert set(status for status, _ in results) <= {200, 409}
    assert quota_status(caller, client_id)["generationsUsed"] == 3


def assert_serializable(caller, client_id, start_limit, amount, results, kinds):
    """The end state and every answer fit one serial order of the requests."""
    grants = [body for (status, body), kind in zip(results, kinds) if kind == "grant" and status == 200]
    resets = [body for (status, body), kind in zip(results, kinds) if kind == "reset" and status == 200]
    consumed = [body for (status, body), kind in zip(results, kinds) if kind == "use" and status == 200]
    refused = [body for (status, body), kind in zip(results, kinds) if kind == "use" and status == 402]
    assert len(grants) + len(resets) + len(consumed) + len(refused) == len(results)

    final = quota_status(caller, client_id)
    assert final["generationsLimit"] == start_limit + amount * len(grants)
    grant_entries = audit_entries(caller, client_id, "credit_grant")
    assert assert_grant_chain(grant_entries, start_limit, amount) == final["generationsLimit"]

    # Between resets the successful consumptions counted 1, 2, 3, ...: the counts seen are
    # exactly the ranges ending at each reset's previousUsage, plus the final count.
    reset_entries = audit_entries(caller, client_id, "usage_reset")
    assert len(reset_entries) == len(resets)
    epochs = [e["details"]["previousUsage"] for e in reset_entries] + [final["generationsUsed"]]
    expected = sorted(n for epoch in epochs for n in range(1, epoch + 1))
    assert sorted(body["generationCount"] for body in consumed) == expected
    for body in consumed + refused:
        assert body["remaining"] == body["limit"] - body["generationCount"]
    for body in refused:  # refused only when that request would have gone over the limit
        assert body["generationCount"] + 1 > body["limit"]


def test_reset_racing_consumption_and_grants(caller, client_id):
    amount = 5
    calls, kinds = [], []
    for i in range(150):
        if i % 50 == 25:
            calls.append(("POST", f"/api/admin/clients/{client_id}/credits", "write", {"action": "reset"}))
            kinds.append("reset")
        elif i % 10 == 3:
            calls.append(("POST", f"/api/admin/clients/{client_id}/credits", "write",
                          {"action": "grant", "amount": amount}))
            kinds.append("grant")
        else:
            calls.append(("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1}))
            kinds.append("use")
    results = caller.parallel(calls)
    assert_serializable(caller, client_id, 100, amount, results, kinds)


def grant_ledger(caller, client_id, query=""):
    """Every ledger row of the client, newest first."""
    rows, offset = [], 0
    while offset is not None:
        status, page = caller.call(0, "GET", f"/api/admin/clients/{client_id}/grants?limit=100&offset={offset}{query}")
        assert status == 200, page
        rows.extend(page["items"])
        offset = page["nextOffset"]
    return rows


def effective_limits(caller, client_id, start):
    """The effective limits one after the other, from the grant and void entries (in commit order)."""
    entries = sorted(audit_entries(caller, client_id, "credit_grant") + audit_entries(caller, client_id, "credit_void"),
                     key=lambda e: e["id"])
    limits = [start]
    for entry in entries:
        assert entry["previousValue"] == str(limits[-1]), entry
        limits.append(int(entry["newValue"]))
    return entries, limits


def test_consumption_racing_month_grants_and_voids_fits_a_serial_order(caller, client_id):
    base, amount, voided_amount = 20, 2, 3
    credits = f"/api/admin/clients/{client_id}/credits"
    assert caller.call(0, "PUT", f"/api/admin/clients/{client_id}/quota", body={"monthlyGenerationLimit": base})[0] == 200
    to_void = []
    for _ in range(15):
        status, body = caller.call(0, "POST", credits, body={"action": "grant", "amount": voided_amount, "scope": "month"})
        assert status == 200, body
        to_void.append(body["grantId"])
    start = base + 15 * voided_amount

    calls, kinds = [], []
    for i in range(150):
        if i % 10 == 4:
            calls.append(("POST", credits, "write", {"action": "void", "grantId": to_void[i // 10]}))
            kinds.append("void")
        elif i % 10 == 7:
            calls.append(("POST", credits, "write", {"action": "grant", "amount": amount, "scope": "month"}))
            kinds.append("grant")
        else:
            calls.append(("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1}))
            kinds.append("use")
    results = caller.parallel(calls)
    by_kind = {kind: [r for r, k in zip(results, kinds) if k == kind] for kind in ("void", "grant", "use")}
    assert {status for status, _ in by_kind["void"] + by_kind["grant"]} == {200}
    assert {status for status, _ in by_kind["use"]} <= {200, 402}

    # The limits the grants and voids went through, in their serial order, match their answers.
    entries, limits = effective_limits(caller, client_id, base)
    assert len(entries) == 15 + 15 + 15 and limits[15] == start
    entries, limits = entries[15:], limits[15:]
    admin_answers = sorted((body["previousLimit"], body["newLimit"]) for _, body in by_kind["void"] + by_kind["grant"])
    assert admin_answers == sorted((int(e["previousValue"]), int(e["newValue"])) for e in entries)

    # Successful consumptions counted 1, 2, 3, ...: that is their serial order. Each answer's
    # limit is the effective limit its statement saw: walking the limits in order, every
    # success finds its limit at or after the previous one's, and never counted past it.
    consumed = sorted((body for status, body in by_kind["use"] if status == 200), key=lambda b: b["generationCount"])
    assert [body["generationCount"] for body in consumed] == list(range(1, len(consumed) + 1))
    earliest, position = [], 0
    for body in consumed:
        assert body["generationCount"] <= body["limit"]
        position = limits.index(body["limit"], position)
        earliest.append(position)
    latest, position = [], len(limits) - 1
    for body in reversed(consumed):
        position = max(i for i in range(position + 1) if limits[i] == body["limit"])
        latest.insert(0, position)
    # A refusal after the g-th success saw a limit between that success's and the next one's.
    for status, body in by_kind["use"]:
        if status == 402:
            used = body["generationCount"]
            assert used + 1 > body["limit"] and body["remaining"] == max(body["limit"] - used, 0)
            low = earliest[used - 1] if used else 0
            high = latest[used] if used < len(consumed) else len(limits) - 1
            assert body["limit"] in limits[low:high + 1], (body, limits[low:high + 1])

    final = quota_status(caller, client_id)
    assert final["generationsUsed"] == len(consumed)
    assert final["generationsLimit"] == limits[-1] == base + 15 * amount
    live = grant_ledger(caller, client_id, "&scope=month&status=active")
    assert final["grantedThisMonth"] == sum(row["amount"] for row in live) == 15 * amount
    assert len(grant_ledger(caller, client_id, "&status=voided")) == 15


def test_parallel_month_grants_add_exactly_their_sum_to_this_month(caller, client_id):
    amount, grants = 7, 100
    results = caller.parallel(
        [("POST", f"/api/admin/clients/{client_id}/credits", "write",
          {"action": "grant", "amount": amount, "scope": "month"})] * grants
    )
    assert Counter(status for status, _ in results) == {200: grants}
    final = quota_status(caller, client_id)
    assert (final["baseLimit"], final["grantedThisMonth"], final["generationsLimit"]) == (
        100, grants * amount, 100 + grants * amount,
    )
    entries, limits = effective_limits(caller, client_id, 100)
    assert limits == [100 + i * amount for i in range(grants + 1)]
    assert sorted(body["newLimit"] for _, body in results) == limits[1:]
    assert len({body["grantId"] for _, body in results}) == grants
    assert len(grant_ledger(caller, client_id, "&scope=month&status=active")) == grants


def test_killed_worker_leaves_consistent_numbers(backend, caller, instances, client_id):
    """SIGKILL workers mid-load; after a restart, every audit entry matches a committed change."""
    amount = 3
    stop = threading.Event()
    outcomes = Counter()
    counting = threading.Lock()

    def load(i):
        while not stop.is_set():
            try:
                status, _ = caller.call(i, "POST", f"/api/admin/clients/{client_id}/credits",
                                        body={"action": "grant", "amount": amount})
                outcome = status
                caller.call(i, "POST", f"/api/clients/{client_id}/usage", key="service", body={"count": 1})
            except requests.RequestException:
                outcome = "lost"
            with counting:
                outcomes[outcome] += 1

    def lost() -> int:
        with counting:
            return outcomes["lost"]

    with ThreadPoolExecutor(8) as pool:
        for i in range(8):
            pool.submit(load, i)
        # Three kills at least, more (ten at most) until one has cut a request short.
        for kills in range(1, 11):
            time.sleep(0.7)
            victim = instances[0].worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            if kills >= 3 and lost():
                break
        time.sleep(0.7)
        stop.set()

    # Restart every instance, then read the state through the API.
    for instance in instances:
        instance.stop()
        instance.start()
    final = quota_status(caller, client_id)
    entries = audit_entries(caller, client_id, "credit_grant")
    assert outcomes[200] > 0
    assert outcomes["lost"] > 0, "no kill met a request in flight"
    assert outcomes[200] <= len(entries) <= outcomes[200] + outcomes["lost"]
    # The limit moved exactly as the committed entries say: no change without its entry, no entry without its change.
    assert assert_grant_chain(entries, 100, amount) == final["generationsLimit"]
    assert_audit_chain_intact(backend, client_id)


def test_delete_racing_grants_and_consumption_never_deadlocks(caller, client_id):
    """Every writer takes the quota row lock first, a delete too: no deadlock, no 503."""
    grant = ("POST", f"/api/admin/clients/{client_id}/credits", "write", {"action": "grant", "amount": 1})
    use = ("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1})
    calls = [grant, use] * 30
    calls.insert(30, ("DELETE", f"/api/admin/clients/{client_id}", "write", None))
    statuses = Counter(status for status, _ in caller.parallel(calls))
    assert statuses[204] == 1
    assert set(statuses) <= {200, 204, 404}, statuses
    status, _ = caller.call(0, "GET", f"/api/admin/clients/{client_id}")
    assert status == 404


# ---- holds -----------------------------------------------------------------------------


def set_limit(caller, client_id, limit):
    status, body = caller.call(0, "PUT", f"/api/admin/clients/{client_id}/quota", body={"monthlyGenerationLimit": limit})
    assert status == 200, body


def test_parallel_holds_never_reserve_past_the_limit(caller, client_id):
    set_limit(caller, client_id, 50)
    results = caller.parallel([("POST", f"/api/clients/{client_id}/holds", "service", {"count": 1})] * 200)
    assert Counter(status for status, _ in results) == {201: 50, 402: 150}
    assert len({body["holdId"] for status, body in results if status == 201}) == 50
    status = quota_status(caller, client_id)
    assert (status["generationsHeld"], status["generationsUsed"], status["generationsRemaining"]) == (50, 0, 0)


def test_a_hold_captured_and_released_at_once_resolves_once(caller, client_id):
    holds = []
    for _ in range(20):
        code, body = caller.call(0, "POST", f"/api/clients/{client_id}/holds", key="service", body={"count": 3})
        assert code == 201, body
        holds.append(body["holdId"])
    calls = [("POST", f"/api/clients/{client_id}/holds/{hold_id}/{action}", "service", {})
             for hold_id in holds for action in ("capture", "release")]
    results = caller.parallel(calls)
    captured = 0
    for (capture_code, capture_body), (release_code, release_body) in zip(results[::2], results[1::2]):
        assert sorted([capture_code, release_code]) == [200, 409], (capture_body, release_body)
        if capture_code == 200:
            captured += 3
            assert release_body["status"] == "captured"
        else:
            assert capture_body["status"] == "released"
    status = quota_status(caller, client_id)
    assert (status["generationsUsed"], status["generationsHeld"]) == (captured, 0)


def test_holds_filling_the_limit_refuse_consumption_until_released(caller, client_id):
    set_limit(caller, client_id, 10)
    holds = [caller.call(0, "POST", f"/api/clients/{client_id}/holds", key="service", body={"count": 1})[1]["holdId"]
             for _ in range(10)]
    consume = ("POST", f"/api/clients/{client_id}/usage", "service", {"count": 1})
    assert Counter(status for status, _ in caller.parallel([consume] * 20)) == {402: 20}
    for hold_id in holds[:3]:
        assert caller.call(0, "POST", f"/api/clients/{client_id}/holds/{hold_id}/release", key="service",
                           body={})[0] == 200
    assert Counter(status for status, _ in caller.parallel([consume] * 20)) == {200: 3, 402: 17}
    status = quota_status(caller, client_id)
    assert (status["generationsUsed"], status["generationsHeld"], status["generationsRemaining"]) == (3, 7, 0)
