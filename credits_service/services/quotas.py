"""Quotas: a client's plan and limits, changed by admins and read with this month's usage.

Every writer of a client takes its quota row lock first (lock_quota), so all changes to one
client happen in one serial order; on SQLite the IMMEDIATE write transaction does the same.
"""

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, select
from sqlalchemy.orm import Session

from ..audit.reader import AuditFilter, newest_first
from ..audit.trail import AuditTrail
from ..errors import NotFound
from ..logs import log_admin_action
from ..models import Hold, QuotaLimit, UsageRecord
from ..months import month_of
from ..plans import PLAN_LIMITS, effective_limit
from ..transactions import read_connection, write_transaction
from .events import emit
from .month_usage import held_by_open_holds, usage_row
from .results import MonthUsage, QuotaOverview, QuotaSettings
from .thresholds import keep_in_step

RECENT_AUDIT_ENTRIES = 10

_quotas, _usage = QuotaLimit.__table__, UsageRecord.__table__
# The quota joined with one month's usage row, in one statement; the quota read and quota-status
# run it, so it is built once (Core: no entity loading).
# Holds count to the millisecond (those open at `now`), whether or not the sweep has marked the
# lapsed ones in storage.
QUOTA_WITH_MONTH = (
    select(_quotas.c.client_id, _quotas.c.plan, _quotas.c.monthly_generation_limit, _quotas.c.storage_quota_mb,
           _quotas.c.storage_used_bytes, _quotas.c.updated_at, func.coalesce(_usage.c.generation_count, 0).label("generation_count"),
           func.coalesce(_usage.c.granted, 0).label("granted"),
           held_by_open_holds(_quotas.c.client_id, bindparam("month"),
                              bindparam("now", type_=Hold.expires_at.type)).label("held"))
    .select_from(_quotas.outerjoin(_usage, and_(_usage.c.client_id == _quotas.c.client_id,
                                                _usage.c.month == bindparam("month"))))
    .where(_quotas.c.client_id == bindparam("client_id"))
)
_RECENT_ENTRIES = newest_first(AuditFilter(client_id=bindparam("client_id"))).limit(RECENT_AUDIT_ENTRIES)


def quota_with_month(connection: Connection, client_id: str, now: datetime) -> Row:
    """The QUOTA_WITH_MONTH row of a client in now's month (a read: no lock); NotFound for an unknown client."""
    row = connection.execute(QUOTA_WITH_MONTH, {"client_id": client_id, "month": month_of(now), "now": now}).first()
    if row is None:
        raise NotFound.client(client_id)
    return row


def find_quota(session: Session, client_id: str, *, lock: bool = False) -> QuotaLimit:
    """The client's quota row; with lock, FOR UPDATE and read afresh: the lock every writer takes first."""
    query = select(QuotaLimit).where(QuotaLimit.client_id == client_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    quota = session.scalar(query)
    if quota is None:
        raise NotFound.client(client_id)
    return quota


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _settings(quota: QuotaLimit | Row) -> QuotaSettings:
    return QuotaSettings(quota.client_id, quota.plan, quota.monthly_generation_limit, quota.storage_quota_mb,
                         quota.updated_at)


class QuotasService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail,
                 thresholds: tuple[int, ...] = ()):
        self.session = session
        self.clock = clock
        self.audit = audit
        self.thresholds = thresholds

    def quota_overview(self, client_id: str) -> QuotaOverview:
        """The quota, this month's usage and the newest audit entries: two statements, each
        seeing the latest commit."""
        now = self.clock()
        with read_connection(self.session) as connection:
            row = quota_with_month(connection, client_id, now)
            recent = [entry._mapping for entry in connection.execute(_RECENT_ENTRIES, {"client_id": client_id})]
        usage = replace(MonthUsage.of(row.monthly_generation_limit, row.generation_count, row.granted, row.held, now),
                        storage_used_bytes=row.storage_used_bytes)
        return QuotaOverview(_settings(row), usage, recent)

    def update_quota(self, actor: str, client_id: str, *, plan: str | None = None,
                     monthly_generation_limit: int | None = None,
                     storage_quota_mb: int | None = None, reason: str | None = None) -> QuotaSettings:
        """Change the plan and/or limits; a new plan brings its defaults for limits not given."""
        now = self.clock()
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
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
            changes = {name: {"from": before[name], "to": after[name]} for name in after if before[name] != after[name]}
            self.audit.append(client_id, actor, action, {"changes": changes, "reason": reason},
                              _json_text(before), _json_text(after), now)
            month = month_of(now)
            row = usage_row(self.session, client_id, month)
            keep_in_step(self.session, client_id, month, row.generation_count if row else 0,
                         effective_limit(quota.monthly_generation_limit, row.granted if row else 0), now,
                         self.thresholds)
            emit(self.session, "quota.updated", {"clientId": client_id, "previous": before, "new": after,
                                                 "reason": reason}, now)
        log_admin_action(actor, action, client_id)
        return _settings(quota)
