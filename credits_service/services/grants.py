"""Grants: the ledger of credits admins add, and voids that take them back.

A permanent grant raises the stored monthly limit; a month grant adds to the `granted` column
of this UTC month's usage row, which consumption's one statement checks, so a month grant is
gone when the month is. Each grant or void is, in one transaction: the quota row lock, the
reads under it, the change, the ledger row and the audit entry.
"""

import functools
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..audit.trail import AuditTrail
from ..errors import Conflict, InvalidRequest, NotFound
from ..logs import log_admin_action
from ..models import CreditGrant, UsageRecord
from ..months import iso_utc, month_of, month_start, next_month_start
from ..plans import MAX_LIMIT, UNLIMITED, effective_limit, remaining
from ..transactions import upsert_for, write_transaction
from .events import emit
from .idempotency import IdempotencyClaim
from .month_usage import exact_held, usage_row
from .paging import page_of
from .quotas import find_quota
from .results import GrantResult, LedgerGrant, Page, VoidResult
from .thresholds import keep_in_step

_usage = UsageRecord.__table__


@functools.cache
def _add_to_month_statement(dialect: str):
    """amount added to the month's month-grants, its usage row created when missing, so that
    consumption's upsert always finds this month's grants in it."""
    amount = bindparam("amount", type_=_usage.c.granted.type)
    now = bindparam("now", type_=_usage.c.updated_at.type)
    return upsert_for(dialect)(_usage).values(
        client_id=bindparam("client_id"), month=bindparam("month"), generation_count=0, granted=amount,
        created_at=now, updated_at=now,
    ).on_conflict_do_update(
        index_elements=[_usage.c.client_id, _usage.c.month],
        set_={"granted": _usage.c.granted + amount, "updated_at": now},
    )


def _expiry(month: str | None) -> datetime | None:
    """A month grant ends where its month does; a permanent one never."""
    return next_month_start(month_start(month)) if month else None


def _status(grant: CreditGrant, this_month: str) -> str:
    if grant.voided_at is not None:
        return "voided"
    if grant.month is not None and grant.month < this_month:
        return "expired"
    return "active"


