"""usage.threshold_reached: once per client, month and threshold, however many requests cross it.

Which thresholds (percentages of the effective limit, WEBHOOK_THRESHOLDS) a month has reached
is kept in usage_thresholds, in step with the month's usage and limit, by every change to
either, in its transaction and under the client's quota row lock: a threshold newly reached is
a row and an event; one the usage fell below, or the limit rose above, loses its row, so the
next crossing fires again.
"""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..models import UsageThreshold
from ..plans import UNLIMITED
from ..transactions import upsert_for
from .events import emit


def reached(used: int, limit: int, thresholds: tuple[int, ...]) -> set[int]:
    if limit == UNLIMITED:
        return set()
    return {threshold for threshold in thresholds if used * 100 >= threshold * limit}


def crossed(before: int, after: int, limit: int, thresholds: tuple[int, ...]) -> set[int]:
    """The thresholds usage reaches by going from before to after under one limit."""
    return reached(after, limit, thresholds) - reached(before, limit, thresholds)


def keep_in_step(session: Session, client_id: str, month: str, used: int, limit: int, now: datetime,
                 thresholds: tuple[int, ...], *, only_rising: set[int] | None = None) -> None:
    """Make the month's reached thresholds match used and limit, firing each newly reached one.

    only_rising: when usage only rose (a consumption, a capture), the thresholds it crossed:
    nothing else can have changed, so nothing else is read."""
    if only_rising is not None:
        stored, now_reached = set(), only_rising
    else:
        stored = set(session.scalars(select(UsageThreshold.threshold).where(
            UsageThreshold.client_id == client_id, UsageThreshold.month == month)))
        now_reached = reached(used, limit, thresholds)
    insert = upsert_for(session.get_bind().dialect.name)
    for threshold in sorted(now_reached - stored):
        added = session.execute(
            insert(UsageThreshold).values(client_id=client_id, month=month, threshold=threshold, reached_at=now)
            .on_conflict_do_nothing().returning(UsageThreshold.threshold)).first()
        if added is not None:  # (a row there already: this crossing was told before)
            emit(session, "usage.threshold_reached", {"clientId": client_id, "month": month, "threshold": threshold,
                                                      "generationsUsed": used, "generationsLimit": limit}, now)
    if stored - now_reached:
        session.execute(delete(UsageThreshold).where(
            UsageThreshold.client_id == client_id, UsageThreshold.month == month,
            UsageThreshold.threshold.in_(stored - now_reached)))
