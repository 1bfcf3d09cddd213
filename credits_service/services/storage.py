"""Storage: the bytes a client stores, kept within its storage quota.

A level, not a monthly count: the platform moves it by deltas as it stores and deletes, and an
admin sets it to what the storage system actually holds (a reconciliation, audited). A positive
delta that would take the level past the quota (storageQuotaMb x 1,048,576 bytes; -1 is
unlimited) is refused, and so is any delta that would take it below zero; freeing is always
allowed, even over a quota an admin lowered. The check and the move are one conditional UPDATE
of the client's quota row, so parallel deltas can never pass the quota together.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, bindparam, cast, or_, update
from sqlalchemy.orm import Session

from ..audit.trail import AuditTrail
from ..errors import Conflict, QuotaExceeded
from ..logs import log_admin_action
from ..models import QuotaLimit
from ..plans import UNLIMITED
from ..transactions import standalone_statements, write_transaction
from .idempotency import IdempotencyClaim
from .quotas import find_quota
from .results import StorageStatus

MIB = 1024 * 1024
# The most any level may be, unlimited quotas included (schemas.storage.MAX_LEVEL: an exabyte).
MAX_LEVEL = 10**18
log = logging.getLogger("credits_service.storage")

_quotas = QuotaLimit.__table__
_delta = bindparam("delta", type_=BigInteger())
_quota_bytes = cast(_quotas.c.storage_quota_mb, BigInteger()) * MIB
# The delta moves the level only if it stays at or above zero and, when it adds, within the quota.
_MOVE = (
    update(_quotas)
    .where(_quotas.c.client_id == bindparam("client"),
           _quotas.c.storage_used_bytes + _delta >= 0, _quotas.c.storage_used_bytes + _delta <= MAX_LEVEL,
           or_(_delta <= 0, _quotas.c.storage_quota_mb == UNLIMITED,
               _quotas.c.storage_used_bytes + _delta <= _quota_bytes))
    .values(storage_used_bytes=_quotas.c.storage_used_bytes + _delta)
    .returning(_quotas.c.storage_used_bytes, _quotas.c.storage_quota_mb)
)


def storage_status(used_bytes: int, quota_mb: int) -> StorageStatus:
    if quota_mb == UNLIMITED:
        return StorageStatus(used_bytes, quota_mb, None, True, False)
    quota_bytes = quota_mb * MIB
    return StorageStatus(used_bytes, quota_mb, max(quota_bytes - used_bytes, 0), False, used_bytes >= quota_bytes)


def _megabytes(quota_mb: int) -> str:
    return f"{quota_mb} MB ({quota_mb * MIB:,} bytes)"


class StorageService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail):
        self.session = session
        self.clock = clock
        self.audit = audit

    def move(self, client_id: str, delta_bytes: int, reference: str | None = None,
             idempotency: IdempotencyClaim | None = None) -> StorageStatus:
        """Add delta_bytes (negative: free them) to what the client stores, never past its quota
        nor below zero. Without an Idempotency-Key on PostgreSQL, one statement and round trip."""
        parameters = {"client": client_id, "delta": delta_bytes}
        if idempotency is None:
            with standalone_statements(self.session) as connection:
                row = connection.execute(_MOVE, parameters).first() if connection is not None else None
            if row is not None:
                return storage_status(*row)
        with write_transaction(self.session):
            row = self.session.execute(_MOVE, parameters).first()
            if row is None:
                raise self._refusal(client_id, delta_bytes, reference)
            status = storage_status(*row)
            if idempotency:
                idempotency.complete(self.session, status)
        return status

    def _refusal(self, client_id: str, delta_bytes: int, reference: str | None) -> Exception:
        quota = find_quota(self.session, client_id, lock=True)
        status = storage_status(quota.storage_used_bytes, quota.storage_quota_mb)
        log.info("storage delta of %d bytes refused for client %s", delta_bytes, client_id,
                 extra={"event": "storage_refused", "clientId": client_id, "deltaBytes": delta_bytes,
                        "reference": reference})
        if delta_bytes > 0 and status.is_unlimited:
            return QuotaExceeded(
                f"Not enough storage: {delta_bytes:,} bytes to add would pass {MAX_LEVEL:,} bytes, the most any client "
                f"may store; {status.used_bytes:,} bytes are stored.",
                usedBytes=status.used_bytes, quotaMb=status.quota_mb, remainingBytes=None,
            )
        if delta_bytes > 0:
            return QuotaExceeded(
                f"Not enough storage: {delta_bytes:,} bytes to add, {status.remaining_bytes:,} left of the storage "
                f"quota of {_megabytes(quota.storage_quota_mb)}; {status.used_bytes:,} bytes are stored.",
                usedBytes=status.used_bytes, quotaMb=status.quota_mb, remainingBytes=status.remaining_bytes,
            )
        return Conflict(
            f"Freeing {-delta_bytes:,} bytes would take the client's storage below zero: {status.used_bytes:,} "
            "bytes are stored. The count has drifted from the storage system's: reconcile it (PUT "
            "/api/admin/clients/<id>/storage).",
            usedBytes=status.used_bytes,
        )

    def reconcile(self, actor: str, client_id: str, used_bytes: int, reason: str) -> StorageStatus:
        """Set the level to what the storage system holds: an admin's act, audited."""
        now = self.clock()
        with write_transaction(self.session):
            quota = find_quota(self.session, client_id, lock=True)
            previous = quota.storage_used_bytes
            quota.storage_used_bytes = used_bytes
            self.audit.append(client_id, actor, "storage_reconcile",
                              {"previousBytes": previous, "newBytes": used_bytes, "reason": reason},
                              str(previous), str(used_bytes), now)
            status = storage_status(used_bytes, quota.storage_quota_mb)
        log_admin_action(actor, "storage_reconcile", client_id)
        return status
