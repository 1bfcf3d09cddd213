"""CreditsService: the business rules for clients, quotas, usage resets and consumption.

Grants and their ledger are GrantsService's (services/grants.py), which shares this
service's steps: the quota row lock, this month's usage and the audit entry.

Audit entries are appended through AuditTrail (services/audit.py), in the change's transaction.

Every public method that changes something owns its transaction: the change and its
audit entry (and, for an idempotent request, the stored response) commit together or
not at all. Writers take the client's quota row lock first, so every change to one
client happens in one serial order; on SQLite the write transaction is IMMEDIATE, which
serialises writers for the same effect.
"""

import functools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, bindparam, delete, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from .. import metrics
from ..errors import Conflict, NotFound, QuotaExceeded
from ..models import Client, QuotaLimit, UsageRecord
from ..months import iso_utc, month_of, next_month_start
from ..plans import DEFAULT_PLAN, PLAN_LIMITS, UNLIMITED, effective_limit, remaining
from .audit import AuditTrail
from .audit_log import AuditFilter, newest_first
from .idempotency import IdempotencyClaim
from .transactions import autocommit_connection, read_connection, upsert_for, write_transaction

log = logging.getLogger("credits_service.admin")

RECENT_AUDIT_ENTRIES = 10
NEAR_LIMIT_PERCENT = 80


@dataclass(frozen=True)
class Page:
    items: list[Any]
    limit: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class ClientView:
    id: str
    name: str
    plan: str
    created_at: datetime


@dataclass(frozen=True)
class MonthUsage:
    """A client's usage row of one month: generations counted and live month-grants."""

    generation_count: int = 0
    granted: int = 0


@dataclass(frozen=True)
class UsageStatus:
    month: str
    generation_count: int
    limit: int  # the effective limit: base_limit + granted_this_month
    base_limit: int
    granted_this_month: int
    remaining: int | None
    is_unlimited: bool
    reset_date: datetime


@dataclass(frozen=True)
class QuotaView:
    client_id: str
    plan: str
    monthly_generation_limit: int
    storage_quota_mb: int
    updated_at: datetime


@dataclass(frozen=True)
class QuotaOverview:
    quota: QuotaView
    usage: UsageStatus
    audit_log: list[Any]  # the entries' rows, by column name


@dataclass(frozen=True)
class ResetResult:
    previous_usage: int
    limit: int
    remaining: int | None
    current_usage: int = 0
    action: str = "reset"


@dataclass(frozen=True)
class QuotaStatus:
    plan: str
    month: str
    generations_used: int
    generations_limit: int
    generations_remaining: int | None
    base_limit: int
    granted_this_month: int
    usage_percent: float
    is_unlimited: bool
    is_at_limit: bool
    is_near_limit: bool
    reset_date: datetime


# The reads of the hot routes, built once: a Core statement with bound parameters, run on the
# connection, skips the ORM's entity loading and is compiled once per process.
_quotas, _usage = QuotaLimit.__table__, UsageRecord.__table__
_QUOTA_WITH_MONTH = (
    select(_quotas.c.client_id, _quotas.c.plan, _quotas.c.monthly_generation_limit, _quotas.c.storage_quota_mb,
           _quotas.c.updated_at, func.coalesce(_usage.c.generation_count, 0).label("generation_count"),
           func.coalesce(_usage.c.granted, 0).label("granted"))
    .select_from(_quotas.outerjoin(_usage, and_(_usage.c.client_id == _quotas.c.client_id,
                                                _usage.c.month == bindparam("month"))))
    .where(_quotas.c.client_id == bindparam("client_id"))
)
_LOCK_LIMIT = (select(_quotas.c.monthly_generation_limit)
               .where(_quotas.c.client_id == bindparam("client_id")).with_for_update())
_RECENT_ENTRIES = newest_first(AuditFilter(client_id=bindparam("client_id"))).limit(RECENT_AUDIT_ENTRIES)


def _count_within(limit, count, now) -> dict[str, Any]:
    """ON CONFLICT DO UPDATE for both consumption statements: add count to the month's row
    only while it stays within limit (the stored one) plus the row's month-grants."""
    return {
        "index_elements": [_usage.c.client_id, _usage.c.month],
        "set_": {"generation_count": _usage.c.generation_count + count, "updated_at": now},
        "where": or_(limit == UNLIMITED, _usage.c.generation_count + count <= limit + _usage.c.granted),
    }