class GrantsService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail,
                 thresholds: tuple[int, ...] = ()):
        self.session = session
        self.clock = clock
        self.audit = audit
        self.thresholds = thresholds

    def grant_credits(self, actor: str, client_id: str, amount: int, scope: str = "permanent",
                      reason: str | None = None, idempotency: IdempotencyClaim | None = None) -> GrantResult:
        """Record a grant: permanent raises the stored limit, month adds to this UTC month only."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            if quota.monthly_generation_limit == UNLIMITED:
                raise Conflict(
                    f"Client {client_id!r} is unlimited (monthlyGenerationLimit -1); "
                    "granting credits would not add anything. Set a limit first if that is what you want."
                )
            row = usage_row(self.session, client_id, month)
            used, granted = (row.generation_count, row.granted) if row else (0, 0)
            held = exact_held(self.session, row, now) if row else 0
            previous = effective_limit(quota.monthly_generation_limit, granted)
            new_limit = previous + amount
            if new_limit > MAX_LIMIT:
                raise InvalidRequest(
                    f"Granting {amount} would raise the limit to {new_limit}, above the maximum {MAX_LIMIT}.",
                    fields={"amount": [f"Must be at most {MAX_LIMIT - previous} for this client."]},
                )
            grant_month = month if scope == "month" else None
            if grant_month:
                self.session.execute(_add_to_month_statement(self.session.get_bind().dialect.name),
                                     {"client_id": client_id, "month": month, "amount": amount, "now": now})
            else:
                quota.monthly_generation_limit += amount  # under the row lock: no grant is lost
                quota.updated_at = now
            grant = CreditGrant(client_id=client_id, amount=amount, scope=scope, month=grant_month, reason=reason,
                                admin_id=actor, created_at=now)
            self.session.add(grant)
            self.session.flush()
            details = {"amount": amount, "reason": reason, "scope": scope, "grantId": grant.id}
            if grant_month:
                details["month"] = grant_month
            self.audit.append(client_id, actor, "credit_grant", details, str(previous), str(new_limit), now)
            result = GrantResult(grant.id, scope, grant_month, _expiry(grant_month), used, previous,
                                 new_limit, remaining(new_limit, used + held))
            keep_in_step(self.session, client_id, month, used, new_limit, now, self.thresholds)
            emit(self.session, "credits.granted", {
                "clientId": client_id, "grantId": grant.id, "amount": amount, "scope": scope, "month": grant_month,
                "previousLimit": previous, "newLimit": new_limit}, now)
            if idempotency:
                idempotency.complete(self.session, result)
        metrics.credits_granted(amount)
        log_admin_action(actor, "credit_grant", client_id)
        return result

    def void_grant(self, actor: str, client_id: str, grant_id: int, reason: str | None = None,
                   idempotency: IdempotencyClaim | None = None) -> VoidResult:
        """Undo a grant; usage already counted stays."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            grant = self.session.scalar(
                select(CreditGrant).where(CreditGrant.id == grant_id, CreditGrant.client_id == client_id)
            )
            if grant is None:
                raise NotFound(f"Client {client_id!r} has no grant with id {grant_id}.")
            if grant.voided_at is not None:
                raise Conflict(f"Grant {grant_id} was already voided at {iso_utc(grant.voided_at)}.")
            stored = quota.monthly_generation_limit
            row = usage_row(self.session, client_id, month)
            used, granted = (row.generation_count, row.granted) if row else (0, 0)
            held = exact_held(self.session, row, now) if row else 0
            previous = effective_limit(stored, granted)
            if grant.scope == "permanent":
                if stored == UNLIMITED:
                    raise Conflict(
                        f"Client {client_id!r} has become unlimited since grant {grant_id}; there is no "
                        "limit to lower. Set a limit first if that is what you want."
                    )
                if stored < grant.amount:
                    raise Conflict(
                        f"Voiding grant {grant_id} would lower the monthly limit of {stored} by "
                        f"{grant.amount}, below 0. Change the limit instead."
                    )
                quota.monthly_generation_limit = stored - grant.amount
                quota.updated_at = now
            else:
                if grant.month != month:
                    raise Conflict(
                        f"Grant {grant_id} was for {grant.month}, which is over: an expired grant "
                        "cannot be voided."
                    )
                self.session.execute(
                    update(UsageRecord).where(UsageRecord.client_id == client_id, UsageRecord.month == month)
                    .values(granted=UsageRecord.granted - grant.amount, updated_at=now)
                )
                granted -= grant.amount
            new_limit = effective_limit(quota.monthly_generation_limit, granted)
            grant.voided_at, grant.voided_by, grant.void_reason = now, actor, reason
            details = {"grantId": grant.id, "amount": grant.amount, "scope": grant.scope, "reason": reason}
            if grant.month:
                details["month"] = grant.month
            self.audit.append(client_id, actor, "credit_void", details, str(previous), str(new_limit), now)
            result = VoidResult(grant.id, grant.scope, used, previous, new_limit, remaining(new_limit, used + held))
            keep_in_step(self.session, client_id, month, used, new_limit, now, self.thresholds)
            emit(self.session, "credits.voided", {
                "clientId": client_id, "grantId": grant.id, "amount": grant.amount, "scope": grant.scope,
                "month": grant.month, "previousLimit": previous, "newLimit": new_limit}, now)
            if idempotency:
                idempotency.complete(self.session, result)
        log_admin_action(actor, "credit_void", client_id)
        return result

    def list_grants(self, client_id: str, limit: int, offset: int, scope: str | None = None,
                    status: str | None = None) -> Page:
        """The ledger, newest first (by id)."""
        this_month = month_of(self.clock())
        find_quota(self.session, client_id)
        query = select(CreditGrant).where(CreditGrant.client_id == client_id)
        if scope is not None:
            query = query.where(CreditGrant.scope == scope)
        if status == "voided":
            query = query.where(CreditGrant.voided_at.is_not(None))
        elif status == "expired":
            query = query.where(CreditGrant.voided_at.is_(None), CreditGrant.month < this_month)
        elif status == "active":
            query = query.where(
                CreditGrant.voided_at.is_(None),
                or_(CreditGrant.month.is_(None), CreditGrant.month >= this_month),
            )

        def listed(row) -> LedgerGrant:
            grant = row[0]
            return LedgerGrant(
                grant.id, grant.amount, grant.scope, grant.month, _expiry(grant.month), grant.reason,
                grant.admin_id, grant.created_at, _status(grant, this_month), grant.voided_at,
                grant.voided_by, grant.void_reason,
            )

        return page_of(self.session, query.order_by(CreditGrant.id.desc()), limit, offset, listed)
