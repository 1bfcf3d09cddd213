"""The bytes an entry's hash covers, and the hash: a published contract (docs/audit-log.md).

hash = HMAC-SHA256(key, previous hash ‖ canonical encoding of the entry), hex. Programs that
check the log on their own reimplement exactly this, so it never changes.
"""

import hmac
import json
from datetime import datetime
from typing import Any

from ..months import iso_utc

# The "previous hash" of a client's first entry.
GENESIS = "0" * 64

# Built once: json.dumps with options builds a new encoder per call, and verify calls it a million times.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_entry(entry_id: int, client_id: str, seq: int, admin_id: str, action: str,
                    details: dict[str, Any], previous_value: str | None, new_value: str | None,
                    created_at: datetime) -> bytes:
    """JSON with sorted keys, no spaces, ASCII only."""
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