@functools.cache
def _consume_statement(dialect: str):
    """The consumption's upsert: the check against the effective limit is its WHERE."""
    count = bindparam("count", type_=_usage.c.generation_count.type)
    limit = bindparam("limit", type_=_quotas.c.monthly_generation_limit.type)
    now = bindparam("now", type_=_usage.c.updated_at.type)
    return upsert_for(dialect)(_usage).values(
        client_id=bindparam("client_id"), month=bindparam("month"),
        generation_count=bindparam("first_count", type_=_usage.c.generation_count.type), granted=0,
        created_at=now, updated_at=now,
    ).on_conflict_do_update(**_count_within(limit, count, now)).returning(_usage.c.generation_count, _usage.c.granted)


def _consume_at_once_statement():
    """The consumption as one PostgreSQL statement, run outside a transaction: the quota row lock
    (a CTE, FOR UPDATE), then the same conditional upsert against the limit it locked.

    Under READ COMMITTED a row locked FOR UPDATE after a wait is its newest version, and ON
    CONFLICT DO UPDATE checks its WHERE against the newest version of the usage row, so the
    check sees every grant, reset and consumption committed before it, as the two-statement
    form does. A new month's row is inserted only when the count fits the stored limit alone
    (or a row exists): nothing is written for a refusal. No row back means refused, or no such
    client, or a row that appeared meanwhile: the caller then asks again in a transaction.
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
    new_row = (select(client_id, month, count, literal(0), now, now).select_from(locked)
               .where(or_(locked.c.stored_limit == UNLIMITED, count <= locked.c.stored_limit, month_row_exists)))
    return (
        postgresql.insert(_usage)
        .from_select(["client_id", "month", "generation_count", "granted", "created_at", "updated_at"], new_row)
        .on_conflict_do_update(**_count_within(stored_limit, count, now))
        .returning(_usage.c.generation_count, _usage.c.granted, stored_limit.label("monthly_generation_limit"))
        .add_cte(locked)
    )


_CONSUME_AT_ONCE = _consume_at_once_statement()


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class CreditsService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail):
        self.session = session
        self.clock = clock
        self.audit = audit

    # ---- transactions and shared steps ---------------------------------------

    def _quota(self, client_id: str, *, lock: bool = False) -> QuotaLimit:
        query = select(QuotaLimit).where(QuotaLimit.client_id == client_id)
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        quota = self.session.scalar(query)
        if quota is None:
            raise NotFound.client(client_id)
        return quota

    def _usage_record(self, client_id: str, month: str) -> UsageRecord | None:
        return self.session.scalar(
            select(UsageRecord).where(UsageRecord.client_id == client_id, UsageRecord.month == month)
        )

    def _month_usage(self, client_id: str, month: str) -> MonthUsage:
        record = self._usage_record(client_id, month)
        return MonthUsage(record.generation_count, record.granted) if record else MonthUsage()

    @staticmethod
    def _usage_status(base: int, usage: MonthUsage, now: datetime) -> UsageStatus:
        limit = effective_limit(base, usage.granted)
        return UsageStatus(
            month=month_of(now),
            generation_count=usage.generation_count,
            limit=limit,
            base_limit=base,
            granted_this_month=usage.granted,
            remaining=remaining(limit, usage.generation_count),
            is_unlimited=limit == UNLIMITED,
            reset_date=next_month_start(now),
        )

    @classmethod
    def _month_status(cls, row: Row, now: datetime) -> UsageStatus:
        """The usage status of a row with the stored limit and the month's count and grants
        (_QUOTA_WITH_MONTH, _CONSUME_AT_ONCE)."""
        return cls._usage_status(row.monthly_generation_limit, MonthUsage(row.generation_count, row.granted), now)

    def _page(self, query: Select, limit: int, offset: int, item: Callable[[Row], Any]) -> Page:
        """One page, asking for one row more to know whether another page follows."""
        rows = self.session.execute(query.limit(limit + 1).offset(offset)).all()
        more = len(rows) > limit
        return Page([item(row) for row in rows[:limit]], limit, offset, offset + limit if more else None)

    @staticmethod
    def _client_views() -> Select:
        return select(Client.id, Client.name, QuotaLimit.plan, Client.created_at).join(
            QuotaLimit, QuotaLimit.client_id == Client.id
        )

    @staticmethod
    def _logged(actor: str, action: str, client_id: str) -> None:
        log.info(
            "%s did %s on client %s", actor, action, client_id,
            extra={"event": "admin_action", "admin": actor, "action": action, "clientId": client_id},
        )

    # ---- clients -------------------------------------------------------------

    def create_client(self, actor: str, name: str, client_id: str | None = None,
                      plan: str = DEFAULT_PLAN) -> ClientView:
        client_id = client_id or uuid.uuid4().hex
        limits = PLAN_LIMITS[plan]
        now = self.clock()
        duplicate = Conflict(f"A client with id {client_id!r} already exists.")
        try:
            with write_transaction(self.session):
                if self.session.get(Client, client_id) is not None:
                    raise duplicate
                self.session.add(Client(id=client_id, name=name, created_at=now, updated_at=now))
                self.session.flush()
                self.session.add(
                    QuotaLimit(
                        client_id=client_id, plan=plan,
                        monthly_generation_limit=limits.monthly_generation_limit,
                        storage_quota_mb=limits.storage_quota_mb, created_at=now, updated_at=now,
                    )
                )
                self.audit.start(client_id, now)
        except IntegrityError:  # the same id created concurrently
            raise duplicate from None
        self._logged(actor, "client_create", client_id)
        return ClientView(client_id, name, plan, now)

    def list_clients(self, limit: int, offset: int) -> Page:
        query = self._client_views().order_by(Client.created_at, Client.id)
        return self._page(query, limit, offset, lambda row: ClientView(*row))

    def get_client(self, client_id: str) -> ClientView:
        row = self.session.execute(self._client_views().where(Client.id == client_id)).first()
        if row is None:
            raise NotFound.client(client_id)
        return ClientView(*row)

    def delete_client(self, actor: str, client_id: str) -> None:
        """Deletes the client with its quota, usage and audit log (the FKs cascade)."""
        with write_transaction(self.session):
            # The quota row lock first, as every writer takes it: no deadlock with a grant.
            self._quota(client_id, lock=True)
            self.session.execute(delete(Client).where(Client.id == client_id))
        self._logged(actor, "client_delete", client_id)

    # ---- quota ---------------------------------------------------------------

    @staticmethod
    def _lock_limit(connection: Connection, client_id: str) -> int:
        """The quota row lock every writer takes first; returns the stored limit."""
        stored_limit = connection.execute(_LOCK_LIMIT, {"client_id": client_id}).scalar()
        if stored_limit is None:
            raise NotFound.client(client_id)
        return stored_limit

    @staticmethod
    def _quota_with_month(connection: Connection, client_id: str, month: str) -> Row:
        """The quota joined with the month's usage row, in one statement (a read: no lock)."""
        row = connection.execute(_QUOTA_WITH_MONTH, {"client_id": client_id, "month": month}).first()
        if row is None:
            raise NotFound.client(client_id)
        return row

    def quota_overview(self, client_id: str) -> QuotaOverview:
        """Two statements outside a transaction (read_connection): each sees the latest commit."""
        now = self.clock()
        with read_connection(self.session) as connection:
            row = self._quota_with_month(connection, client_id, month_of(now))
            recent = [entry._mapping for entry in connection.execute(_RECENT_ENTRIES, {"client_id": client_id})]
        quota = QuotaView(row.client_id, row.plan, row.monthly_generation_limit, row.storage_quota_mb, row.updated_at)
        return QuotaOverview(quota, self._month_status(row, now), recent)

    def update_quota(self, actor: str, client_id: str, *, plan: str | None = None,
                     monthly_generation_limit: int | None = None,
                     storage_quota_mb: int | None = None, reason: str | None = None) -> QuotaLimit:
        """Change the plan and/or limits; a new plan brings its defaults for limits not given."""
        now = self.clock()
        with write_transaction(self.session):
            quota = self._quota(client_id, lock=True)
            before = quota.snapshot()
            if plan is not None:
                defaults = PLAN_LIMITS[plan]
                quota.plan = plan
                if monthly_generation_limit is None:
                    monthly_generation_limit = defaults.monthly_generation_limit
                if storage_quota_mb is None:
                    storage_quota_mb = defaults.storage_quota_mb
            if monthly_generation_limit is not None:
                quota.monthly_generation_limit = monthly_generation_limit
            if storage_quota_mb is not None:
                quota.storage_quota_mb = storage_quota_mb
            quota.updated_at = now
            after = quota.snapshot()
            action = "plan_change" if plan is not None else "limit_change"
            changes = {
                field: {"from": before[field], "to": after[field]}
                for field in after
                if before[field] != after[field]
            }
            self.audit.append(client_id, actor, action, {"changes": changes, "reason": reason},
                              _json_text(before), _json_text(after), now)
        self._logged(actor, action, client_id)
        return quota

    # ---- credits -------------------------------------------------------------

    def reset_usage(self, actor: str, client_id: str, reason: str | None = None,
                    idempotency: IdempotencyClaim | None = None) -> ResetResult:
        """Set this UTC month's generation count back to 0."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = self._quota(client_id, lock=True)
            record = self._usage_record(client_id, month)
            previous = record.generation_count if record else 0
            if record is not None:
                record.generation_count = 0
                record.updated_at = now
            self.audit.append(client_id, actor, "usage_reset",
                              {"previousUsage": previous, "month": month, "reason": reason},
                              str(previous), "0", now)
            limit = effective_limit(quota.monthly_generation_limit, record.granted if record else 0)
            result = ResetResult(previous, limit, remaining(limit, 0))
            if idempotency:
                idempotency.complete(self.session, result)
        self._logged(actor, "usage_reset", client_id)
        return result

    # ---- the platform's side -------------------------------------------------

    def consume(self, client_id: str, count: int,
                idempotency: IdempotencyClaim | None = None) -> UsageStatus:
        """Add count generations to this month, all or nothing, never past the effective limit.

        The check and the increment are one upsert statement, run under the quota row lock.
        On PostgreSQL a consumption without an Idempotency-Key is that lock and upsert as one
        statement outside a transaction (_CONSUME_AT_ONCE); a refusal, an unknown client, a
        keyed request and SQLite take the transaction below, which also words the refusal.
        """
        now = self.clock()
        month = month_of(now)
        if idempotency is None:
            status = self._consume_at_once(client_id, month, count, now)
            if status is not None:
                metrics.generations_consumed(count)
                return status
        try:
            with write_transaction(self.session):
                connection = self.session.connection()
                stored_limit = self._lock_limit(connection, client_id)
                usage = self._consume(connection, client_id, month, count, stored_limit, now)
                if usage is None:
                    refused = self._usage_status(stored_limit, self._month_usage(client_id, month), now)
                    raise QuotaExceeded(
                        f"Not enough credits: {count} requested, {refused.remaining} left of the "
                        f"monthly generation limit of {refused.limit} ({refused.generation_count} used in "
                        f"{month}). The count resets at {iso_utc(refused.reset_date)}.",
                        month=month, generationCount=refused.generation_count, limit=refused.limit,
                        remaining=refused.remaining,
                    )
                status = self._usage_status(stored_limit, usage, now)
                if idempotency:
                    idempotency.complete(self.session, status)
        except QuotaExceeded:
            metrics.quota_refused()
            raise
        metrics.generations_consumed(count)
        return status

    def _consume_at_once(self, client_id: str, month: str, count: int, now: datetime) -> UsageStatus | None:
        """The consumption in one statement where the database allows it; None if not done."""
        with autocommit_connection(self.session) as connection:
            if connection is None:
                return None
            row = connection.execute(_CONSUME_AT_ONCE, {"client_id": client_id, "month": month, "count": count,
                                                        "now": now}).first()
        if row is None:
            return None
        return self._month_status(row, now)

    @staticmethod
    def _consume(connection, client_id: str, month: str, count: int, stored_limit: int,
                 now: datetime) -> MonthUsage | None:
        """Insert or increment this month's record; None when the effective limit refuses it.

        An existing row carries this month's month-grants, so the WHERE checks against the
        stored limit plus them. A row still to be inserted has none (a month grant creates its
        month's row), so its limit is the stored one: a count above it inserts 0, which
        counts as refused, and the refusal's rollback takes the row away again.
        """
        first_count = count if stored_limit == UNLIMITED or count <= stored_limit else 0
        row = connection.execute(_consume_statement(connection.dialect.name), {
            "client_id": client_id, "month": month, "first_count": first_count, "count": count,
            "limit": stored_limit, "now": now,
        }).first()
        return MonthUsage(*row) if row and row.generation_count else None

    def quota_status(self, client_id: str) -> QuotaStatus:
        """One statement outside a transaction (read_connection)."""
        now = self.clock()
        with read_connection(self.session) as connection:
            row = self._quota_with_month(connection, client_id, month_of(now))
        usage = self._month_status(row, now)
        used, limit, unlimited = usage.generation_count, usage.limit, usage.is_unlimited
        if unlimited:
            percent = 0.0
        elif limit == 0:
            percent = 100.0
        else:
            percent = round(used * 100 / limit, 2)
        return QuotaStatus(
            plan=row.plan,
            month=usage.month,
            generations_used=used,
            generations_limit=limit,
            generations_remaining=usage.remaining,
            base_limit=usage.base_limit,
            granted_this_month=usage.granted_this_month,
            usage_percent=percent,
            is_unlimited=unlimited,
            is_at_limit=not unlimited and used >= limit,
            is_near_limit=not unlimited and used * 100 >= limit * NEAR_LIMIT_PERCENT,
            reset_date=usage.reset_date,
        )
