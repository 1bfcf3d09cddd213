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

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import metrics
from ..errors import Conflict, NotFound, QuotaExceeded
from ..models import Client, CreditAuditLog, QuotaLimit, UsageRecord
from ..months import iso_utc, month_of, next_month_start
from ..plans import DEFAULT_PLAN, PLAN_LIMITS, UNLIMITED, effective_limit, remaining
from .audit import AuditTrail
from .audit_log import AuditFilter, newest_first
from .idempotency import IdempotencyClaim
from .transactions import upsert, write_transaction

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
class QuotaOverview:
    quota: QuotaLimit
    usage: UsageStatus
    audit_log: list[CreditAuditLog]


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
            raise NotFound(f"There is no client with id {client_id!r}.")
        return quota

    def _usage_record(self, client_id: str, month: str) -> UsageRecord | None:
        return self.session.scalar(
            select(UsageRecord).where(UsageRecord.client_id == client_id, UsageRecord.month == month)
        )

    def _month_usage(self, client_id: str, month: str) -> MonthUsage:
        record = self._usage_record(client_id, month)
        return MonthUsage(record.generation_count, record.granted) if record else MonthUsage()

    def _usage_status(self, quota: QuotaLimit, usage: MonthUsage, now: datetime) -> UsageStatus:
        base = quota.monthly_generation_limit
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
            raise NotFound(f"There is no client with id {client_id!r}.")
        return ClientView(*row)

    def delete_client(self, actor: str, client_id: str) -> None:
        """Deletes the client with its quota, usage and audit log (the FKs cascade)."""
        with write_transaction(self.session):
            # The quota row lock first, as every writer takes it: no deadlock with a grant.
            self._quota(client_id, lock=True)
            self.session.execute(delete(Client).where(Client.id == client_id))
        self._logged(actor, "client_delete", client_id)

    # ---- quota ---------------------------------------------------------------

    def quota_overview(self, client_id: str) -> QuotaOverview:
        now = self.clock()
        quota = self._quota(client_id)
        usage = self._month_usage(client_id, month_of(now))
        recent = list(self.session.scalars(newest_first(AuditFilter(client_id=client_id)).limit(RECENT_AUDIT_ENTRIES)))
        return QuotaOverview(quota, self._usage_status(quota, usage, now), recent)

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
        """
        now = self.clock()
        month = month_of(now)
        try:
            with write_transaction(self.session):
                quota = self._quota(client_id, lock=True)
                usage = self._consume(client_id, month, count, quota.monthly_generation_limit, now)
                if usage is None:
                    refused = self._usage_status(quota, self._month_usage(client_id, month), now)
                    raise QuotaExceeded(
                        f"Not enough credits: {count} requested, {refused.remaining} left of the "
                        f"monthly generation limit of {refused.limit} ({refused.generation_count} used in "
                        f"{month}). The count resets at {iso_utc(refused.reset_date)}.",
                        month=month, generationCount=refused.generation_count, limit=refused.limit,
                        remaining=refused.remaining,
                    )
                status = self._usage_status(quota, usage, now)
                if idempotency:
                    idempotency.complete(self.session, status)
        except QuotaExceeded:
            metrics.quota_refused()
            raise
        metrics.generations_consumed(count)
        return status

    def _consume(self, client_id: str, month: str, count: int, stored_limit: int,
                 now: datetime) -> MonthUsage | None:
        """Insert or increment this month's record; None when the effective limit refuses it.

        An existing row carries this month's month-grants, so the WHERE checks against the
        stored limit plus them. A row still to be inserted has none (a month grant creates its
        month's row), so its limit is the stored one: a count above it inserts 0, which
        counts as refused, and the refusal's rollback takes the row away again.
        """
        unlimited = stored_limit == UNLIMITED
        first_count = count if unlimited or count <= stored_limit else 0
        table = UsageRecord.__table__
        statement = upsert(self.session)(table).values(
            client_id=client_id, month=month, generation_count=first_count, granted=0,
            created_at=now, updated_at=now,
        )
        fits = None if unlimited else table.c.generation_count + count <= stored_limit + table.c.granted
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.client_id, table.c.month],
            set_={"generation_count": table.c.generation_count + count, "updated_at": now},
            where=fits,
        ).returning(table.c.generation_count, table.c.granted)
        row = self.session.execute(statement).first()
        return MonthUsage(*row) if row and row.generation_count else None

    def quota_status(self, client_id: str) -> QuotaStatus:
        now = self.clock()
        quota = self._quota(client_id)
        usage = self._usage_status(quota, self._month_usage(client_id, month_of(now)), now)
        used, limit, unlimited = usage.generation_count, usage.limit, usage.is_unlimited
        if unlimited:
            percent = 0.0
        elif limit == 0:
            percent = 100.0
        else:
            percent = round(used * 100 / limit, 2)
        return QuotaStatus(
            plan=quota.plan,
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
