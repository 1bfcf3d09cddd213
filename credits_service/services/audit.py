"""AuditTrail: the audit log as one keyed hash chain per client, and its verification.

Each entry stores hash = HMAC-SHA256(key, previous hash ‖ canonical encoding of the entry),
the previous hash itself and the id of the key that signed it. The client's head (entry
count, last entry, hash) lives in audit_heads and advances in the same transaction as the
entry, so deleting the newest entries, or rewriting any entry, shows when the chain is
recomputed. The README ("Tamper-evident audit log") documents the encoding for programs that check it on their own.
"""

import functools
import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Row, Select, Text, Update, bindparam, cast, func, insert, select, update
from sqlalchemy.orm import Session

from ..models import AuditHead, Client, CreditAuditLog
from ..months import iso_utc
from .transactions import next_id, snapshot_transaction

# The "previous hash" of a client's first entry.
GENESIS = "0" * 64
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
MIN_SECRET_LENGTH = 32
VERIFY_BATCH = 10_000


class AuditKeyError(ValueError):
    """AUDIT_HMAC_KEYS (or the development key file) is malformed."""


@dataclass(frozen=True)
class AuditKeys:
    """HMAC keys by id; the first one given signs new entries, the others still verify."""

    signing_id: str
    secrets: dict[str, bytes]

    @classmethod
    def parse(cls, value: str) -> "AuditKeys":
        """`id:secret` pairs separated by commas, e.g. `2026-11:...,2026-05:...`."""
        secrets: dict[str, bytes] = {}
        for pair in (part.strip() for part in value.split(",")):
            key_id, colon, secret = pair.partition(":")
            if not colon or not KEY_ID.fullmatch(key_id):
                raise AuditKeyError(
                    "AUDIT_HMAC_KEYS must be comma-separated id:secret pairs, each id 1 to 32 "
                    f"characters of A-Z, a-z, 0-9, '.', '_' or '-'; got an entry {key_id[:32]!r}"
                )
            if len(secret) < MIN_SECRET_LENGTH:
                raise AuditKeyError(
                    f"AUDIT_HMAC_KEYS: the secret of key {key_id!r} must be at least "
                    f"{MIN_SECRET_LENGTH} characters long"
                )
            if key_id in secrets:
                raise AuditKeyError(f"AUDIT_HMAC_KEYS names key {key_id!r} twice")
            secrets[key_id] = secret.encode("utf-8")
        return cls(next(iter(secrets)), secrets)


# Built once: json.dumps with options builds a new encoder on every call, and verify calls it
# a million times.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_decode_json = json.JSONDecoder().decode


def canonical_entry(entry_id: int, client_id: str, seq: int, admin_id: str, action: str,
                    details: dict[str, Any], previous_value: str | None, new_value: str | None,
                    created_at: datetime) -> bytes:
    """The bytes an entry's hash covers: JSON, sorted keys, no spaces, ASCII only."""
    return _CANONICAL_JSON.encode(
        {
            "action": action,
            "adminId": admin_id,
            "clientId": client_id,
            "createdAt": iso_utc(created_at),
            "details": details,
            "id": entry_id,
            "newValue": new_value,
            "previousValue": previous_value,
            "seq": seq,
        }
    ).encode("ascii")


def chain_hash(secret: bytes, previous_hash: str, canonical: bytes) -> str:
    # UTF-8 equals ASCII for a hex hash; it also takes whatever a tampered row holds.
    return hmac.digest(secret, previous_hash.encode("utf-8") + canonical, "sha256").hex()


def to_milliseconds(moment: datetime) -> datetime:
    """The instant as the encoding writes it, so nothing stored escapes the hash."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


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
    # unknown key, no such client
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


@dataclass
class Verification:
    entries: int = 0
    clients: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.failures


_heads, _entries = AuditHead.__table__, CreditAuditLog.__table__
_ENTRY_COLUMNS = ("id", "client_id", "seq", "admin_id", "action", "details", "previous_value", "new_value",
                  "created_at", "previous_hash", "hash", "key_id")
# Parameters named entry_<column>, apart from every other write's (see AuditTrail.append).
_INSERT_ENTRY = insert(_entries).values(
    {name: bindparam(f"entry_{name}", type_=_entries.c[name].type) for name in _ENTRY_COLUMNS})
_ADVANCE_HEAD = (
    update(_heads).where(_heads.c.client_id == bindparam("entry_client_id"))
    .values(entry_count=bindparam("entry_seq"), last_entry_id=bindparam("entry_id"), hash=bindparam("entry_hash"),
            updated_at=bindparam("entry_created_at", type_=_heads.c.updated_at.type))
)


@functools.cache
def locked_head(dialect: str) -> Select:
    """The head, locked, with the id the next entry gets: PostgreSQL's sequence, or (SQLite, whose
    write transactions are serial) one past the largest id.

    A caller may add columns and outer joins to read more in the same statement; only the
    head's row is locked. Under READ COMMITTED a statement that waited for that lock reads the
    joined rows as they were when it began, so such a caller holds the client's quota row lock
    already: then no other writer holds the head's, and the statement begins after the last
    writer committed."""
    return (select(_heads.c.entry_count, _heads.c.hash, next_id(dialect, _entries))
            .where(_heads.c.client_id == bindparam("head_client")).with_for_update(of=_heads))


@functools.cache
def _appending(writes: tuple[Executable, ...]) -> Update:
    """The writes, the entry and the head's advance as one PostgreSQL statement (data-modifying
    CTEs). The head's trigger runs after the statement, so it sees the entry it checks."""
    return _ADVANCE_HEAD.add_cte(*(write.cte(f"write_{i}") for i, write in enumerate(writes)),
                                 _INSERT_ENTRY.cte("entry"))


