"""Configuration: every setting the environment may change, read and checked when the app is created.

SETTINGS is the one list of environment variables (docs/configuration.md mirrors
it); a new variable is one line there. A bad value stops the start with one line per bad
variable, naming it, its value and what is expected, instead of a traceback from deep inside
whichever library would trip over it first.
"""

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlparse

import marshmallow as ma
from environs import Env, EnvValidationError
from limits import parse_many
from limits.storage import SCHEMES
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

# gunicorn stops (instead of booting the worker again, forever) only when a worker exits with
# its "App failed to load" status, 4; `flask` commands exit with it too.
EXIT_INVALID_CONFIGURATION = 4

DATABASES = ("sqlite", "postgresql")
# Flask-Limiter is synchronous: the async+ storages of the limits library do not serve it.
RATE_LIMIT_SCHEMES = sorted(scheme for scheme in SCHEMES if not scheme.startswith("async+"))
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What sits between the service and PostgreSQL: nothing, or a pooler in transaction mode.
POOLERS = ("none", "pgbouncer")


def utc_now() -> datetime:
    return datetime.now(UTC)


# Fields that read one variable each. Their messages complete "NAME='value' ...".


class PositiveInt(ma.fields.Int):
    MINIMUM = 1
    default_error_messages = {"invalid": "is not an integer", "too_small": "is not a positive integer"}

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        number = super()._deserialize(value, attr, data, **kwargs)
        if number < self.MINIMUM:
            raise self.make_error("too_small")
        return number


class NonNegativeInt(PositiveInt):
    MINIMUM = 0
    default_error_messages = {"too_small": "is negative"}


class Flag(ma.fields.Bool):
    default_error_messages = {"invalid": "is not a boolean"}

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        return super()._deserialize(value.strip().lower(), attr, data, **kwargs)


class Choice(ma.fields.Str):
    """One of CHOICES, in any case, spaces around it ignored; given back as CHOICES spell it."""

    CHOICES: tuple[str, ...] = ()
    WHAT = "one of the choices"

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        given = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        for choice in self.CHOICES:
            if choice.lower() == given:
                return choice
        raise ma.ValidationError(f"is not {self.WHAT}")


class LogLevel(Choice):
    CHOICES, WHAT = LOG_LEVELS, "a log level"


class Pooler(Choice):
    CHOICES, WHAT = POOLERS, "a pooler the service knows"


class RateLimit(ma.fields.Str):
    def _deserialize(self, value, attr, data, **kwargs) -> str:
        limit = super()._deserialize(value, attr, data, **kwargs)
        try:
            parse_many(limit)
        except ValueError:
            raise ma.ValidationError("is not a rate limit Flask-Limiter understands") from None
        return limit


