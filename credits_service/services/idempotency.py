"""Idempotency keys, as payment APIs have them (IETF draft 'The Idempotency-Key HTTP Header').

A request with a key first claims it in a short transaction of its own. The change it makes
then stores its response on the claim in the change's own transaction, so a replay can
never answer for a change that did not commit, and a change can never commit without its
stored answer. A claim whose request died (a killed worker) is taken over once its lock
has been held longer than the lock timeout.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .. import metrics
from ..errors import Conflict, IdempotencyKeyReused, TooManyRequests
from ..models import IdempotencyRecord
from ..transactions import batches_alone, upsert_for, write_transaction

# pg_try_advisory_xact_lock key held while purging: any fixed 64-bit number no other code uses.
PURGE_LOCK = 0x637265646974735F  # "credits_"


def fingerprint(method: str, path: str, payload: Any) -> str:
    canonical = json.dumps([method, path, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class IdempotencyClaim:
    """This request holds the key; complete() stores its answer in the caller's transaction."""

    record_id: int
    locked_at: datetime
    render: Callable[[Any], dict[str, Any]]
    status: int = 200

    def store(self, session: Session, status: int, body: dict[str, Any]) -> None:
        stored = session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.id == self.record_id,
                IdempotencyRecord.locked_at == self.locked_at,
                IdempotencyRecord.status_code.is_(None),
            )
            .values(status_code=status, response_body=body)
        ).rowcount
        if not stored:
            raise Conflict(
                "This Idempotency-Key was taken over by a retry while the request ran; "
                "nothing was changed. Send the request again to get its answer."
            )

    def complete(self, session: Session, result: Any) -> None:
        self.store(session, self.status, self.render(result))


class IdempotencyKeys:
    def __init__(self, session: Session, clock: Callable[[], datetime], ttl: timedelta,
                 lock_timeout: timedelta, admit_new: Callable[[str], bool] = lambda principal: True,
                 max_stored: int | None = None):
        """admit_new(principal) counts one more stored answer of the principal's and says whether it
        stays within max_stored per ttl (the rate limiter's counters, shared by every instance)."""
        self.session = session
        self.clock = clock
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.admit_new = admit_new
        self.max_stored = max_stored

    def claim(self, principal: str, key: str, request_fingerprint: str,
              render: Callable[[Any], dict[str, Any]], status: int = 200) -> IdempotencyClaim | StoredResponse:
        """Claim the key for this request, or return the answer a first request got."""
        now = self.clock()
        with write_transaction(self.session):
            self.session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.created_at <= now - self.ttl,
                )
            )
            created = self.session.scalar(
                upsert_for(self.session.get_bind().dialect.name)(IdempotencyRecord)
                .values(principal=principal, key=key, fingerprint=request_fingerprint,
                        created_at=now, locked_at=now)
                .on_conflict_do_nothing(index_elements=["principal", "key"])
                .returning(IdempotencyRecord.id)
            )
            if created is not None:
                if not self.admit_new(principal):  # the new row goes with the rollback
                    raise TooManyRequests(
                        f"This key has stored {self.max_stored} Idempotency-Key answers within "
                        f"{self.ttl.total_seconds() / 3600:g} hours, the most one key may keep. Send requests "
                        "without a new Idempotency-Key, or wait for the oldest answers to expire."
                    )
                return IdempotencyClaim(created, now, render, status)
            record = self.session.scalar(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if record.fingerprint != request_fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request; "
                    "use a new key for a new request."
                )
            if record.status_code is not None:
                return StoredResponse(record.status_code, record.response_body)
            if record.locked_at > now - self.lock_timeout:
                raise Conflict(
                    "A request with this Idempotency-Key is still being processed; "
                    "retry in a moment to get its answer."
                )
            record.locked_at = now
            return IdempotencyClaim(record.id, now, render, status)

    def finish(self, claim: IdempotencyClaim, status: int, body: dict[str, Any]) -> None:
        """Store a refusal (4xx) as the answer: the request changed nothing, so it stands alone."""
        with write_transaction(self.session):
            claim.store(self.session, status, body)

    def release(self, claim: IdempotencyClaim) -> None:
        """Give the key back after an unexpected failure, so a retry can run the request."""
        with write_transaction(self.session):
            self.session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == claim.record_id,
                    IdempotencyRecord.locked_at == claim.locked_at,
                    IdempotencyRecord.status_code.is_(None),
                )
            )

    def purge(self, batch: int) -> int:
        """Delete the stored keys older than the retention, `batch` rows per transaction; returns how many.

        Each batch is a short transaction that locks only the rows it deletes, so requests go on
        meanwhile. On PostgreSQL a transaction-level advisory lock lets one instance purge at a
        time; the others find it taken and leave the work to it.
        """
        cutoff = self.clock() - self.ttl
        expired = select(IdempotencyRecord.id).where(IdempotencyRecord.created_at <= cutoff).limit(batch)
        if self.session.get_bind().dialect.name == "postgresql":
            expired = expired.with_for_update(skip_locked=True)
        purge_batch = delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(expired.scalar_subquery()))
        purged = 0
        for deleted in batches_alone(self.session, PURGE_LOCK, lambda: self.session.execute(purge_batch).rowcount):
            metrics.idempotency_answers_purged(deleted)
            purged += deleted
            if deleted < batch:
                break
        return purged
