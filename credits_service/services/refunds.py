"""Refunds: the platform gives back generations it consumed for a generation that failed.

A refund lowers a month's usage by its count and is kept as a row (who, when, how much), so
every change to a month's usage is explained: generation_count = consumed + captured - refunded.
It is the platform's act, not an admin's: no audit entry. Only this month and the one before
take refunds: finance has closed the older ones.
"""

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidRequest
from ..models import Refund
from ..months import month_named, month_number, month_of
from ..plans import effective_limit, remaining
from ..transactions import write_transaction
from .idempotency import IdempotencyClaim
from .month_usage import exact_held, usage_row
from .paging import page_of
from .quotas import find_quota
from .results import Page, RefundResult, RefundView
from .thresholds import keep_in_step


class RefundsService:
    def __init__(self, session: Session, clock: Callable[[], datetime], thresholds: tuple[int, ...] = ()):
        self.session = session
        self.clock = clock
        self.thresholds = thresholds

    def refund(self, key_name: str, client_id: str, count: int, month: str | None = None,
               reason: str | None = None, idempotency: IdempotencyClaim | None = None) -> RefundResult:
        if idempotency is None:  # a refund retried without one could be given twice
            raise InvalidRequest(
                "A refund needs an Idempotency-Key header, so that a retry cannot refund twice.",
                fields={"Idempotency-Key": ["Missing: send a key unique to this refund."]},
            )
        now = self.clock()
        this_month = month_of(now)
        month = month or this_month
        if month not in (this_month, month_named(month_number(this_month) - 1)):
            raise Conflict(f"{month} takes no refunds: only this month ({this_month}) and the one before do; "
                           "finance has closed the others.")
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            row = usage_row(self.session, client_id, month)
            used = row.generation_count if row else 0
            if count > used:
                raise Conflict(f"Refunding {count} would take {month}'s usage below 0: {used} generations "
                               "are counted there.", generationCount=used)
            row.generation_count -= count
            row.refunded += count
            row.updated_at = now
            refund = Refund(client_id=client_id, month=month, count=count, reason=reason, key_name=key_name,
                            created_at=now)
            self.session.add(refund)
            self.session.flush()
            held = exact_held(self.session, row, now)
            limit = effective_limit(quota.monthly_generation_limit, row.granted)
            keep_in_step(self.session, client_id, month, row.generation_count, limit, now, self.thresholds)
            result = RefundResult(refund.id, month, count, row.generation_count,
                                  remaining(limit, row.generation_count + held))
            idempotency.complete(self.session, result)
        return result

    def list(self, client_id: str, limit: int, offset: int) -> Page:
        """The client's refunds, newest first."""
        find_quota(self.session, client_id)
        query = select(Refund).where(Refund.client_id == client_id).order_by(Refund.id.desc())
        return page_of(self.session, query, limit, offset, lambda row: RefundView(
            row[0].id, row[0].month, row[0].count, row[0].reason, row[0].key_name, row[0].created_at))
