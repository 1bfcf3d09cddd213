"""Where the audit chain's HMAC keys come from: AUDIT_HMAC_KEYS, else a development key file.

`python -m credits_service.audit_dev_key` (run by `make run`) makes that file when it is missing.
"""

import os
import secrets

from flask import Flask

from .services.audit import AuditKeyError, AuditKeys

DEV_KEY_FILE = "audit-hmac.key"


class ConfigurationError(Exception):
    """The app cannot start; the message says what to set."""


def dev_key_path(app: Flask) -> str:
    return os.path.join(app.instance_path, DEV_KEY_FILE)


def load_audit_keys(app: Flask) -> AuditKeys:
    value = app.config.get("AUDIT_HMAC_KEYS")
    source = "AUDIT_HMAC_KEYS"
    if not value:
        path = dev_key_path(app)
        if not os.path.exists(path):
            raise ConfigurationError(
                "AUDIT_HMAC_KEYS is not set: give it id:secret pairs (secrets of 32+ characters) "
                f"to sign the audit log, or run `make run` for a development key in {path}"
            )
        with open(path, encoding="utf-8") as file:
            value = file.read().strip()
        source = path
    try:
        return AuditKeys.parse(value)
    except AuditKeyError as error:
        raise ConfigurationError(f"{error} (from {source})") from None


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
