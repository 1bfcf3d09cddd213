"""Transaction and statement helpers shared by the services."""

from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Sequence, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

AUTOCOMMIT = "AUTOCOMMIT"
# A database's engine -> an engine of the same database whose connections stay in autocommit.
_autocommit_engines: "WeakKeyDictionary[Engine, Engine]" = WeakKeyDictionary()


def use_autocommit_engine(engine: Engine, autocommit_engine: Engine) -> None:
    """Let autocommit_connection borrow from autocommit_engine (same database, connections made
    with isolation_level=AUTOCOMMIT) for sessions of engine. Its connections stay in autocommit:
    switching one of engine's own into autocommit and back took six driver calls per checkout,
    about 3 % of a quota-status request's instructions."""
    if autocommit_engine.url != engine.url:
        raise ValueError("an autocommit engine must reach the same database as the engine it serves")
    _autocommit_engines[engine] = autocommit_engine


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """One write transaction: commit on success, roll back on any exception.

    On SQLite it begins IMMEDIATE (see the engine hook in create_app), so concurrent writers
    wait on the busy timeout instead of failing when a read lock cannot be upgraded; a read
    transaction the session began by itself (autobegin, e.g. the key check) is ended first.
    Under READ COMMITTED (PostgreSQL's default) every statement reads the latest committed
    data and locks are taken by the statements themselves, so such a read transaction simply
    goes on as the write one: no ROLLBACK, no second BEGIN, one connection for the request.
    Entities it loaded are expired, so the write reads them afresh.
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("unflushed changes outside a write transaction")
        if session.get_transaction().is_active and _statements_read_latest(session):
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


def _statements_read_latest(session: Session) -> bool:
    """The session's transaction runs at the database's default level, and that is READ COMMITTED
    (not, say, the REPEATABLE READ of a snapshot_transaction)."""
    connection = session.connection()
    return (_reads_latest_by_default(connection)
            and connection.get_execution_options().get("isolation_level") is None)


@contextmanager
def read_connection(session: Session) -> Iterator[Connection]:
    """A connection for a read whose statements each need the latest committed data, no more.

    On PostgreSQL under READ COMMITTED that is what every statement in a transaction gets
    anyway, so the read runs outside one (autocommit_connection): no BEGIN and no ROLLBACK
    round trips. A transaction the session already has (a key check that asked the database)
    goes on as it is; on SQLite the read is a transaction of the session, as every read there is.
    """
    with autocommit_connection(session) as connection:
        yield connection or session.connection()


@contextmanager
def autocommit_connection(session: Session) -> Iterator[Connection | None]:
    """A pooled connection of the session's database outside any transaction, where one statement
    is one transaction, for the statements run inside the with block; None where that is not how
    this database is used (SQLite, another isolation level, an engine with no autocommit
    sibling) or the session already has a transaction going, which the caller then goes on with.

    The connection comes from the engine's autocommit sibling (use_autocommit_engine, as
    create_app registers on PostgreSQL), not from the session: it is checked out for these
    statements and back in the pool when the block ends, and the session, which has no
    transaction, takes no part (its transaction bookkeeping would cost more than the statement's
    own Python). For a write that is one statement: it commits by itself, all of it or nothing,
    with the locks it takes held only while it runs.
    """
    bind = None if session.in_transaction() else session.get_bind()
    # A session bound to a connection (an outer transaction it joins) goes on in that transaction.
    sibling = None
    if isinstance(bind, Engine) and _reads_latest_by_default(bind):
        sibling = _autocommit_engines.get(bind)
    if sibling is None:
        yield None
        return
    with sibling.connect() as connection:
        yield connection


def _reads_latest_by_default(bind: Engine | Connection) -> bool:
    dialect = bind.dialect
    # The level is known once the engine has connected; until then, take the session's way.
    return dialect.name == "postgresql" and getattr(dialect, "default_isolation_level", None) == "READ COMMITTED"


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
    """The session's dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    return upsert_for(session.get_bind().dialect.name)


def upsert_for(dialect: str):
    """The INSERT with on_conflict_* of the dialect named (statements built once per dialect)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def next_id(dialect: str, table: Table):
    """The id a row inserted into table next gets, as an expression to read before the INSERT:
    PostgreSQL's sequence of the table's id, or (SQLite, whose write transactions are serial)
    one past the largest id."""
    if dialect == "postgresql":
        return Sequence(f"{table.name}_id_seq").next_value()
    return select(func.coalesce(func.max(table.c.id), 0) + 1).scalar_subquery()
