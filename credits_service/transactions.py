"""How services talk to the database: one owner per transaction, and the helpers they share.

A service method that changes something wraps the change, its audit entry and any stored
Idempotency-Key answer in one write_transaction: all of it commits, or none of it. A read
whose statement stands alone runs on an autocommit connection of the same engine on
PostgreSQL (no BEGIN/ROLLBACK round trips); everything else is a transaction of the session.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """One write transaction: commit on success, roll back on any exception.

    On SQLite it begins IMMEDIATE (database.py's begin hook), so concurrent writers wait on
    the busy timeout instead of failing when a read lock cannot be upgraded; a read
    transaction the session began by itself (autobegin, e.g. the key check) is ended first.
    Under READ COMMITTED (PostgreSQL's default) every statement reads the latest committed
    data and takes its own locks, so such a read transaction simply goes on as the write one,
    with the entities it loaded expired so the write reads them afresh.
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("unflushed changes outside a write transaction")
        if session.get_transaction().is_active and _reads_latest(session.connection()):
            session.expire_all()
        else:
            session.rollback()
    if not session.in_transaction():
        session.begin()
        session.connection(execution_options={"sqlite_immediate": True})
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    session.commit()


def _reads_latest(connection: Connection) -> bool:
    """PostgreSQL at its default READ COMMITTED (not a snapshot_transaction's REPEATABLE READ)."""
    return (connection.dialect.name == "postgresql"
            and connection.get_execution_options().get("isolation_level") is None)


@contextmanager
def standalone_statements(session: Session) -> Iterator[Connection | None]:
    """A connection on which each statement is its own transaction, or None where the caller
    should use the session's transaction instead (SQLite, or the session has one going).

    On PostgreSQL this is a pooled connection of the session's engine with SQLAlchemy's
    AUTOCOMMIT execution option, given back when the block ends: a one-statement read or
    write then costs one round trip, not three (BEGIN, the statement, COMMIT/ROLLBACK).
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or session.in_transaction():
        yield None
        return
    with bind.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def read_connection(session: Session) -> Iterator[Connection]:
    """A connection for reads whose statements each need the latest committed data, no more:
    standalone_statements where it applies, else the session's transaction."""
    with standalone_statements(session) as connection:
        yield connection or session.connection()


def snapshot_transaction(session: Session) -> None:
    """Begin a read transaction that sees one snapshot throughout, however many statements it runs.

    PostgreSQL's default (READ COMMITTED) takes a new snapshot per statement; REPEATABLE READ
    keeps the first. A SQLite read transaction in WAL mode keeps its snapshot already.
    The caller ends it (rollback).
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("unflushed changes outside a write transaction")
        session.rollback()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    else:
        session.connection()


T = TypeVar("T")


def batches_alone(session: Session, lock: int, batch: Callable[[], T]) -> Iterator[T]:
    """Upkeep in short transactions: batch() in one write transaction after another, each result
    yielded once its transaction committed, until the caller stops. On PostgreSQL each transaction
    first takes the advisory lock `lock` (a fixed 64-bit number per job), transaction-level so
    nothing outlives it behind a pooler: one instance at a time does the job, and one that finds
    the lock taken stops, leaving the work to the other."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    while True:
        with write_transaction(session):
            if postgresql and not session.scalar(select(func.pg_try_advisory_xact_lock(lock))):
                return
            result = batch()
        yield result


def upsert_for(dialect: str):
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
