"""Transaction and statement helpers shared by the services."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """One write transaction: commit on success, roll back on any exception.

    On SQLite it begins IMMEDIATE (see the engine hook in create_app), so concurrent writers
    wait on the busy timeout instead of failing when a read lock cannot be upgraded.
    A read-only transaction the session began by itself (autobegin) is ended first, so the
    write starts from a fresh snapshot with its locks taken up front.
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("unflushed changes outside a write transaction")
        session.rollback()
    with session.begin():
        session.connection(execution_options={"sqlite_immediate": True})
        yield


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


def upsert(session: Session):
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
