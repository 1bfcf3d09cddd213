"""GrantsService: the grant ledger, voids, and month-by-month usage history.

A grant is a ledger row. A permanent grant raises the stored monthly limit; a month grant
adds to the `granted` column of this UTC month's usage row, which consumption checks in its
one upsert statement, so a month grant is gone when the month is. Writes take the client's
quota row lock first and write their audit entry in the same transaction, through the
steps CreditsService shares (lock, this month's usage row, audit entry).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..errors import Conflict, InvalidRequest, NotFound
from ..models import AuditHead, CreditGrant, QuotaLimit, UsageRecord
from ..months import iso_utc, month_named, month_number, month_of, month_start, next_month_start
from ..plans import MAX_LIMIT, UNLIMITED, effective_limit, remaining
from .audit import AuditTrail, locked_head
from .credits import CreditsService, Page
from .idempotency import IdempotencyClaim
from .transactions import next_id, upsert_for, write_transaction

# GET /usage without a range: this month and the 11 before it.
DEFAULT_HISTORY_MONTHS = 12
MAX_HISTORY_MONTHS = 120


@dataclass(frozen=True)
class GrantResult:
    grant_id: int
    scope: str
    month: str | None
    expires_at: datetime | None
    current_usage: int
    previous_limit: int
    new_limit: int
    remaining: int | None
    action: str = "grant"


@dataclass(frozen=True)
class VoidResult:
    grant_id: int
    scope: str
    current_usage: int
    previous_limit: int
    new_limit: int
    remaining: int | None
    action: str = "void"


@dataclass(frozen=True)
class GrantView:
    id: int
    amount: int
    scope: str
    month: str | None
    expires_at: datetime | None
    reason: str | None
    admin_id: str
    created_at: datetime
    status: str
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str | None


@dataclass(frozen=True)
class UsageMonth:
    month: str
    generation_count: int
    granted_this_month: int


@dataclass(frozen=True)
class UsageHistory:
    from_month: str
    to_month: str
    items: list[UsageMonth]


_quotas, _usage, _grants, _heads = (QuotaLimit.__table__, UsageRecord.__table__, CreditGrant.__table__,
                                    AuditHead.__table__)
# A grant runs these with its audit entry as one statement on PostgreSQL (AuditTrail.append):
# their parameters are named apart from audit_heads' columns, which the head's UPDATE would SET.
_RAISE_LIMIT = (
    update(_quotas).where(_quotas.c.client_id == bindparam("quota_client"))
    .values(monthly_generation_limit=_quotas.c.monthly_generation_limit + bindparam("amount"),
            updated_at=bindparam("now", type_=_quotas.c.updated_at.type))
)
_INSERT_GRANT = insert(_grants).values(
    id=bindparam("grant_id"), client_id=bindparam("grant_client"), amount=bindparam("amount"),
    scope=bindparam("grant_scope"), month=bindparam("grant_month"), reason=bindparam("grant_reason"),
    admin_id=bindparam("grant_admin"), created_at=bindparam("now", type_=_grants.c.created_at.type),
)
_SUBTRACT_FROM_MONTH = (
    update(_usage).where(_usage.c.client_id == bindparam("usage_client"), _usage.c.month == bindparam("usage_month"))
    .values(granted=_usage.c.granted - bindparam("amount"), updated_at=bindparam("now", type_=_usage.c.updated_at.type))
)


@functools.cache
def _add_to_month_statement(dialect: str):
    """The month's usage row with amount added to its month-grants, created when missing, so
    consumption's upsert always finds this month's grants in it (and a void, the row its grant made)."""
    amount = bindparam("amount", type_=_usage.c.granted.type)
    now = bindparam("now", type_=_usage.c.updated_at.type)
    return upsert_for(dialect)(_usage).values(
        client_id=bindparam("usage_client"), month=bindparam("usage_month"), generation_count=0, granted=amount,
        created_at=now, updated_at=now,
    ).on_conflict_do_update(
        index_elements=[_usage.c.client_id, _usage.c.month],
        set_={"granted": _usage.c.granted + amount, "updated_at": now},
    )


@functools.cache
def _grant_state_statement(dialect: str) -> Select:
    """After the quota row lock, in one statement: the audit head (locked), the next entry's id,
    this month's usage and month-grants as they are now, and the id the grant gets."""
    return (locked_head(dialect)
            .add_columns(func.coalesce(_usage.c.generation_count, 0), func.coalesce(_usage.c.granted, 0),
                         next_id(dialect, _grants))
            .outerjoin_from(_heads, _usage, and_(_usage.c.client_id == _heads.c.client_id,
                                                 _usage.c.month == bindparam("usage_month"))))


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
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail):
        self.session = session
        self.clock = clock
        self.credits = CreditsService(session, clock, audit)

    def grant_credits(self, actor: str, client_id: str, amount: int, scope: str = "permanent",
                      reason: str | None = None, idempotency: IdempotencyClaim | None = None) -> GrantResult:
        """Record a grant: permanent raises the stored limit, month adds to this UTC month only.

        Statements on PostgreSQL: the quota row lock; the state under it (audit head, usage,
        ids); the raise or month-grant, ledger row, audit entry and head's advance as one.
        """
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            connection = self.session.connection()
            stored = self.credits._lock_limit(connection, client_id)
            if stored == UNLIMITED:
                raise Conflict(
                    f"Client {client_id!r} is unlimited (monthlyGenerationLimit -1); "
                    "granting credits would not add anything. Set a limit first if that is what you want."
                )
            state = self.credits.audit.head(client_id, _grant_state_statement(connection.dialect.name),
                                            usage_month=month)
            used, granted, grant_id = state[3:]
            previous = effective_limit(stored, granted)
            new_limit = previous + amount
            if new_limit > MAX_LIMIT:
                raise InvalidRequest(
                    f"Granting {amount} would raise the limit to {new_limit}, above the maximum {MAX_LIMIT}.",
                    fields={"amount": [f"Must be at most {MAX_LIMIT - previous} for this client."]},
                )
            grant_month = month if scope == "month" else None
            change = {"quota_client": client_id, "usage_client": client_id, "usage_month": month,
                      "amount": amount, "now": now}
            raise_limit = (_RAISE_LIMIT if scope == "permanent"
                           else _add_to_month_statement(connection.dialect.name))
            ledger_row = {"grant_id": grant_id, "grant_client": client_id, "amount": amount, "grant_scope": scope,
                          "grant_month": grant_month, "grant_reason": reason, "grant_admin": actor, "now": now}
            details = {"amount": amount, "reason": reason, "scope": scope, "grantId": grant_id}
            if grant_month:
                details["month"] = grant_month
            self.credits.audit.append(client_id, actor, "credit_grant", details, str(previous), str(new_limit), now,
                                      head=state, writes=[(raise_limit, change), (_INSERT_GRANT, ledger_row)])
            result = GrantResult(grant_id, scope, grant_month, _expiry(grant_month), used, previous,
                                 new_limit, remaining(new_limit, used))
            if idempotency:
                idempotency.complete(self.session, result)
        metrics.credits_granted(amount)
        self.credits._logged(actor, "credit_grant", client_id)
        return result

    def void_grant(self, actor: str, client_id: str, grant_id: int, reason: str | None = None,
                   idempotency: IdempotencyClaim | None = None) -> VoidResult:
        """Undo a grant; usage already counted stays."""
        now = self.clock()
        month = month_of(now)
        with write_transaction(self.session):
            quota = self.credits._quota(client_id, lock=True)
            grant = self.session.scalar(
                select(CreditGrant).where(CreditGrant.id == grant_id, CreditGrant.client_id == client_id)
            )
            if grant is None:
                raise NotFound(f"Client {client_id!r} has no grant with id {grant_id}.")
            if grant.voided_at is not None:
                raise Conflict(f"Grant {grant_id} was already voided at {iso_utc(grant.voided_at)}.")
            stored = quota.monthly_generation_limit
            usage = self.credits._month_usage(client_id, month)
            previous = effective_limit(stored, usage.granted)
            granted = usage.granted
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
                self.session.connection().execute(_SUBTRACT_FROM_MONTH, {
                    "usage_client": client_id, "usage_month": month, "amount": grant.amount, "now": now})
                granted -= grant.amount
            new_limit = effective_limit(quota.monthly_generation_limit, granted)
            grant.voided_at, grant.voided_by, grant.void_reason = now, actor, reason
            details = {"grantId": grant.id, "amount": grant.amount, "scope": grant.scope, "reason": reason}
            if grant.month:
                details["month"] = grant.month
            self.credits.audit.append(client_id, actor, "credit_void", details, str(previous), str(new_limit), now)
            used = usage.generation_count
            result = VoidResult(grant.id, grant.scope, used, previous, new_limit, remaining(new_limit, used))
            if idempotency:
                idempotency.complete(self.session, result)
        self.credits._logged(actor, "credit_void", client_id)
        return result

    def list_grants(self, client_id: str, limit: int, offset: int, scope: str | None = None,
                    status: str | None = None) -> Page:
        """The ledger, newest first (by id)."""
        this_month = month_of(self.clock())
        self.credits._quota(client_id)
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

        def view(row) -> GrantView:
            grant = row[0]
            return GrantView(
                grant.id, grant.amount, grant.scope, grant.month, _expiry(grant.month), grant.reason,
                grant.admin_id, grant.created_at, _status(grant, this_month), grant.voided_at,
                grant.voided_by, grant.void_reason,
            )

        return self.credits._page(query.order_by(CreditGrant.id.desc()), limit, offset, view)

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
        self.credits._quota(client_id)
        rows = self.session.execute(
            select(UsageRecord.month, UsageRecord.generation_count, UsageRecord.granted)
            .where(UsageRecord.client_id == client_id, UsageRecord.month.between(from_month, to_month))
            .order_by(UsageRecord.month)
        ).all()
        return UsageHistory(from_month, to_month, [UsageMonth(*row) for row in rows])