class RateLimitStorage(ma.fields.Str):
    """Only the scheme is checked: the storage may well be down at start, which is not fatal."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        uri = super()._deserialize(value, attr, data, **kwargs)
        scheme = urlparse(uri).scheme
        if scheme not in RATE_LIMIT_SCHEMES:
            raise ma.ValidationError("has a scheme the limits library does not know")
        # A list names every module the storage needs; a mapping, clients of which one will do.
        needed = SCHEMES[scheme].DEPENDENCIES
        installed = [find_spec(module.partition(".")[0]) is not None for module in needed]
        if not (all(installed) if isinstance(needed, list) else any(installed)):
            raise ma.ValidationError(f"needs the Python package {' or '.join(needed)}, which is not installed")
        return uri


class DatabaseUrl(ma.fields.Str):
    """A SQLAlchemy URL for SQLite or PostgreSQL whose driver is installed; empty means the default."""

    def _deserialize(self, value, attr, data, **kwargs) -> str | None:
        given = super()._deserialize(value, attr, data, **kwargs).strip()
        if not given:
            return None
        # psycopg 3 is the PostgreSQL driver installed; accept the plain schemes too.
        normalized = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", given)
        try:
            url = make_url(normalized)
        except ArgumentError:
            raise ma.ValidationError("is not a database URL") from None
        if url.get_backend_name() not in DATABASES:
            raise ma.ValidationError(f"names the database {url.get_backend_name()!r}, which is neither sqlite nor postgresql")
        try:
            dialect = url.get_dialect()
            dialect.import_dbapi()
        except (NoSuchModuleError, ImportError):
            raise ma.ValidationError(f"names the driver {url.drivername!r}, which is not installed") from None
        if dialect.is_async:
            raise ma.ValidationError(f"names the asyncio driver {url.drivername!r}; the service needs a synchronous one")
        return normalized


class Token(ma.fields.Str):
    """A bearer token: long enough not to be guessed, and sendable in a header as it is."""

    MIN_LENGTH = 16

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        token = super()._deserialize(value, attr, data, **kwargs)
        if len(token) < self.MIN_LENGTH:
            raise ma.ValidationError(f"is shorter than {self.MIN_LENGTH} characters")
        if not re.fullmatch(r"[\x21-\x7e]+", token):
            raise ma.ValidationError("holds characters other than printable ASCII without spaces")
        return token


class IntegerList(ma.fields.Str):
    """Comma-separated integers, each within [MINIMUM, MAXIMUM]; a tuple, in the order given."""

    MINIMUM, MAXIMUM = 1, None
    WHAT = "positive integers"

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[int, ...]:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            numbers = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise ma.ValidationError(f"is not comma-separated {self.WHAT}") from None
        if any(n < self.MINIMUM or (self.MAXIMUM is not None and n > self.MAXIMUM) for n in numbers):
            raise ma.ValidationError(f"is not comma-separated {self.WHAT}")
        return numbers


class Percentages(IntegerList):
    MINIMUM, MAXIMUM = 1, 1000
    WHAT = "percentages from 1 to 1000"

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[int, ...]:
        return tuple(sorted(set(super()._deserialize(value, attr, data, **kwargs))))


PARSERS: dict[str, type[ma.fields.Field]] = {
    "token": Token,
    "seconds_list": IntegerList,
    "percentages": Percentages,
    "positive_int": PositiveInt,
    "non_negative_int": NonNegativeInt,
    "flag": Flag,
    "log_level_name": LogLevel,
    "pooler": Pooler,
    "rate_limit": RateLimit,
    "rate_limit_storage": RateLimitStorage,
    "database_url": DatabaseUrl,
}

BOOLEAN = "true or false"
RATE_LIMIT = 'e.g. "200/minute" or "10/second;500/hour"'


@dataclass(frozen=True)
class Setting:
    name: str  # the environment variable
    parser: str  # an Env parser: a key of PARSERS, or one environs has (str, path, ...)
    default: Any
    expected: str  # completes "(expected ...)" in the error line
    key: str = ""  # the Flask config key, when it is not the variable's name
    secret_in_url: bool = False  # the value may carry a password, hidden in the error line
    secret: bool = False  # the value is a secret: the error line never shows it

    @property
    def config_key(self) -> str:
        return self.key or self.name

    def refusal(self, value: str, messages: list[str]) -> str:
        if self.secret:
            shown = "(hidden)"
        elif self.secret_in_url:
            # Everything between the scheme and the host's "@" (the last one), a password with
            # "/" or "@" in it included.
            shown = repr(re.sub(r"(//[^/@:]*:).*@", r"\1***@", value))
        else:
            shown = repr(value)
        return f"Invalid configuration: {self.name}={shown} {' and '.join(messages)} (expected {self.expected})."


SETTINGS = (
    # None means "SQLite under the instance folder"; create_app fills it in.
    Setting("DATABASE_URL", "database_url", None,
            '"postgresql+psycopg://user:pass@host/db" or "sqlite:////path/to/credits.sqlite3"',
            key="SQLALCHEMY_DATABASE_URI", secret_in_url=True),
    # How long a PostgreSQL connection attempt may take (psycopg's minimum is 2): while the
    # database is unreachable, requests answer 503 after this instead of hanging.
    # Where `flask db upgrade` connects, as the role that owns the schema; unset: DATABASE_URL.
    # The service itself connects as DATABASE_URL's role, which needs only credits_runtime's rights.
    Setting("DATABASE_MIGRATION_URL", "database_url", None,
            '"postgresql+psycopg://owner:pass@host/db", the same database as DATABASE_URL',
            secret_in_url=True),
    # pgbouncer: DATABASE_URL goes through a pooler in transaction mode, where a server
    # connection serves another client after each transaction: nothing prepared outlives one.
    Setting("DATABASE_POOLER", "pooler", "none", f"one of {', '.join(POOLERS)}"),
    # The heavy reads (audit search and export, usage history, grant and refund listings, the
    # clients list) go to this streaming replica while it answers and is at most
    # REPLICA_MAX_LAG_SECONDS behind; otherwise to DATABASE_URL.
    Setting("DATABASE_REPLICA_URL", "database_url", None,
            '"postgresql+psycopg://user:pass@replica-host/db", a replica of DATABASE_URL\'s database',
            secret_in_url=True),
    Setting("REPLICA_MAX_LAG_SECONDS", "positive_int", 5, "seconds, at least 1, e.g. 5"),
    Setting("DATABASE_CONNECT_TIMEOUT_SECONDS", "positive_int", 2, "seconds, at least 1, e.g. 2"),
    Setting("SQLITE_BUSY_TIMEOUT_MS", "positive_int", 30000, "milliseconds, at least 1, e.g. 30000"),
    Setting("RATELIMIT_ENABLED", "flag", True, BOOLEAN),
    Setting("RATELIMIT_STORAGE_URI", "rate_limit_storage", "memory://",
            f"one of {', '.join(scheme + '://' for scheme in RATE_LIMIT_SCHEMES)}, e.g. redis://host:6379/0",
            secret_in_url=True),
    # Limits protect the service; they are not part of its correctness. When their storage
    # (Redis) is down, requests go through unlimited and the error is logged.
    Setting("RATELIMIT_SWALLOW_ERRORS", "flag", True, BOOLEAN),
    Setting("RATE_LIMIT_READ", "rate_limit", "200/minute", RATE_LIMIT),
    Setting("RATE_LIMIT_WRITE", "rate_limit", "50/minute", RATE_LIMIT),
    Setting("RATE_LIMIT_SERVICE", "rate_limit", "6000/minute", RATE_LIMIT),
    # The audit export's own budget per key, within the read one: each export reads many rows.
    Setting("RATE_LIMIT_EXPORT", "rate_limit", "10/minute", RATE_LIMIT),
    # At most this many entries per export answer; more come by following its Link: rel="next".
    Setting("EXPORT_MAX_ROWS", "positive_int", 50000, "entries, at least 1, e.g. 50000"),
    # How long a worker trusts a key it found valid before asking the database again: a
    # revocation takes effect everywhere within this (0: every request asks).
    Setting("API_KEY_CACHE_SECONDS", "non_negative_int", 2, "seconds, 0 to ask the database every time, e.g. 2"),
    Setting("IDEMPOTENCY_TTL_HOURS", "positive_int", 24, "hours, at least 1, e.g. 24"),
    # A request that claimed a key and then died (killed worker) frees the key after this long.
    Setting("IDEMPOTENCY_LOCK_SECONDS", "positive_int", 60, "seconds, at least 1, e.g. 60"),
    # Each worker deletes expired answers this often (0: never; `flask idempotency purge` still
    # does), this many rows per transaction.
    Setting("IDEMPOTENCY_PURGE_INTERVAL_SECONDS", "non_negative_int", 60, "seconds, 0 to turn it off, e.g. 60"),
    Setting("IDEMPOTENCY_PURGE_BATCH", "positive_int", 1000, "rows, at least 1, e.g. 1000"),
    # Open holds one client may have at once; past it, placing another is 409.
    Setting("HOLDS_MAX_OPEN", "positive_int", 1000, "holds, at least 1, e.g. 1000"),
    # Each worker marks lapsed holds expired this often (0: never; `flask holds sweep` still does).
    # Nothing waits for it: a hold stops counting at its expiresAt either way.
    Setting("HOLD_SWEEP_INTERVAL_SECONDS", "non_negative_int", 60, "seconds, 0 to turn it off, e.g. 60"),
    Setting("HOLD_SWEEP_BATCH", "positive_int", 1000, "holds, at least 1, e.g. 1000"),
    # Answers one key name may have stored within IDEMPOTENCY_TTL_HOURS; past it, 429.
    Setting("IDEMPOTENCY_MAX_KEYS", "positive_int", 10_000_000, "answers per key name, e.g. 10000000"),
    # id:secret pairs, comma-separated; the first signs new audit entries, the others still
    # verify (checked by audit_keys.load_audit_keys). Unset: the development key in
    # instance/audit-hmac.key, made by `make run`.
    Setting("AUDIT_HMAC_KEYS", "str", None, "id:secret pairs, comma-separated"),
    # Webhooks (flask webhooks deliver): usage.threshold_reached fires once per client, month and
    # percentage of the limit, again after usage drops below it or the limit rises above it.
    Setting("WEBHOOK_THRESHOLDS", "percentages", (80, 100), "percentages of the limit, comma-separated, e.g. 80,100"),
    # Seconds to wait after each failed attempt; past the last, the delivery is failed.
    Setting("WEBHOOK_RETRY_SCHEDULE", "seconds_list", (5, 300, 1800, 7200, 18000, 36000, 36000),
            "seconds, comma-separated, e.g. 5,300,1800,7200,18000,36000,36000"),
    Setting("WEBHOOK_TIMEOUT_SECONDS", "positive_int", 15, "seconds, at least 1, e.g. 15"),
    # Delivered and failed deliveries (and events with none left) are purged after this.
    Setting("WEBHOOK_RETENTION_HOURS", "positive_int", 168, "hours, at least 1, e.g. 168"),
    Setting("WEBHOOK_PURGE_INTERVAL_SECONDS", "non_negative_int", 3600, "seconds, 0 to turn it off, e.g. 3600"),
    # Unset: /metrics is open, as Prometheus on a private network expects; set: it needs this bearer token.
    Setting("METRICS_TOKEN", "token", None, f"a token of at least {Token.MIN_LENGTH} printable characters",
            secret=True),
    # Proxies (load balancers) in front of the service whose X-Forwarded-For is trusted: 0 trusts none.
    Setting("TRUSTED_PROXY_HOPS", "non_negative_int", 0, "a count of proxies, 0 when clients connect directly"),
    # Refused keys are logged as one line per reason and interval, not a line each.
    Setting("AUTH_FAILURE_LOG_SECONDS", "positive_int", 60, "seconds, at least 1, e.g. 60"),
    Setting("LOG_LEVEL", "log_level_name", "INFO", f"one of {', '.join(LOG_LEVELS)}"),
    Setting("LOG_JSON", "flag", True, BOOLEAN),
)


class ConfigurationError(Exception):
    """The app cannot start: one line per bad setting, each saying what to set."""


def _with_setting_defaults(cls):
    """Give the class every setting's default, so a config class built in code (tests) has them all."""
    for setting in SETTINGS:
        setattr(cls, setting.config_key, setting.default)
    return cls


