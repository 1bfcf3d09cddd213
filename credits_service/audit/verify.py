"""Recomputing every audit chain and holding it against the stored heads (`flask audit verify`).

One snapshot for the whole run: entries appended meanwhile are neither seen nor mistaken for
entries past the head. The first failure of each broken client is reported.
"""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from ..models import AuditHead, Client, CreditAuditLog
from ..months import iso_utc
from ..transactions import snapshot_transaction
from .chain import GENESIS, canonical_entry, chain_hash
from .keys import AuditKeys
from .trail import SYSTEM_CHAINS

VERIFY_BATCH = 10_000
_decode_json = json.JSONDecoder().decode


@dataclass(frozen=True)
class Anchor:
    """A head kept outside the database (`flask audit heads`)."""

    client_id: str
    entry_count: int
    hash: str


@dataclass(frozen=True)
class Failure:
    """The first thing wrong with one client's chain."""

    client_id: str
    entry_id: int | None  # the first bad entry, when there is one to name
    # changed, missing, reordered, newest entries missing, head mismatch, rolled back,
    # unknown key, older key, retired key, deleted unrecorded, no such client
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"client {self.client_id!r}: {self.kind}: {self.detail}"


@dataclass
class _Chain:
    """Where the recomputation of one client's chain stands."""

    count: int = 0
    hash: str = GENESIS
    last_id: int | None = None
    last_action: str | None = None
    newest_key: str | None = None  # the newest key (first in AUDIT_HMAC_KEYS) any entry so far used


@dataclass
class Verification:
    entries: int = 0
    clients: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.failures


