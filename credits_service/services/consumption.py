"""Consumption: the platform's side (consume, quota status) and a month's usage (reset, history).

The check against the effective limit and the increment are one upsert statement, so two
consumptions can never both pass a check that only one of them fits; it runs under the
client's quota row lock, so it sees every grant, hold, reset and limit change committed before
it. What open holds reserve counts as used (services/month_usage.py).
"""

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, cast, literal, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from .. import metrics
from ..audit.trail import AuditTrail
from ..errors import InvalidRequest, NotFound, QuotaExceeded
from ..logs import log_admin_action
from ..models import QuotaLimit, UsageRecord
from ..months import iso_utc, month_named, month_number, month_of
from ..plans import UNLIMITED, effective_limit, remaining
from ..transactions import (
    read_connection,
    standalone_statements,
    upsert_for,
    write_transaction,
)
from .events import emit
from .idempotency import IdempotencyClaim
from .month_usage import exact_held, usage_row
from .quotas import find_quota, quota_with_month
from .results import HistoryMonth, MonthUsage, QuotaStatus, ResetResult, UsageHistory
from .storage import storage_status
from .thresholds import crossed, keep_in_step

NEAR_LIMIT_PERCENT = 80
# GET /usage without a range: this month and the 11 before it.
DEFAULT_HISTORY_MONTHS = 12
MAX_HISTORY_MONTHS = 120

_quotas, _usage = QuotaLimit.__table__, UsageRecord.__table__
_LOCK_LIMIT = (select(_quotas.c.monthly_generation_limit)
               .where(_quotas.c.client_id == bindparam("client_id")).with_for_update())


def _count_within(limit, count, now, *, at_once: tuple[int, ...] | None = None) -> dict[str, Any]:
    """ON CONFLICT DO UPDATE for both consumption statements: add count to the month's row only
    while it and what holds reserve stay within limit (the stored one) plus the row's
    month-grants.

    at_once, the one-statement form, given the usage thresholds: only a month where nothing is
    held (its row may still count a lapsed hold: the transaction path makes `held` exact
    first) and a count that crosses no threshold (the transaction path records the crossing and
    its event with the count)."""
    effective = limit + _usage.c.granted
    fits = or_(limit == UNLIMITED, _usage.c.generation_count + _usage.c.held + count <= effective)
    if at_once is not None:
        fits = and_(fits, _usage.c.held == 0, *(
            or_(limit == UNLIMITED, (_usage.c.generation_count + count) * 100 < threshold * effective,
                _usage.c.generation_count * 100 >= threshold * effective)
            for threshold in at_once))
    return {
        "index_elements": [_usage.c.client_id, _usage.c.month],
        "set_": {"generation_count": _usage.c.generation_count + count, "consumed": _usage.c.consumed + count,
                 "updated_at": now},
        "where": fits,
    }


@functools.cache
def _consume_statement(dialect: str):
    """The consumption's upsert inside a transaction that holds the quota row lock already."""
    count = bindparam("count", type_=_usage.c.generation_count.type)
    limit = bindparam("limit", type_=_quotas.c.monthly_generation_limit.type)
    now = bindparam("now", type_=_usage.c.updated_at.type)
    first_count = bindparam("first_count", type_=_usage.c.generation_count.type)
    return upsert_for(dialect)(_usage).values(
        client_id=bindparam("client_id"), month=bindparam("month"), generation_count=first_count,
        consumed=first_count, granted=0, created_at=now, updated_at=now,
    ).on_conflict_do_update(**_count_within(limit, count, now)).returning(
        _usage.c.generation_count, _usage.c.granted, _usage.c.held)