# The head's UPDATE would SET any of its columns a parameter is named after.
_HEAD_COLUMNS = frozenset(_heads.c.keys())


def _merged(parameter_sets: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of statements run as one. Two values for one name, or a name the head's
    UPDATE would take for one of its columns, is a bug in the caller."""
    merged: dict[str, Any] = {}
    for parameters in parameter_sets:
        for name, value in parameters.items():
            if merged.setdefault(name, value) != value:
                raise ValueError(f"parameter {name!r} has two values in one statement")
    taken = merged.keys() & _HEAD_COLUMNS
    if taken:
        raise ValueError(f"parameters {sorted(taken)} are named after audit_heads columns")
    return merged


class AuditTrail:
    def __init__(self, session: Session, keys: AuditKeys):
        self.session = session
        self.keys = keys

    # ---- writing (inside the caller's transaction) ---------------------------

    def start(self, client_id: str, now: datetime) -> None:
        """The head of a new client's empty chain."""
        self.session.add(AuditHead(client_id=client_id, entry_count=0, last_entry_id=None,
                                   hash=GENESIS, updated_at=to_milliseconds(now)))

    def head(self, client_id: str, statement: Select | None = None, **parameters: Any) -> Row:
        """The client's head, locked, with the next entry's id: locked_head, or a statement built
        on it (with its other parameters)."""
        connection = self.session.connection()
        statement = locked_head(connection.dialect.name) if statement is None else statement
        head = connection.execute(statement, {"head_client": client_id, **parameters}).first()
        if head is None:  # every client gets one when created: its chain has been tampered with
            raise RuntimeError(f"client {client_id!r} has no audit head")
        return head

    def append(self, client_id: str, actor: str, action: str, details: dict[str, Any],
               previous_value: str | None, new_value: str | None, now: datetime, *,
               head: Sequence | None = None, writes: Iterable[tuple[Executable, dict[str, Any]]] = ()) -> int:
        """Add an entry at the end of the client's chain and advance its head; returns its id.

        The head row is locked (locked_head), so appends to one client are serial even for a
        caller that forgot the quota lock; a caller that read it already (head, with a statement
        built on locked_head) passes that row as head. The id is taken with the lock because
        the hash covers it and the row can never be updated afterwards.

        writes are the change's own statements with their parameters. On PostgreSQL they run
        with the entry and the head's advance as one statement (one round trip); elsewhere one
        after the other, in the caller's transaction either way.
        """
        connection = self.session.connection()
        dialect = connection.dialect.name
        if head is None:
            head = self.head(client_id)
        entry_count, previous_hash, entry_id = head[:3]
        created_at = to_milliseconds(now)
        seq = entry_count + 1
        key_id = self.keys.signing_id
        entry_hash = chain_hash(self.keys.secrets[key_id], previous_hash, canonical_entry(
            entry_id, client_id, seq, actor, action, details, previous_value, new_value, created_at))
        entry = {
            "entry_id": entry_id, "entry_client_id": client_id, "entry_seq": seq, "entry_admin_id": actor,
            "entry_action": action, "entry_details": details, "entry_previous_value": previous_value,
            "entry_new_value": new_value, "entry_created_at": created_at, "entry_previous_hash": previous_hash,
            "entry_hash": entry_hash, "entry_key_id": key_id,
        }
        writes = tuple(writes)
        if dialect == "postgresql":
            connection.execute(_appending(tuple(statement for statement, _ in writes)),
                               _merged([*(parameters for _, parameters in writes), entry]))
        else:
            for statement, parameters in writes:
                connection.execute(statement, parameters)
            connection.execute(_INSERT_ENTRY, entry)
            connection.execute(_ADVANCE_HEAD, entry)
        return entry_id

    # ---- reading -------------------------------------------------------------

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
        result = Verification(clients=len(clients))
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
                try:
                    details = _decode_json(details_json)
                except ValueError:  # only a hand-edited row holds text that is not JSON
                    details = details_json
                canonical = canonical_entry(entry_id, client, seq, admin_id, action, details,
                                            previous_value, new_value, created_at)
                authentic = chain_hash(secret, previous_hash, canonical) == stored_hash
                expected = chain.count + 1
                if authentic and seq == expected and previous_hash == chain.hash:
                    chain.count, chain.hash, chain.last_id = seq, stored_hash, entry_id
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

        if client_id is not None and not clients and client_id not in anchors:
            fail(client_id, None, "no such client", "there is no client with this id")
        for client in sorted(clients | chains.keys() | anchors.keys()):
            if client not in failed:
                self._check_head(client, chains.get(client, _Chain()), heads.get(client),
                                 anchors.get(client), client in clients, fail)
        result.failures = [failed[client] for client in sorted(failed)]
        return result

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
        """The recomputed chain against the stored head, then against the anchor if any."""
        if anchor is not None and not exists:
            fail(client, None, "rolled back",
                 f"the anchor records {anchor.entry_count} entries but the client no longer exists")
            return
        ends = f"entry {chain.last_id} (#{chain.count})" if chain.last_id else "the start (no entries)"
        if head is None:
            fail(client, chain.last_id, "head mismatch", f"the client has no stored head; its chain ends at {ends}")
            return
        if chain.count < head.entry_count:
            fail(client, chain.last_id, "newest entries missing",
                 f"the chain ends at {ends} but the stored head counts {head.entry_count} entries "
                 f"ending at entry {head.last_entry_id}")
        elif (chain.count, chain.hash, chain.last_id) != (head.entry_count, head.hash, head.last_entry_id):
            fail(client, chain.last_id, "head mismatch",
                 f"the chain ends at {ends} but the stored head says {head.entry_count} entries "
                 f"ending at entry {head.last_entry_id} with another hash")
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
