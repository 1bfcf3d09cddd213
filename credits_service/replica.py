"""The read replica: where the heavy admin reads go while it is fresh, and why they go to the
primary when it is not.

Only reads that may be a few seconds old are routed here (the services built with
replica=True): the audit search and export, usage history, the grant and refund listings and the
clients list. Everything that writes, or must see a write just made, reads the primary.

Freshness is asked of the replica itself on the connection the reads then use: a replica that
does not answer, or is more than REPLICA_MAX_LAG_SECONDS behind, sends the reads to the primary
(counted by credits_replica_fallbacks_total). A replica that refused a connection is left alone
for RETRY_AFTER_SECONDS, so a dead one costs each worker one attempt per interval, not one per read.
"""

import threading
import time
from dataclasses import dataclass

from flask import Flask, g
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import metrics
from .database import postgresql_connect_args

RETRY_AFTER_SECONDS = 5.0
# Seconds since the replica last replayed a transaction, or 0 when it has replayed all it has
# received and its WAL receiver runs. Without one (the primary unreachable) the lag grows with
# the clock; a replica that has replayed nothing yet gives NULL: unknown, so not used. (A role
# without pg_read_all_stats sees only the receiver's pid: enough to know it runs.)
LAG_SECONDS = text("""
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN 0
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
             AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0
        ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
    END
""")


@dataclass(frozen=True)
class ReplicaState:
    status: str  # ok, lagging or unavailable
    lag_seconds: float | None = None
    error: str | None = None


class ReadReplica:
    """One per app; engine is None when DATABASE_REPLICA_URL is unset."""

    def __init__(self, engine: Engine | None, max_lag_seconds: int):
        self.engine = engine
        self.max_lag_seconds = max_lag_seconds
        self._lock = threading.Lock()
        self._refused_at: float | None = None

    def session(self) -> Session | None:
        """This request's session on the replica, or None: read from the primary."""
        if self.engine is None:
            return None
        if "replica_session" not in g:
            g.replica_session = self._fresh_session()
        return g.replica_session

    def engine_for_reads(self) -> Engine | None:
        """The replica's engine for reads that open their own session (the streamed export),
        when it is fresh now; None: read from the primary."""
        if self.engine is None:
            return None
        session = self._fresh_session()
        if session is None:
            return None
        session.close()
        return self.engine

    def state(self) -> ReplicaState:
        """How the replica is now, for /readyz; asks it even within RETRY_AFTER_SECONDS."""
        try:
            with Session(self.engine) as session:
                lag = self._lag(session)
        except SQLAlchemyError as error:
            return ReplicaState("unavailable", error=type(error).__name__)
        if lag is None or lag > self.max_lag_seconds:
            return ReplicaState("lagging", lag_seconds=lag)
        return ReplicaState("ok", lag_seconds=lag)

    def _fresh_session(self) -> Session | None:
        with self._lock:
            if self._refused_at is not None and time.monotonic() - self._refused_at < RETRY_AFTER_SECONDS:
                metrics.replica_fallback("unavailable")
                return None
        session = Session(self.engine)
        try:
            lag = self._lag(session)
        except SQLAlchemyError:
            session.close()
            with self._lock:
                self._refused_at = time.monotonic()
            metrics.replica_fallback("unavailable")
            return None
        with self._lock:
            self._refused_at = None
        if lag is None or lag > self.max_lag_seconds:
            session.close()
            metrics.replica_fallback("lagging")
            return None
        return session  # its transaction, begun by the lag check, holds the reads that follow

    @staticmethod
    def _lag(session: Session) -> float | None:
        if session.get_bind().dialect.name != "postgresql":
            session.execute(text("SELECT 1"))  # a SQLite "replica" (in tests) answers or not, and has no lag
            return 0.0
        lag = session.scalar(LAG_SECONDS)
        return None if lag is None else float(lag)


def init_app(app: Flask) -> None:
    config = app.config
    url = config["DATABASE_REPLICA_URL"]
    engine = None
    if url:
        options = {"hide_parameters": True}
        if url.startswith("postgresql"):
            options["connect_args"] = postgresql_connect_args(config)
        engine = create_engine(url, **options)
    app.extensions["read_replica"] = ReadReplica(engine, config["REPLICA_MAX_LAG_SECONDS"])

    @app.teardown_appcontext
    def _close_replica_session(_error) -> None:
        session = g.pop("replica_session", None)
        if session is not None:
            session.close()