@functools.cache
def consume_at_once(thresholds: tuple[int, ...]):
    """The consumption as one PostgreSQL statement, run outside a transaction (one round trip
    instead of four): the quota row lock (a CTE, FOR UPDATE), then the same conditional upsert
    against the limit it locked.

    Under READ COMMITTED a row locked FOR UPDATE after a wait is its newest version, and ON
    CONFLICT DO UPDATE checks its WHERE against the newest version of the usage row, so the
    check sees every grant, reset and consumption committed before it. A new month's row is
    inserted only when the count fits the stored limit alone (or a row exists): nothing is
    written for a refusal, and a month without a row has no holds (a hold makes its row). A
    month with anything held, and a count that would cross a usage threshold, are left to the
    transaction. No row back means refused, or crossing, or no such client, or a row that
    appeared meanwhile: the caller then asks again in a transaction.
    """
    count = bindparam("count", type_=_usage.c.generation_count.type)
    now = bindparam("now", type_=_usage.c.updated_at.type)
    client_id = bindparam("client_id", type_=_usage.c.client_id.type)
    month = bindparam("month", type_=_usage.c.month.type)
    locked = (select(_quotas.c.monthly_generation_limit.label("stored_limit"))
              .where(_quotas.c.client_id == client_id).with_for_update().cte("locked"))
    stored_limit = select(locked.c.stored_limit).scalar_subquery()
    existing = _usage.alias("existing")
    month_row_exists = select(existing.c.client_id).where(existing.c.client_id == client_id,
                                                          existing.c.month == month).exists()
    first = locked.c.stored_limit
    # threshold x limit in 64 bits: 80 x a stored limit past 26,843,545 leaves a 32-bit integer.
    new_row = (select(client_id, month, count, count, literal(0), now, now).select_from(locked)
               .where(or_(month_row_exists, and_(
                   or_(first == UNLIMITED, count <= first),
                   *(or_(first == UNLIMITED, count * 100 < threshold * cast(first, BigInteger))
                     for threshold in thresholds)))))
    return (
        postgresql.insert(_usage)
        .from_select(["client_id", "month", "generation_count", "consumed", "granted", "created_at", "updated_at"],
                     new_row)
        .on_conflict_do_update(**_count_within(stored_limit, count, now, at_once=thresholds))
        .returning(_usage.c.generation_count, _usage.c.granted, stored_limit.label("stored_limit"))
        .add_cte(locked)
    )



