"""Appending to a client's audit chain, always inside the transaction of the change it records."""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Sequence, func, insert, select
from sqlalchemy.orm import Session

from ..models import AuditHead, CreditAuditLog
from ..transactions import upsert_for
from .chain import GENESIS, canonical_entry, chain_hash, to_milliseconds
from .keys import AuditKeys

# Chains of admin acts that belong to no client, by ids no client id can take ("#"), with the
# key of the transaction-level advisory lock that serialises their writers on PostgreSQL.
WEBHOOKS_CHAIN = "#webhooks"
SYSTEM_CHAINS = {WEBHOOKS_CHAIN: 0x77656268_6F6F6B73}  # "webhooks"


def _next_entry_id(dialect: str):
    """The id the next entry gets, read before its INSERT because the hash covers it: PostgreSQL's
    sequence, or (SQLite, whose write transactions are serial) one past the largest id."""
    if dialect == "postgresql":
        return Sequence("credit_audit_log_id_seq").next_value()
    return select(func.coalesce(func.max(CreditAuditLog.id), 0) + 1).scalar_subquery()


class AuditTrail:
    def __init__(self, session: Session, keys: AuditKeys):
        self.session = session
        self.keys = keys

    def start(self, client_id: str, now: datetime) -> None:
        """The head of a new client's empty chain."""
        self.session.add(AuditHead(client_id=client_id, entry_count=0, last_entry_id=None,
                                   hash=GENESIS, updated_at=to_milliseconds(now)))

    def append(self, client_id: str, actor: str, action: str, details: dict[str, Any],
               previous_value: str | None, new_value: str | None, now: datetime) -> int:
        """Add an entry at the end of the client's chain; returns its id.

        The caller holds the client's quota row lock, so no other entry of this client is being
        written; the database advances the head with the INSERT (a trigger), and the unique
        (client_id, seq) refuses a second entry at the same place should a writer skip the lock.
        """
        dialect = self.session.get_bind().dialect.name
        head = self.session.execute(
            select(AuditHead.entry_count, AuditHead.hash, _next_entry_id(dialect)).where(AuditHead.client_id == client_id)
        ).first()
        if head is None:  # every client gets one when created: its chain has been tampered with
            raise RuntimeError(f"client {client_id!r} has no audit head")
        entry_count, previous_hash, entry_id = head
        created_at = to_milliseconds(now)
        seq = entry_count + 1
        key_id = self.keys.signing_id
        entry_hash = chain_hash(self.keys.secrets[key_id], previous_hash, canonical_entry(
            entry_id, client_id, seq, actor, action, details, previous_value, new_value, created_at))
        self.session.execute(insert(CreditAuditLog).values(
            id=entry_id, client_id=client_id, seq=seq, admin_id=actor, action=action, details=details,
            previous_value=previous_value, new_value=new_value, created_at=created_at,
            previous_hash=previous_hash, hash=entry_hash, key_id=key_id,
        ))
        return entry_id

    def append_to_system_chain(self, chain_id: str, actor: str, action: str, details: dict[str, Any],
                               previous: dict[str, Any] | None, new: dict[str, Any] | None, now: datetime) -> int:
        """append for a chain of no client (SYSTEM_CHAINS): no quota row to lock, so its writers take
        the chain's advisory lock (PostgreSQL; SQLite's writers are serial), and its head is made
        on its first entry."""
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            self.session.execute(select(func.pg_advisory_xact_lock(SYSTEM_CHAINS[chain_id])))
        self.session.execute(upsert_for(dialect)(AuditHead).values(
            client_id=chain_id, entry_count=0, last_entry_id=None, hash=GENESIS, updated_at=to_milliseconds(now),
        ).on_conflict_do_nothing(index_elements=[AuditHead.client_id]))

        def text(value):
            return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

        return self.append(chain_id, actor, action, details, text(previous), text(new), now)
