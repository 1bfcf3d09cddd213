"""A client's usage row of one month, and the credits its open holds reserve.

The row holds what consumption's check reads: the generations counted, the month's live
month-grants, and `held`, what the month's open holds reserve. A hold lapses at its expires_at
without anyone writing, so between writes `held` may still count a lapsed hold, never less than
the live ones: every writer that holds the client's quota row lock makes it exact first
(exact_held), and the one-statement consumption declines a month with anything held.
"""

from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from ..models import Hold, UsageRecord
from ..transactions import upsert_for

_usage = UsageRecord.__table__


def open_holds(client_id, month, now):
    """The condition of a month's open holds: not resolved, and not lapsed at `now`."""
    return and_(Hold.client_id == client_id, Hold.month == month, Hold.status == "held", Hold.expires_at > now)


def held_by_open_holds(client_id, month, now):
    """What a month's open holds reserve, as a scalar subquery (client_id may be a column)."""
    return select(func.coalesce(func.sum(Hold.count), 0)).where(open_holds(client_id, month, now)).scalar_subquery()


def usage_row(session: Session, client_id: str, month: str) -> UsageRecord | None:
    """The client's usage row of the month, read afresh, if it has one."""
    return session.scalar(select(UsageRecord).where(UsageRecord.client_id == client_id, UsageRecord.month == month)
                          .execution_options(populate_existing=True))


def month_row(session: Session, client_id: str, month: str, now: datetime) -> UsageRecord:
    """The client's usage row of the month, made empty when it has none (under the quota row lock)."""
    session.execute(upsert_for(session.get_bind().dialect.name)(_usage)
                    .values(client_id=client_id, month=month, generation_count=0, granted=0, created_at=now,
                            updated_at=now)
                    .on_conflict_do_nothing(index_elements=[_usage.c.client_id, _usage.c.month]))
    return usage_row(session, client_id, month)


def exact_held(session: Session, row: UsageRecord, now: datetime) -> int:
    """Set the row's `held` to what the month's open holds reserve now, and return it."""
    held = session.scalar(select(held_by_open_holds(row.client_id, row.month, now)))
    if row.held != held:
        row.held = held
    return held