@_with_setting_defaults
class Config:
    # A database error's log line never carries the statement's values (keys' hashes, reasons).
    # Idle connections are pinged at checkout (credits_service/database.py), not every one.
    SQLALCHEMY_ENGINE_OPTIONS = {"hide_parameters": True}

    # Bodies up to 64 KiB; Werkzeug answers 413 above that.
    MAX_CONTENT_LENGTH = 65536

    RATELIMIT_HEADERS_ENABLED = True

    API_TITLE = "credits-service"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"

    # The clock the service reads; tests replace it to cross month boundaries.
    CLOCK = staticmethod(utc_now)

    @classmethod
    def from_environment(cls) -> type["Config"]:
        """This class with every setting the environment gives; ConfigurationError names the bad ones."""
        env = Env(eager=False)
        for name, field in PARSERS.items():
            env.add_parser_from_field(name, field)
        values = {s.config_key: getattr(env, s.parser)(s.name, s.default) for s in SETTINGS}
        try:
            env.seal()
        except EnvValidationError as error:
            raise ConfigurationError("\n".join(
                s.refusal(os.environ[s.name], error.error_messages[s.name])
                for s in SETTINGS if s.name in error.error_messages
            )) from None
        return type(cls.__name__, (cls,), values)


class TestConfig(Config):
    TESTING = True
    RATELIMIT_ENABLED = False
    RATELIMIT_STORAGE_URI = "memory://"
    LOG_JSON = False
    AUDIT_HMAC_KEYS = "test:test-audit-key-not-for-production-0123456789"


@contextmanager
def exit_when_misconfigured() -> Iterator[None]:
    """The one exit path for bad configuration, where a process starts (app.py, gunicorn.conf.py):
    the error's lines on stderr and EXIT_INVALID_CONFIGURATION, no traceback."""
    try:
        yield
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        raise SystemExit(EXIT_INVALID_CONFIGURATION) from None
