"""CreditsService: the business rules for clients, quotas, credits and usage.

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

from ..errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from ..models import Client, CreditAuditLog, QuotaLimit, UsageRecord
from ..months import iso_utc, month_of, next_month_start
from ..plans import DEFAULT_PLAN, MAX_LIMIT, PLAN_LIMITS, UNLIMITED, remaining
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
class UsageStatus:
    month: str
    generation_count: int
    limit: int
    remaining: int | None
    is_unlimited: bool
    reset_date: datetime


@dataclass(frozen=True)
class QuotaOverview:
    quota: QuotaLimit
    usage: UsageStatus
    audit_log: list[CreditAuditLog]


@dataclass(frozen=True)
class GrantResult:
    current_usage: int
    previous_limit: int
    new_limit: int
    remaining: int | None
    action: str = "grant"


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
    usage_percent: float
    is_unlimited: bool
    is_at_limit: bool
    is_near_limit: bool
    reset_date: datetime


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class CreditsService:
    def __init__(self, session: Session, clock: Callable[[], datetime]):
        self.session = session
        self.clock = clock

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

    def _usage_count(self, client_id: str, month: str) -> int:
        record = self._usage_record(client_id, month)
        return record.generation_count if record else 0

    def _usage_status(self, quota: QuotaLimit, used: int, now: datetime) -> UsageStatus:
        limit = quota.monthly_generation_limit
        return UsageStatus(
            month=month_of(now),
            generation_count=used,
            limit=limit,
            remaining=remaining(limit, used),
            is_unlimited=limit == UNLIMITED,
            reset_date=next_month_start(now),
        )

    def _audit(self, client_id: str, actor: str, action: str, details: dict[str, Any],
               previous_value: str | None, new_value: str | None, now: datetime) -> None:
        self.session.add(
            CreditAuditLog(
                client_id=client_id, admin_id=actor, action=action, details=details,
                previous_value=previous_value, new_value=new_value, created_at=now,
            )
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
        used = self._usage_count(client_id, month_of(now))
        recent = list(self.session.scalars(newest_first(AuditFilter(client_id=client_id)).limit(RECENT_AUDIT_ENTRIES)))
        return QuotaOverview(quota, self._usage_status(quota, used, now), recent)

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
            self._audit(client_id, actor, action, {"changes": changes, "reason": reason},
                        _json_text(before), _json_text(after), now)
        self._logged(actor, action, client_id)
        return quota

    # ---- credits -------------------------------------------------------------

    def grant_credits(self, actor: str, client_id: str, amount: int, reason: str | None = None,
                      idempotency: IdempotencyClaim | None = None) -> GrantResult:
        """Raise this client's monthly limit by amount, under the quota row lock."""
        now = self.clock()
        with write_transaction(self.session):
            quota = self._quota(client_id, lock=True)
            previous = quota.monthly_generation_limit
            if previous == UNLIMITED:
                raise Conflict(
                    f"Client {client_id!r} is unlimited (monthlyGenerationLimit -1); "
                    "granting credits would not add anything. Set a limit first if that is what you want."
                )
            new_limit = previous + amount
            if new_limit > MAX_LIMIT:
                raise InvalidRequest(
                    f"Granting {amount} would raise the limit to {new_limit}, above the maximum {MAX_LIMIT}.",
                    fields={"amount": [f"Must be at most {MAX_LIMIT - previous} for this client."]},
                )
            quota.monthly_generation_limit = new_limit
            quota.updated_at = now
            used = self._usage_count(client_id, month_of(now))
            self._audit(client_id, actor, "credit_grant", {"amount": amount, "reason": reason},
                        str(previous), str(new_limit), now)
            result = GrantResult(used, previous, new_limit, remaining(new_limit, used))
            if idempotency:
                idempotency.complete(self.session, result)
        self._logged(actor, "credit_grant", client_id)
        return result

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
            self._audit(client_id, actor, "usage_reset",
                        {"previousUsage": previous, "month": month, "reason": reason},
                        str(previous), "0", now)
            limit = quota.monthly_generation_limit
            result = ResetResult(previous, limit, remaining(limit, 0))
            if idempotency:
                idempotency.complete(self.session, result)
        self._logged(actor, "usage_reset", client_id)
        return result

    # ---- the platform's side -------------------------------------------------

    def consume(self, client_id: str, count: int,
                idempotency: IdempotencyClaim | None = None) -> UsageStatus:
        """Add count generations to this month, all or nothing, never past the limit.

        The check and the increment are one upsert statement, run under the quota row lock.
        """
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = self._quota(client_id, lock=True)
            limit = quota.monthly_generation_limit
            used = self._consume(client_id, month, count, limit, now)
            if used is None:
                refused = self._usage_status(quota, self._usage_count(client_id, month), now)
                raise QuotaExceeded(
                    f"Not enough credits: {count} requested, {refused.remaining} left of the "
                    f"monthly generation limit of {limit} ({refused.generation_count} used in {month}). "
                    f"The count resets at {iso_utc(refused.reset_date)}.",
                    month=month, generationCount=refused.generation_count, limit=limit,
                    remaining=refused.remaining,
                )
            status = self._usage_status(quota, used, now)
            if idempotency:
                idempotency.complete(self.session, status)
        return status

    def _consume(self, client_id: str, month: str, count: int, limit: int, now: datetime) -> int | None:
        """Insert or increment this month's record; None when the limit refuses it."""
        if limit != UNLIMITED and count > limit:
            return None
        table = UsageRecord.__table__
        statement = upsert(self.session)(table).values(
            client_id=client_id, month=month, generation_count=count, created_at=now, updated_at=now
        )
        fits = (table.c.generation_count + count <= limit) if limit != UNLIMITED else None
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.client_id, table.c.month],
            set_={"generation_count": table.c.generation_count + count, "updated_at": now},
            where=fits,
        ).returning(table.c.generation_count)
        return self.session.scalar(statement)

    def quota_status(self, client_id: str) -> QuotaStatus:
        now = self.clock()
        quota = self._quota(client_id)
        usage = self._usage_status(quota, self._usage_count(client_id, month_of(now)), now)
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
            usage_percent=percent,
            is_unlimited=unlimited,
            is_at_limit=not unlimited and used >= limit,
            is_near_limit=not unlimited and used * 100 >= limit * NEAR_LIMIT_PERCENT,
            reset_date=usage.reset_date,
        )
