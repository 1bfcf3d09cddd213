"""Holds: credits reserved while a generation runs, then captured (paid for) or released.

As TigerBeetle's pending transfers and Stripe's authorisations: a hold reserves `count` of its
month's limit, and resolves exactly once, by capture (up to its count; the rest is released in
the same transaction) or release; from its expires_at on it no longer counts, reads as
expired and cannot be captured, whether or not the sweep has marked it so in storage. A hold
belongs to the month it was made in: captured after that month ended, it counts there.

Every write takes the client's quota row lock first, as every writer of the client does, then
the hold's row: a resolution is serial with every other change to the client.
"""

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..errors import Conflict, NotFound, QuotaExceeded
from ..models import Hold, QuotaLimit
from ..months import iso_utc, month_of, next_month_start
from ..plans import UNLIMITED, effective_limit, remaining
from ..transactions import batches_alone, write_transaction
from .events import emit
from .idempotency import IdempotencyClaim
from .month_usage import exact_held, month_row, usage_row
from .paging import page_of
from .quotas import find_quota
from .results import HoldState, Page
from .thresholds import crossed, keep_in_step


def status_at(hold: Hold, now: datetime) -> str:
    """The hold's status as of now: an open hold past its expires_at is expired, swept or not."""
    if hold.status == "held" and hold.expires_at <= now:
        return "expired"
    return hold.status


def _state(hold: Hold, now: datetime) -> HoldState:
    status = status_at(hold, now)
    captured = hold.captured_count or 0
    return HoldState(
        hold_id=hold.id, status=status, count=hold.count, month=hold.month, reference=hold.reference,
        created_at=hold.created_at, expires_at=hold.expires_at,
        resolved_at=hold.resolved_at or (hold.expires_at if status == "expired" else None),
        captured_count=captured, released_count=hold.count - captured if status != "held" else 0,
    )


