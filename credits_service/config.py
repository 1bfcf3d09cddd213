"""Configuration read from the environment. The README has one table listing every variable."""

import os
from datetime import UTC, datetime


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def utc_now() -> datetime:
    return datetime.now(UTC)


class Config:
    # None means "SQLite under the instance folder"; create_app fills it in.
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL")
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    SQLITE_BUSY_TIMEOUT_MS = int(os.environ.get("SQLITE_BUSY_TIMEOUT_MS", "30000"))

    # Bodies up to 64 KiB; Werkzeug answers 413 above that.
    MAX_CONTENT_LENGTH = 65536

    RATELIMIT_ENABLED = _flag("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_HEADERS_ENABLED = True
    # Limits protect the service; they are not part of its correctness. When their storage
    # (Redis) is down, requests go through unlimited and the error is logged.
    RATELIMIT_SWALLOW_ERRORS = _flag("RATELIMIT_SWALLOW_ERRORS", True)
    RATE_LIMIT_READ = os.environ.get("RATE_LIMIT_READ", "200/minute")
    RATE_LIMIT_WRITE = os.environ.get("RATE_LIMIT_WRITE", "50/minute")
    RATE_LIMIT_SERVICE = os.environ.get("RATE_LIMIT_SERVICE", "6000/minute")

    IDEMPOTENCY_TTL_HOURS = int(os.environ.get("IDEMPOTENCY_TTL_HOURS", "24"))
    # A request that claimed a key and then died (killed worker) frees the key after this long.
    IDEMPOTENCY_LOCK_SECONDS = int(os.environ.get("IDEMPOTENCY_LOCK_SECONDS", "60"))

    # id:secret pairs, comma-separated; the first signs new audit entries, the others still
    # verify. Unset: the development key in instance/audit-hmac.key (made by `make run`).
    AUDIT_HMAC_KEYS = os.environ.get("AUDIT_HMAC_KEYS")

    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    LOG_JSON = _flag("LOG_JSON", True)

    API_TITLE = "credits-service"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"

    # The clock the service reads; tests replace it to cross month boundaries.
    CLOCK = staticmethod(utc_now)


class TestConfig(Config):
    TESTING = True
    RATELIMIT_ENABLED = False
    RATELIMIT_STORAGE_URI = "memory://"
    LOG_JSON = False
    AUDIT_HMAC_KEYS = "test:test-audit-key-not-for-production-0123456789"