class AuditVerifier:
    def __init__(self, session: Session, keys: AuditKeys):
        self.session = session
        self.keys = keys

    def heads(self) -> Iterator[AuditHead]:
        return iter(self.session.scalars(select(AuditHead).order_by(AuditHead.client_id)))

    def count_entries(self, client_id: str | None = None) -> int:
        query = select(func.count()).select_from(CreditAuditLog)
        if client_id is not None:
            query = query.where(CreditAuditLog.client_id == client_id)
        return self.session.scalar(query)

    def verify(self, client_id: str | None = None, anchors: Iterable[Anchor] = (),
               progress: Callable[[int], None] = lambda entries: None,
               batch_size: int = VERIFY_BATCH) -> Verification:
        """Recompute every chain (or one client's) and hold it against the stored heads and,
        when given, against heads kept outside the database.

        One snapshot for the whole run: entries appended meanwhile are neither seen nor
        mistaken for entries past the head. Reports the first failure of each broken client.
        """
        snapshot_transaction(self.session)
        try:
            return self._verify(client_id, {a.client_id: a for a in anchors if client_id in (None, a.client_id)},
                                progress, batch_size)
        finally:
            self.session.rollback()

    def _verify(self, client_id, anchors: dict[str, Anchor], progress, batch_size) -> Verification:
        heads_query = select(AuditHead)
        clients_query = select(Client.id)
        if client_id is not None:
            heads_query = heads_query.where(AuditHead.client_id == client_id)
            clients_query = clients_query.where(Client.id == client_id)
        heads = {head.client_id: head for head in self.session.scalars(heads_query)}
        clients = set(self.session.scalars(clients_query))
        result = Verification(clients=len(clients | heads.keys()))
        chains: dict[str, _Chain] = {}
        failed: dict[str, Failure] = {}

        def fail(client: str, entry_id: int | None, kind: str, detail: str) -> None:
            failed.setdefault(client, Failure(client, entry_id, kind, detail))

        for batch in self._entry_batches(client_id, batch_size):
            for (entry_id, client, seq, admin_id, action, details_json, previous_value, new_value,
                 created_at, previous_hash, stored_hash, key_id) in batch:
                if client in failed:
                    continue
                chain = chains.get(client) or chains.setdefault(client, _Chain())
                secret = self.keys.secrets.get(key_id)
                if secret is None:
                    fail(client, entry_id, "unknown key",
                         f"entry {entry_id} was signed with key {key_id!r}, which AUDIT_HMAC_KEYS does not hold")
                    continue
                refused = self._key_refused(entry_id, key_id, created_at, chain)
                if refused:
                    fail(client, entry_id, *refused)
                    continue
                try:
                    details = _decode_json(details_json)
                except ValueError:  # only a hand-edited row holds text that is not JSON
                    details = details_json
                canonical = canonical_entry(entry_id, client, seq, admin_id, action, details,
                                            previous_value, new_value, created_at)
                authentic = chain_hash(secret, previous_hash, canonical) == stored_hash
                expected = chain.count + 1
                if authentic and seq == expected and previous_hash == chain.hash:
                    chain.count, chain.hash, chain.last_id, chain.last_action = seq, stored_hash, entry_id, action
                    anchor = anchors.get(client)
                    if anchor is not None and anchor.entry_count == seq and anchor.hash != stored_hash:
                        fail(client, entry_id, "rolled back",
                             f"entry {entry_id} (#{seq}) differs from the anchor's #{seq}: "
                             "the chain was rewritten since the anchor was taken")
                    continue
                fail(client, entry_id, *self._misplaced(entry_id, seq, chain, authentic,
                                                        previous_hash == chain.hash))
            result.entries += len(batch)
            progress(len(batch))

        if client_id is not None and not clients and not heads and client_id not in anchors:
            fail(client_id, None, "no such client", "there is no client or audit chain with this id")
        for client in sorted(clients | heads.keys() | chains.keys() | anchors.keys()):
            if client not in failed:
                self._check_head(client, chains.get(client, _Chain()), heads.get(client),
                                 anchors.get(client), client in clients or client in SYSTEM_CHAINS, fail)
        result.failures = [failed[client] for client in sorted(failed)]
        return result

    def _key_refused(self, entry_id: int, key_id: str, created_at, chain: _Chain) -> tuple[str, str] | None:
        """A chain never goes back to an older key, and no entry is signed after its key's retirement."""
        retired = self.keys.retired.get(key_id)
        if retired is not None and created_at >= retired:
            return "retired key", (f"entry {entry_id} was signed with key {key_id!r} at {iso_utc(created_at)}, "
                                   f"after its retirement on {iso_utc(retired)}")
        if chain.newest_key is not None and self.keys.is_older(key_id, chain.newest_key):
            return "older key", (f"entry {entry_id} was signed with key {key_id!r}, older than key "
                                 f"{chain.newest_key!r} that an earlier entry of this chain used")
        if chain.newest_key is None or self.keys.is_older(chain.newest_key, key_id):
            chain.newest_key = key_id
        return None

    @staticmethod
    def _misplaced(entry_id: int, seq: int, chain: _Chain, authentic: bool,
                   linked: bool) -> tuple[str, str]:
        """Why an entry does not continue the chain as recomputed so far: (kind, detail)."""
        expected = chain.count + 1
        after = f"entry {chain.last_id} (#{chain.count})" if chain.last_id else "the start of the chain"
        if not authentic and linked and seq == expected:
            return "changed", f"entry {entry_id} does not match its hash: its content was edited"
        if not authentic:
            return "reordered", (f"entry {entry_id} does not match its hash and was not chained from "
                                 f"{after}: it was moved here from another client or place")
        if seq > expected:
            gone = f"entry #{expected} is" if seq == expected + 1 else f"entries #{expected} to #{seq - 1} are"
            return "missing", f"{gone} gone: the chain goes from {after} to entry {entry_id} (#{seq})"
        return "reordered", f"entry {entry_id} is #{seq} of the chain but comes after {after}"

    @staticmethod
    def _check_head(client: str, chain: _Chain, head: AuditHead | None, anchor: Anchor | None,
                    exists: bool, fail: Callable[[str, int | None, str, str], None]) -> None:
        """The recomputed chain against the stored head, the client's existence, then the anchor if any."""
        ends = f"entry {chain.last_id} (#{chain.count})" if chain.last_id else "the start (no entries)"
        deleted = chain.last_action == "client_deleted"
        if head is None and anchor is not None and not exists:
            fail(client, None, "rolled back",
                 f"the anchor records {anchor.entry_count} entries but the database holds no chain for this client")
        elif head is None:
            fail(client, chain.last_id, "head mismatch", f"the client has no stored head; its chain ends at {ends}")
        elif chain.count < head.entry_count:
            fail(client, chain.last_id, "newest entries missing",
                 f"the chain ends at {ends} but the stored head counts {head.entry_count} entries "
                 f"ending at entry {head.last_entry_id}")
        elif (chain.count, chain.hash, chain.last_id) != (head.entry_count, head.hash, head.last_entry_id):
            fail(client, chain.last_id, "head mismatch",
                 f"the chain ends at {ends} but the stored head says {head.entry_count} entries "
                 f"ending at entry {head.last_entry_id} with another hash")
        elif not exists and not deleted:
            fail(client, chain.last_id, "deleted unrecorded",
                 f"the client is gone but its chain ends at {ends}, not at a client_deleted entry: "
                 "it was deleted outside the service")
        elif exists and deleted:
            fail(client, chain.last_id, "deleted unrecorded",
                 f"the chain ends with the client's deletion at {ends}, but the client exists again")
        elif anchor is not None and chain.count < anchor.entry_count:
            fail(client, chain.last_id, "rolled back",
                 f"the anchor records {anchor.entry_count} entries ending in hash {anchor.hash[:16]}..., "
                 f"the database has {chain.count}, ending at {ends}")
        elif anchor is not None and anchor.entry_count == 0 and anchor.hash != GENESIS:
            fail(client, None, "rolled back", "the anchor of an empty chain does not hold the genesis hash")

    def _entry_batches(self, client_id: str | None, batch_size: int) -> Iterator[list]:
        """Entries in id order, keyset-paged, as plain rows: Core, no ORM loading on the hot path."""
        log = CreditAuditLog
        # details as its JSON text, decoded by one prebuilt decoder: cheaper than the driver's
        # per-value JSON loading.
        query = select(log.id, log.client_id, log.seq, log.admin_id, log.action, cast(log.details, Text),
                       log.previous_value, log.new_value, log.created_at, log.previous_hash,
                       log.hash, log.key_id).order_by(log.id).limit(batch_size)
        if client_id is not None:
            query = query.where(log.client_id == client_id)
        connection = self.session.connection()
        last_id = 0
        while True:
            batch = connection.execute(query.where(log.id > last_id)).all()
            if not batch:
                return
            yield batch
            last_id = batch[-1][0]