class HoldsService:
    def __init__(self, session: Session, clock: Callable[[], datetime], max_open: int,
                 thresholds: tuple[int, ...] = ()):
        self.session = session
        self.clock = clock
        self.max_open = max_open
        self.thresholds = thresholds

    def place(self, key_name: str, client_id: str, count: int, ttl_seconds: int, reference: str | None = None,
              idempotency: IdempotencyClaim | None = None) -> HoldState:
        """Reserve count of this UTC month's limit for ttl_seconds, all or nothing."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            open_now = self.session.scalar(select(func.count()).select_from(Hold).where(
                Hold.client_id == client_id, Hold.status == "held", Hold.expires_at > now))
            if open_now >= self.max_open:
                raise Conflict(
                    f"Client {client_id!r} has {open_now} open holds, the most one client may have; capture or "
                    "release some (or let them expire) before holding more."
                )
            row = month_row(self.session, client_id, month, now)
            held = exact_held(self.session, row, now)
            limit = effective_limit(quota.monthly_generation_limit, row.granted)
            if limit != UNLIMITED and row.generation_count + held + count > limit:
                left = remaining(limit, row.generation_count + held)
                raise QuotaExceeded(
                    f"Not enough credits to hold {count}: {left} left of the monthly generation limit of {limit} "
                    f"({row.generation_count} used and {held} held in {month}). The count resets at "
                    f"{iso_utc(next_month_start(now))}.",
                    month=month, generationCount=row.generation_count, limit=limit, remaining=left,
                    generationsHeld=held,
                )
            hold = Hold(client_id=client_id, month=month, count=count, status="held", reference=reference,
                        key_name=key_name, created_at=now, expires_at=now + timedelta(seconds=ttl_seconds))
            self.session.add(hold)
            row.held = held + count
            row.updated_at = now
            self.session.flush()
            state = replace(_state(hold, now), generations_held=row.held,
                            generations_remaining=remaining(limit, row.generation_count + row.held))
            if idempotency:
                idempotency.complete(self.session, state)
        metrics.hold_placed(count)
        return state

    def capture(self, client_id: str, hold_id: int, count: int | None = None,
                idempotency: IdempotencyClaim | None = None) -> HoldState:
        """Add count (default: all of the hold) to the hold's month's usage; release the rest."""
        return self._resolve(client_id, hold_id, count, idempotency)

    def release(self, client_id: str, hold_id: int, idempotency: IdempotencyClaim | None = None) -> HoldState:
        """Give the whole hold back."""
        return self._resolve(client_id, hold_id, 0, idempotency, capturing=False)

    def _resolve(self, client_id: str, hold_id: int, count: int | None, idempotency: IdempotencyClaim | None,
                 capturing: bool = True) -> HoldState:
        now = self.clock()
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            hold = self.session.scalar(select(Hold).where(Hold.id == hold_id, Hold.client_id == client_id)
                                       .with_for_update().execution_options(populate_existing=True))
            if hold is None:
                raise NotFound(f"Client {client_id!r} has no hold with id {hold_id}.")
            status = status_at(hold, now)
            if status != "held":
                when = iso_utc(hold.resolved_at or hold.expires_at)
                raise Conflict(f"Hold {hold_id} is {status} (since {when}): a hold is captured or released once.",
                               status=status)
            captured = hold.count if count is None else count
            if captured > hold.count:
                # 409 rather than 400: the body is valid; this hold is what makes it too much.
                raise Conflict(f"Hold {hold_id} holds {hold.count}; {captured} cannot be captured from it: capture"
                               f" at most {hold.count}. Nothing changed.", status=status)
            hold.status = "captured" if capturing else "released"
            hold.captured_count = captured
            hold.resolved_at = now
            row = usage_row(self.session, client_id, hold.month)
            row.generation_count += captured
            row.captured += captured
            row.updated_at = now
            self.session.flush()
            held = exact_held(self.session, row, now)
            limit = effective_limit(quota.monthly_generation_limit, row.granted)
            rising = crossed(row.generation_count - captured, row.generation_count, limit, self.thresholds)
            if rising:
                keep_in_step(self.session, client_id, hold.month, row.generation_count, limit, now, self.thresholds,
                             only_rising=rising)
            state = replace(_state(hold, now), generation_count=row.generation_count, generations_held=held,
                            generations_remaining=remaining(limit, row.generation_count + held))
            if idempotency:
                idempotency.complete(self.session, state)
        if captured:
            metrics.generations_consumed(captured)
        return state

    def get(self, client_id: str, hold_id: int) -> HoldState:
        find_quota(self.session, client_id)
        hold = self.session.scalar(select(Hold).where(Hold.id == hold_id, Hold.client_id == client_id))
        if hold is None:
            raise NotFound(f"Client {client_id!r} has no hold with id {hold_id}.")
        return _state(hold, self.clock())

    def list(self, client_id: str, limit: int, offset: int, status: str | None = None) -> Page:
        """The client's holds, newest first, optionally of one status as of now."""
        now = self.clock()
        find_quota(self.session, client_id)
        query = select(Hold).where(Hold.client_id == client_id)
        if status == "held":
            query = query.where(Hold.status == "held", Hold.expires_at > now)
        elif status == "expired":
            query = query.where(Hold.status.in_(("held", "expired")), Hold.expires_at <= now)
        elif status is not None:
            query = query.where(Hold.status == status)
        return page_of(self.session, query.order_by(Hold.id.desc()), limit, offset, lambda row: _state(row[0], now))

    def sweep(self, batch: int) -> int:
        """Mark lapsed holds expired in storage, a client at a time, at most batch per transaction;
        returns how many. Correctness never waits for this: reads go by expires_at."""
        now = self.clock()
        swept = 0
        for expired in batches_alone(self.session, SWEEP_LOCK, lambda: self._expire_one_client(now, batch)):
            if expired is None:
                break
            swept += expired
            metrics.holds_expired(expired)
        return swept

    def _expire_one_client(self, now: datetime, batch: int) -> int | None:
        """In the caller's transaction: up to batch lapsed holds of one client marked expired, with
        their months' held counts and events; None when no hold has lapsed."""
        client_id = self.session.scalar(select(Hold.client_id).where(
            Hold.status == "held", Hold.expires_at <= now).limit(1))
        if client_id is None:
            return None
        # The client's lock first, as every writer takes it, then its lapsed holds.
        self.session.scalar(select(QuotaLimit.client_id).where(QuotaLimit.client_id == client_id)
                            .with_for_update())
        lapsed = select(Hold.id).where(Hold.client_id == client_id, Hold.status == "held",
                                       Hold.expires_at <= now).limit(batch).scalar_subquery()
        expired = self.session.execute(
            update(Hold).where(Hold.id.in_(lapsed)).values(status="expired", resolved_at=Hold.expires_at)
            .returning(Hold.id, Hold.month, Hold.count, Hold.expires_at, Hold.reference)).all()
        for month in {hold.month for hold in expired}:
            row = usage_row(self.session, client_id, month)
            if row is not None:
                exact_held(self.session, row, now)
        for hold in expired:  # the platform may want to know a job ran past its hold
            emit(self.session, "hold.expired", {
                "clientId": client_id, "holdId": hold.id, "count": hold.count, "month": hold.month,
                "expiresAt": iso_utc(hold.expires_at), "reference": hold.reference}, now)
        return len(expired)


# pg_try_advisory_xact_lock key held while sweeping: a fixed 64-bit number no other code uses.
SWEEP_LOCK = 0x686F6C64735F7377  # "holds_sw"
