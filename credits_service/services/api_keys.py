"""API keys: issued once, stored only as SHA-256 hashes, expiring and revocable."""

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..models import ApiKey
from ..transactions import write_transaction

KEY_PREFIX = "cs_"
# Roles a key's role grants, as flask-httpauth's get_user_roles reports them.
ROLE_GRANTS = {"read": ("read",), "write": ("write", "read"), "service": ("service",)}
KEY_CHECK_CACHE_SIZE = 10_000


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name is what the audit log records as adminId."""

    key_id: int
    name: str
    role: str

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLE_GRANTS[self.role]


@dataclass(frozen=True)
class KeyCheck:
    principal: Principal | None
    failure: str | None = None  # why a key was refused, for the security log
    reason: str | None = None  # the same, as one of metrics.AUTH_FAILURE_REASONS


@dataclass(frozen=True)
class _Lookup:
    """What the database said of a key: its principal and expiry, or why it was refused."""

    principal: Principal | None
    expires_at: datetime | None
    refused: KeyCheck | None
    looked_up_at: float  # time.monotonic()


class KeyCheckCache:
    """What the database said of each key in the last `seconds`, by hash; one per app.

    Refusals are kept as briefly as valid keys, so a storm of bad keys costs one lookup each per
    interval, not one per request. A revocation made elsewhere (another worker, another
    instance, the CLI) takes effect within `seconds`; expiry is checked on every request against
    the stored expiry, so it takes effect at once. A new key cannot have been refused before:
    it works at once.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._lookups: dict[str, _Lookup] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> _Lookup | None:
        found = self._lookups.get(key_hash)
        if found is not None and time.monotonic() - found.looked_up_at < self.seconds:
            return found
        return None

    def put(self, key_hash: str, lookup: _Lookup) -> None:
        with self._lock:
            if len(self._lookups) >= KEY_CHECK_CACHE_SIZE:
                self._lookups.clear()
            self._lookups[key_hash] = lookup

    def clear(self) -> None:
        with self._lock:
            self._lookups.clear()


class ApiKeys:
    def __init__(self, session: Session, clock, cache: KeyCheckCache):
        self.session = session
        self.clock = clock
        self.cache = cache

    def create(self, name: str, role: str, expires_in_days: int | None = None) -> str:
        """Issue a key and return it; this is the only time it exists in the clear."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
        with write_transaction(self.session):
            self.session.add(
                ApiKey(name=name, role=role, key_hash=hash_key(key), created_at=now, expires_at=expires_at)
            )
        return key

    def list(self) -> list[ApiKey]:
        return list(self.session.scalars(select(ApiKey).order_by(ApiKey.id)))

    def exist(self) -> bool:
        return self.session.scalar(select(ApiKey.id).limit(1)) is not None

    def revoke(self, id_or_name: str) -> int:
        """Revoke the key with this id, or every key with this name; returns how many."""
        match = ApiKey.name == id_or_name
        if id_or_name.isdigit():
            match = or_(match, ApiKey.id == int(id_or_name))
        with write_transaction(self.session):
            found = self.session.scalars(select(ApiKey.id).where(match)).all()
            if not found:
                raise NotFound(f"No API key has the id or name {id_or_name!r}.")
            self.session.execute(
                update(ApiKey).where(match, ApiKey.revoked_at.is_(None)).values(revoked_at=self.clock())
            )
        # At once in this process; other processes see it when their cached check runs out.
        self.cache.clear()
        return len(found)

    def check(self, key: str) -> KeyCheck:
        if not key:
            return KeyCheck(None, "missing key", "missing")
        key_hash = hash_key(key)
        lookup = self.cache.get(key_hash)
        if lookup is None:
            lookup = self._look_up(key_hash)
            self.cache.put(key_hash, lookup)
        if lookup.refused is not None:
            return lookup.refused
        principal = lookup.principal
        if lookup.expires_at is not None and lookup.expires_at <= self.clock():
            return KeyCheck(None, f"expired key id={principal.key_id} name={principal.name}", "expired")
        return KeyCheck(principal)

    def _look_up(self, key_hash: str) -> _Lookup:
        found = self.session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.revoked_at, ApiKey.expires_at)
            .where(ApiKey.key_hash == key_hash)
        ).first()
        now = time.monotonic()
        if found is None:
            return _Lookup(None, None, KeyCheck(None, "unknown key", "unknown"), now)
        if found.revoked_at is not None:
            return _Lookup(None, None, KeyCheck(None, f"revoked key id={found.id} name={found.name}", "revoked"), now)
        return _Lookup(Principal(found.id, found.name, found.role), found.expires_at, None, now)


def is_expired(key: ApiKey, now: datetime) -> bool:
    return key.expires_at is not None and key.expires_at <= now