class ConsumptionService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail,
                 thresholds: tuple[int, ...] = ()):
        """thresholds: the percentages of the limit usage.threshold_reached fires at (services/thresholds.py)."""
        self.session = session
        self.clock = clock
        self.audit = audit
        self.thresholds = thresholds

    def consume(self, client_id: str, count: int, idempotency: IdempotencyClaim | None = None) -> MonthUsage:
        """Add count generations to this month, all or nothing, never past the effective limit.

        On PostgreSQL a consumption without an Idempotency-Key is consume_at_once; a refusal, a
        crossing of a usage threshold, an unknown client, a keyed request and SQLite take the
        transaction below, which also words the refusal, records the crossing with its event and
        stores the keyed answer with the change.
        """
        now = self.clock()
        month = month_of(now)
        if idempotency is None:
            usage = self._consume_at_once(client_id, month, count, now)
            if usage is not None:
                metrics.generations_consumed(count)
                return usage
        try:
            with write_transaction(self.session):
                connection = self.session.connection()
                stored_limit = connection.execute(_LOCK_LIMIT, {"client_id": client_id}).scalar()
                if stored_limit is None:
                    raise NotFound.client(client_id)
                row = usage_row(self.session, client_id, month)
                if row is not None:
                    exact_held(self.session, row, now)
                    self.session.flush()
                # A row still to be inserted has no month-grants (a month grant makes its month's
                # row), so its limit is the stored one: a count above it inserts 0, which counts
                # as refused, and the refusal's rollback takes the row away again.
                first_count = count if stored_limit == UNLIMITED or count <= stored_limit else 0
                row = connection.execute(_consume_statement(connection.dialect.name), {
                    "client_id": client_id, "month": month, "first_count": first_count, "count": count,
                    "limit": stored_limit, "now": now,
                }).first()
                if not (row and row.generation_count):
                    raise self._refusal(client_id, month, count, stored_limit, now)
                usage = MonthUsage.of(stored_limit, row.generation_count, row.granted, row.held, now)
                rising = crossed(row.generation_count - count, row.generation_count, usage.limit, self.thresholds)
                if rising:
                    keep_in_step(self.session, client_id, month, row.generation_count, usage.limit, now,
                                 self.thresholds, only_rising=rising)
                if idempotency:
                    idempotency.complete(self.session, usage)
        except QuotaExceeded:
            metrics.quota_refused()
            raise
        metrics.generations_consumed(count)
        return usage

    def _consume_at_once(self, client_id: str, month: str, count: int, now: datetime) -> MonthUsage | None:
        """The consumption in one statement where the database allows it; None if not done."""
        with standalone_statements(self.session) as connection:
            if connection is None:
                return None
            row = connection.execute(consume_at_once(self.thresholds), {
                "client_id": client_id, "month": month, "count": count, "now": now}).first()
        if row is None:
            return None
        return MonthUsage.of(row.stored_limit, row.generation_count, row.granted, 0, now)

    def _refusal(self, client_id: str, month: str, count: int, stored_limit: int, now: datetime) -> QuotaExceeded:
        row = usage_row(self.session, client_id, month)
        refused = MonthUsage.of(stored_limit, row.generation_count if row else 0, row.granted if row else 0,
                                row.held if row else 0, now)
        held = f" and {refused.held} held" if refused.held else ""
        return QuotaExceeded(
            f"Not enough credits: {count} requested, {refused.remaining} left of the monthly generation "
            f"limit of {refused.limit} ({refused.generation_count} used{held} in {month}). The count resets at "
            f"{iso_utc(refused.reset_date)}.",
            month=month, generationCount=refused.generation_count, limit=refused.limit, remaining=refused.remaining,
            generationsHeld=refused.held,
        )

    def quota_status(self, client_id: str) -> QuotaStatus:
        """One statement, seeing the latest commit."""
        now = self.clock()
        with read_connection(self.session) as connection:
            row = quota_with_month(connection, client_id, now)
        usage = MonthUsage.of(row.monthly_generation_limit, row.generation_count, row.granted, row.held, now)
        # Held credits count as used in every figure: they are not there to be consumed.
        used, limit, unlimited = usage.generation_count + usage.held, usage.limit, usage.is_unlimited
        storage = storage_status(row.storage_used_bytes, row.storage_quota_mb)
        if unlimited:
            percent = 0.0
        elif limit == 0:
            percent = 100.0
        else:
            percent = round(used * 100 / limit, 2)
        return QuotaStatus(
            plan=row.plan, month=usage.month, generations_used=usage.generation_count,
            generations_held=usage.held, generations_limit=limit,
            generations_remaining=usage.remaining, base_limit=usage.base_limit,
            granted_this_month=usage.granted_this_month, usage_percent=percent, is_unlimited=unlimited,
            is_at_limit=not unlimited and used >= limit,
            is_near_limit=not unlimited and used * 100 >= limit * NEAR_LIMIT_PERCENT,
            reset_date=usage.reset_date,
            storage_used_bytes=storage.used_bytes, storage_quota_mb=storage.quota_mb,
            storage_remaining_bytes=storage.remaining_bytes, is_storage_at_limit=storage.is_at_limit,
        )

    def reset_usage(self, actor: str, client_id: str, reason: str | None = None,
                    idempotency: IdempotencyClaim | None = None) -> ResetResult:
        """Set this UTC month's generation count back to 0."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            row = usage_row(self.session, client_id, month)
            previous = row.generation_count if row else 0
            if row is not None:
                # The month's count starts over, and with it where the count comes from.
                row.generation_count = row.consumed = row.captured = row.refunded = 0
                row.updated_at = now
            self.audit.append(client_id, actor, "usage_reset",
                              {"previousUsage": previous, "month": month, "reason": reason},
                              str(previous), "0", now)
            limit = effective_limit(quota.monthly_generation_limit, row.granted if row else 0)
            held = exact_held(self.session, row, now) if row is not None else 0
            keep_in_step(self.session, client_id, month, 0, limit, now, self.thresholds)
            emit(self.session, "usage.reset", {"clientId": client_id, "month": month, "previousUsage": previous}, now)
            result = ResetResult(previous, limit, remaining(limit, held))
            if idempotency:
                idempotency.complete(self.session, result)
        log_admin_action(actor, "usage_reset", client_id)
        return result

    def usage_history(self, client_id: str, from_month: str | None = None,
                      to_month: str | None = None) -> UsageHistory:
        """Each month from..to (default: the last 12 up to this one) that had usage or grants, oldest first."""
        to_month = to_month or month_of(self.clock())
        from_month = from_month or month_named(month_number(to_month) - DEFAULT_HISTORY_MONTHS + 1)
        span = month_number(to_month) - month_number(from_month) + 1
        if span < 1:
            raise InvalidRequest(
                f"from ({from_month}) is after to ({to_month}).",
                fields={"from": [f"Must not be after {to_month}."]},
            )
        if span > MAX_HISTORY_MONTHS:
            raise InvalidRequest(
                f"The range {from_month}..{to_month} spans {span} months; at most {MAX_HISTORY_MONTHS} are allowed.",
                fields={"from": [f"Must be at most {MAX_HISTORY_MONTHS} months before to."]},
            )
        find_quota(self.session, client_id)
        rows = self.session.execute(
            select(UsageRecord.month, UsageRecord.generation_count, UsageRecord.granted, UsageRecord.consumed,
                   UsageRecord.captured, UsageRecord.refunded)
            .where(UsageRecord.client_id == client_id, UsageRecord.month.between(from_month, to_month))
            .order_by(UsageRecord.month)
        ).all()
        return UsageHistory(from_month, to_month, [HistoryMonth(*row) for row in rows])
