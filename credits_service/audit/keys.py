"""The audit chain's HMAC keys: AUDIT_HMAC_KEYS, else the development key file `make run` makes.

`python -m credits_service.audit.keys` makes that file when it is missing (`make run` calls it
before anything loads the app, which refuses to start without a key).
"""

import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Flask

from ..config import ConfigurationError, utc_now

KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
RETIREMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MIN_SECRET_LENGTH = 32
DEV_KEY_FILE = "audit-hmac.key"


@dataclass(frozen=True)
class AuditKeys:
    """HMAC keys by id, newest first: the first signs new entries, the others still verify the
    entries they signed. A key may carry a retirement date (`id@YYYY-MM-DD:secret`): an entry
    signed with it at or after that day's start (UTC) does not verify."""

    signing_id: str
    secrets: dict[str, bytes]
    retired: dict[str, datetime] = field(default_factory=dict)

    def is_older(self, key_id: str, than: str) -> bool:
        """Whether key_id comes after `than` in AUDIT_HMAC_KEYS (newest first)."""
        order = list(self.secrets)
        return order.index(key_id) > order.index(than)

    @classmethod
    def parse(cls, value: str, source: str = "AUDIT_HMAC_KEYS") -> "AuditKeys":
        """`id:secret` pairs separated by commas, e.g. `2026-11:...,2026-05:...`; source names where
        they come from (the variable, or the development key file).

        A refusal names the entry by its position and never shows any of it: a mistyped entry
        may well be a secret, or the tail of one that contained a comma."""
        pairs = value.split(",")
        keys: dict[str, bytes] = {}
        retired: dict[str, datetime] = {}
        for position, pair in enumerate(pairs, start=1):
            name, colon, secret = pair.strip().partition(":")
            key_id, at, retirement = name.partition("@")
            entry = f"entry {position} of {len(pairs)}"
            if not colon:
                problem = "is not an id:secret pair (a secret cannot contain ',')"
            elif at and not RETIREMENT.fullmatch(retirement):
                problem = "has a retirement date that is not YYYY-MM-DD (id@YYYY-MM-DD:secret)"
            elif not KEY_ID.fullmatch(key_id):
                problem = "has an id that is not 1 to 32 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            elif len(secret) < MIN_SECRET_LENGTH:
                problem = f"(key {key_id!r}) has a secret shorter than {MIN_SECRET_LENGTH} characters"
            elif key_id in keys:
                problem = f"names key {key_id!r} a second time"
            else:
                keys[key_id] = secret.encode("utf-8")
                if at:
                    retired[key_id] = datetime.strptime(retirement, "%Y-%m-%d").replace(tzinfo=UTC)
                continue
            raise ConfigurationError(
                f"Invalid configuration: {source} {entry} {problem} (expected comma-separated "
                "id:secret pairs, the first signing new entries)."
            )
        return cls(next(iter(keys)), keys, retired)


def dev_key_path(app: Flask) -> str:
    return os.path.join(app.instance_path, DEV_KEY_FILE)


def load_audit_keys(app: Flask) -> AuditKeys:
    """The app's keys; ConfigurationError when there are none, they are malformed, or the one
    that would sign new entries is retired."""
    value = app.config.get("AUDIT_HMAC_KEYS")
    if value:
        keys = AuditKeys.parse(value)
    else:
        path = dev_key_path(app)
        if not os.path.exists(path):
            raise ConfigurationError(
                "Invalid configuration: AUDIT_HMAC_KEYS is not set: give it id:secret pairs (secrets of 32+ "
                f"characters) to sign the audit log, or run `make run` for a development key in {path}."
            )
        with open(path, encoding="utf-8") as file:
            keys = AuditKeys.parse(file.read().strip(), source=path)
    retired = keys.retired.get(keys.signing_id)
    if retired is not None and retired <= app.config.get("CLOCK", utc_now)():
        raise ConfigurationError(
            f"Invalid configuration: AUDIT_HMAC_KEYS entry 1 (key {keys.signing_id!r}) was retired on "
            f"{retired:%Y-%m-%d}, but the first key signs new entries: put a current key first."
        )
    return keys


def make_dev_key(path: str) -> bool:
    """Write a fresh development key to path unless one is there; True when one was made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"dev:{secrets.token_hex(32)}\n")
    return True


def main() -> None:
    if os.environ.get("AUDIT_HMAC_KEYS"):
        print("AUDIT_HMAC_KEYS is set: no development audit key needed.")
        return
    # The app's instance folder: the same import name gives the same path.
    key_file = dev_key_path(Flask("credits_service"))
    if make_dev_key(key_file):
        print(f"Made a development audit log key in {key_file} (set AUDIT_HMAC_KEYS in production).")


if __name__ == "__main__":
    main()
