"""Readiness: whether this instance can serve, as the load balancer asks it.

The database must answer. The read replica, when there is one, is reported (ok, lagging or
unavailable) but never fatal: its reads go to the primary meanwhile. The rate-limit storage (Redis) is reported too, but with
RATELIMIT_SWALLOW_ERRORS (the default) its outage only means requests go through without
limits, so it does not take the instance out of service.

Every check is bounded, so a probe never hangs on an unreachable server: on PostgreSQL by the
connect timeout (DATABASE_CONNECT_TIMEOUT_SECONDS, 2 s) and a 1 s statement timeout, on Redis
by 1 s socket timeouts. Answers name the kind of failure, never a host,
user or password.
"""

import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

CHECK_TIMEOUT_SECONDS = 1.0
# A probe storm (several balancers, short intervals) costs the database one check a second.
READINESS_CACHE_SECONDS = 1.0
REDIS_SCHEMES = ("redis://", "rediss://")


@dataclass(frozen=True)
class Check:
    ok: bool
    duration_ms: float
    error: str | None = None
    fatal: bool = True
    detail: str | None = None
    state: str | None = None  # a status other than ok/unavailable (the replica's "lagging")
    lag_seconds: float | None = None

    @property
    def status(self) -> str:
        return self.state or ("ok" if self.ok else "unavailable")


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(check.ok or not check.fatal for check in self.checks.values())

    @property
    def status(self) -> str:
        return "ok" if self.ready else "unavailable"


class HealthChecks:
    """One per app: its answer is reused for READINESS_CACHE_SECONDS, its Redis client for good."""

    def __init__(self, engine: Engine, rate_limit_storage_uri: str | None, rate_limit_errors_swallowed: bool,
                 replica=None):
        """rate_limit_storage_uri: None when rate limits are off; replica: the app's ReadReplica."""
        self.engine = engine
        self.replica = replica
        self.rate_limit_storage_uri = rate_limit_storage_uri
        self.rate_limit_errors_swallowed = rate_limit_errors_swallowed
        self._redis = None
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def readiness(self) -> Readiness:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < READINESS_CACHE_SECONDS:
                return self._last[1]
            checks = {"database": self._database()}
            if self.rate_limit_storage_uri and self.rate_limit_storage_uri.startswith(REDIS_SCHEMES):
                checks["rateLimitStorage"] = self._rate_limit_storage()
            if self.replica is not None and self.replica.engine is not None:
                checks["replica"] = self._replica()
            self._last = (time.monotonic(), Readiness(checks))
            return self._last[1]

    def _database(self) -> Check:
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    timeout_ms = int(CHECK_TIMEOUT_SECONDS * 1000)
                    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                connection.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as error:
            return Check(False, _since(started), error=type(error).__name__)
        return Check(True, _since(started))

    def _rate_limit_storage(self) -> Check:
        started = time.perf_counter()
        fatal = not self.rate_limit_errors_swallowed
        import redis  # only where the rate-limit storage is Redis: the client is large

        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.rate_limit_storage_uri,
                socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
                socket_timeout=CHECK_TIMEOUT_SECONDS,
            )
        try:
            self._redis.ping()
        except redis.RedisError as error:
            detail = (
                "Rate-limited requests fail while the rate-limit storage is down (RATELIMIT_SWALLOW_ERRORS is off)."
                if fatal
                else "Requests are served without rate limits until the rate-limit storage answers again."
            )
            return Check(False, _since(started), error=type(error).__name__, fatal=fatal, detail=detail)
        return Check(True, _since(started), fatal=fatal)


    def _replica(self) -> Check:
        """Never fatal: without the replica its reads go to the primary."""
        started = time.perf_counter()
        state = self.replica.state()
        detail = {
            "ok": None,
            "lagging": f"More than {self.replica.max_lag_seconds} s behind the primary: its reads go to the primary.",
            "unavailable": "Its reads go to the primary until it answers again.",
        }[state.status]
        return Check(state.status == "ok", _since(started), error=state.error, fatal=False, detail=detail,
                     state=state.status, lag_seconds=state.lag_seconds)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def init_app(app) -> None:
    from ..extensions import db

    with app.app_context():
        engine = db.engine
    config = app.config
    app.extensions["health_checks"] = HealthChecks(
        engine, config["RATELIMIT_STORAGE_URI"] if config["RATELIMIT_ENABLED"] else None,
        config["RATELIMIT_SWALLOW_ERRORS"], app.extensions["read_replica"],
    )
