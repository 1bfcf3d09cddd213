"""The audit chain's HMAC keys: AUDIT_HMAC_KEYS, else the development key file `make run` makes.

`python -m credits_service.audit.keys` makes that file when it is missing (`make run` calls it
before anything loads the app, which refuses to start without a key).
"""

import os
import re
import secrets
from dataclasses import dataclass

from flask import Flask

from ..config import ConfigurationError

KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
MIN_SECRET_LENGTH = 32
DEV_KEY_FILE = "audit-hmac.key"


@dataclass(frozen=True)
class AuditKeys:
    """HMAC keys by id; the first one given signs new entries, the others still verify."""

    signing_id: str
    secrets: dict[str, bytes]

    @classmethod
    def parse(cls, value: str, source: str = "AUDIT_HMAC_KEYS") -> "AuditKeys":
        """`id:secret` pairs separated by commas, e.g. `2026-11:...,2026-05:...`; source names where
        they come from (the variable, or the development key file).

        A refusal names the entry by its position and never shows any of it: a mistyped entry
        may well be a secret, or the tail of one that contained a comma."""
        pairs = value.split(",")
        keys: dict[str, bytes] = {}
        for position, pair in enumerate(pairs, start=1):
            key_id, colon, secret = pair.strip().partition(":")
            entry = f"entry {position} of {len(pairs)}"
            if not colon:
                problem = "is not an id:secret pair (a secret cannot contain ',')"
            elif not KEY_ID.fullmatch(key_id):
                problem = "has an id that is not 1 to 32 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            elif len(secret) < MIN_SECRET_LENGTH:
                problem = f"(key {key_id!r}) has a secret shorter than {MIN_SECRET_LENGTH} characters"
            elif key_id in keys:
                problem = f"names key {key_id!r} a second time"
            else:
                keys[key_id] = secret.encode("utf-8")
                continue
            raise ConfigurationError(
                f"Invalid configuration: {source} {entry} {problem} (expected comma-separated "
                "id:secret pairs, the first signing new entries)."
            )
        return cls(next(iter(keys)), keys)


def dev_key_path(app: Flask) -> str:
    return os.path.join(app.instance_path, DEV_KEY_FILE)


def load_audit_keys(app: Flask) -> AuditKeys:
    """The app's keys; ConfigurationError when there are none or they are malformed."""
    value = app.config.get("AUDIT_HMAC_KEYS")
    if value:
        return AuditKeys.parse(value)
    path = dev_key_path(app)
    if not os.path.exists(path):
        raise ConfigurationError(
            "AUDIT_HMAC_KEYS is not set: give it id:secret pairs (secrets of 32+ characters) "
            f"to sign the audit log, or run `make run` for a development key in {path}"
        )
    with open(path, encoding="utf-8") as file:
        return AuditKeys.parse(file.read().strip(), source=path)


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
