"""Random sequences of everything that moves a month's numbers, against an in-memory model.

hypothesis drives consume, hold, capture (whole or part), release, the clock (holds lapse),
refund, grant (permanent or for the month), void and reset on one client through the HTTP API;
after every step each figure the API shows must equal the model's, an accepted consumption or
hold never leaves used + held past the effective limit, and the month's usage is explained by
consumed + captured - refunded.
"""

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule, run_state_machine_as_test

from helpers import succeeded

START_LIMIT = 20


@dataclass
class ModelHold:
    count: int
    expires_at: float  # seconds on the model's clock
    status: str = "held"


@dataclass
class Model:
    stored_limit: int = START_LIMIT
    month_granted: int = 0
    used: int = 0
    consumed: int = 0
    captured: int = 0
    refunded: int = 0
    now: float = 0.0
    holds: dict[int, ModelHold] = field(default_factory=dict)
    grants: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (scope, amount), live ones

    @property
    def limit(self) -> int:
        return self.stored_limit + self.month_granted

    @property
    def held(self) -> int:
        return sum(h.count for h in self.holds.values() if h.status == "held" and self.now < h.expires_at)

    def status_of(self, hold_id: int) -> str:
        hold = self.holds[hold_id]
        return "expired" if hold.status == "held" and self.now >= hold.expires_at else hold.status

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used - self.held, 0)


def machine_for(api, clock):
    class Credits(RuleBasedStateMachine):
        holds = Bundle("holds")
        grants = Bundle("grants")

        def __init__(self):
            super().__init__()
            self.model = Model()
            self.client_id = f"c{uuid.uuid4().hex[:12]}"
            self.base = clock.now
            api.create_client(self.client_id, "Model client")
            succeeded(api.put(f"/api/admin/clients/{self.client_id}/quota",
                              json={"monthlyGenerationLimit": START_LIMIT}))

        def post(self, path, body, key="service", idempotent=False):
            headers = {"Idempotency-Key": f"model-{uuid.uuid4().hex}"} if idempotent else None
            return api.post(f"/api/clients/{self.client_id}{path}", json=body, key=key, headers=headers)

        def admin(self, body):
            return api.post(f"/api/admin/clients/{self.client_id}/credits", json=body, key="write")

        def assert_fits(self):
            assert self.model.used + self.model.held <= self.model.limit

        @rule(count=st.integers(1, 8))
        def consume(self, count):
            response = self.post("/usage", {"count": count})
            fits = self.model.used + self.model.held + count <= self.model.limit
            assert response.status_code == (200 if fits else 402), response.get_json()
            if fits:
                self.model.used += count
                self.model.consumed += count
                self.assert_fits()
            assert response.get_json()["remaining"] == self.model.remaining

        @rule(target=holds, count=st.integers(1, 8), ttl=st.integers(1, 120))
        def place(self, count, ttl):
            response = self.post("/holds", {"count": count, "ttlSeconds": ttl})
            fits = self.model.used + self.model.held + count <= self.model.limit
            assert response.status_code == (201 if fits else 402), response.get_json()
            if not fits:
                assert response.get_json()["generationsHeld"] == self.model.held
                return -1
            hold_id = response.get_json()["holdId"]
            self.model.holds[hold_id] = ModelHold(count, self.model.now + ttl)
            self.assert_fits()
            assert response.get_json()["generationsRemaining"] == self.model.remaining
            return hold_id

        @rule(hold_id=holds, part=st.floats(0, 1) | st.none())
        def capture(self, hold_id, part):
            if hold_id < 0:
                return
            hold = self.model.holds[hold_id]
            count = None if part is None else int(hold.count * part)
            response = self.post(f"/holds/{hold_id}/capture", {} if count is None else {"count": count})
            status = self.model.status_of(hold_id)
            if status != "held":
                assert (response.status_code, response.get_json()["status"]) == (409, status)
                return
            assert response.status_code == 200, response.get_json()
            taken = hold.count if count is None else count
            hold.status = "captured"
            self.model.used += taken
            self.model.captured += taken
            assert response.get_json()["generationsRemaining"] == self.model.remaining

        @rule(hold_id=holds)
        def release(self, hold_id):
            if hold_id < 0:
                return
            response = self.post(f"/holds/{hold_id}/release", {})
            status = self.model.status_of(hold_id)
            if status != "held":
                assert (response.status_code, response.get_json()["status"]) == (409, status)
                return
            assert response.status_code == 200, response.get_json()
            self.model.holds[hold_id].status = "released"

        @rule(seconds=st.integers(1, 90))
        def wait(self, seconds):
            self.model.now += seconds
            clock.advance(seconds=seconds)

        @rule(count=st.integers(1, 5))
        def refund(self, count):
            response = self.post("/usage/refunds", {"count": count}, idempotent=True)
            allowed = count <= self.model.used
            assert response.status_code == (200 if allowed else 409), response.get_json()
            if allowed:
                self.model.used -= count
                self.model.refunded += count
                assert response.get_json()["generationsRemaining"] == self.model.remaining

        @rule(target=grants, amount=st.integers(1, 10), scope=st.sampled_from(["permanent", "month"]))
        def grant(self, amount, scope):
            body = succeeded(self.admin({"action": "grant", "amount": amount, "scope": scope}))
            if scope == "permanent":
                self.model.stored_limit += amount
            else:
                self.model.month_granted += amount
            self.model.grants[body["grantId"]] = (scope, amount)
            assert body["remaining"] == self.model.remaining
            return body["grantId"]

        @rule(grant_id=consumes(grants))
        def void(self, grant_id):
            scope, amount = self.model.grants.pop(grant_id)
            response = self.admin({"action": "void", "grantId": grant_id})
            if scope == "permanent" and self.model.stored_limit < amount:
                assert response.status_code == 409
                return
            assert response.status_code == 200, response.get_json()
            if scope == "permanent":
                self.model.stored_limit -= amount
            else:
                self.model.month_granted -= amount

        @rule()
        def reset(self):
            succeeded(self.admin({"action": "reset"}))
            self.model.used = self.model.consumed = self.model.captured = self.model.refunded = 0

        @invariant()
        def figures_match(self):
            status = succeeded(api.get(f"/api/clients/{self.client_id}/quota-status", key="service"))
            assert (status["generationsUsed"], status["generationsHeld"], status["generationsLimit"],
                    status["generationsRemaining"]) == (self.model.used, self.model.held, self.model.limit,
                                                        self.model.remaining)
            months = succeeded(api.get(f"/api/admin/clients/{self.client_id}/usage", key="read"))["items"]
            if months:
                [month] = months
                assert month["generationCount"] == self.model.used
                assert (month["consumedCount"], month["capturedCount"], month["refundedCount"]) == (
                    self.model.consumed, self.model.captured, self.model.refunded)
                assert month["generationCount"] == (month["consumedCount"] + month["capturedCount"]
                                                    - month["refundedCount"])

        def teardown(self):
            clock.now = self.base

    return Credits


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_figure_matches_the_model_after_any_sequence(api, clock):
    run_state_machine_as_test(
        lambda: machine_for(api, clock)(),
        settings=settings(max_examples=20, stateful_step_count=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]),
    )
