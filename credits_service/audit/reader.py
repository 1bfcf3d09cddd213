"""Reading the audit log: one client's page, a search across clients, and a streamed export.

Everything is newest first by insertion order (the id), so entries written in the same
millisecond, or while the clock went back, keep their order; keyset paging (`before`, an
entry id) stays as fast on the millionth entry as on the first.

Why the queries look the way they do: given `client_id = 'x' ORDER BY id DESC LIMIT 50`,
PostgreSQL may walk the primary key backwards and filter, betting the client's entries are
spread evenly over the ids. For a client whose entries are all old that walks the whole
table. So the filter that narrows most (client, else admin, else a single action) is
written as a range over its one value, `col >= v AND col <= v`, and the order as
`col DESC, id DESC`: the planner cannot treat `col` as a constant and drop it from the
order, so only an index on (col, ..., id) gives the order without sorting every match,
whatever the data's shape. Both databases read the same statement the same way.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..models import AuditHead, CreditAuditLog

EXPORT_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    client_id: str | None = None
    admin_id: str | None = None
    actions: tuple[str, ...] = ()
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    @classmethod
    def of(cls, query: dict) -> "AuditFilter":
        """The filter from a validated query (schemas.AuditFilterSchema)."""
        return cls(query.get("client_id"), query.get("admin_id"), tuple(query.get("action", ())),
                   query.get("since"), query.get("until"))


@dataclass(frozen=True)
class AuditPage:
    """A page of entries; next_offset only when paging by offset, next_before whenever more follow."""

    items: list[CreditAuditLog]
    limit: int
    next_before: int | None
    offset: int = 0
    next_offset: int | None = None


@dataclass(frozen=True)
class ExportWindow:
    """The entries one export answer holds: older than `before`, down to `last_id` (inclusive)
    when more are selected than one answer may hold (then the next answer starts there)."""

    before: int
    last_id: int | None


def newest_first(audit_filter: AuditFilter, before: int | None = None, columns=(CreditAuditLog,)) -> Select:
    """The entries the filter selects, older than `before`, newest first (see the module's docstring)."""
    log = CreditAuditLog
    actions = tuple(dict.fromkeys(audit_filter.actions))
    conditions = []
    if audit_filter.since is not None:
        conditions.append(log.created_at >= audit_filter.since)
    if audit_filter.until is not None:
        conditions.append(log.created_at < audit_filter.until)
    if before is not None:
        conditions.append(log.id < before)

    equal = [(log.client_id, audit_filter.client_id), (log.admin_id, audit_filter.admin_id),
             (log.action, actions[0] if len(actions) == 1 else None)]
    equal = [(column, value) for column, value in equal if value is not None]
    order = [log.id.desc()]
    if equal:
        leading, value = equal.pop(0)
        conditions.append(and_(leading >= value, leading <= value))
        order.insert(0, leading.desc())
    conditions.extend(column == value for column, value in equal)
    if len(actions) > 1:
        conditions.append(log.action.in_(actions))
    return select(*columns).where(*conditions).order_by(*order)


class AuditLogReader:
    def __init__(self, session: Session):
        self.session = session

    def client_page(self, client_id: str, limit: int, offset: int = 0, before: int | None = None,
                    action: str | None = None) -> AuditPage:
        """One client's entries, a deleted client's included; 404 for an id that never had a client."""
        if self.session.get(AuditHead, client_id) is None:
            raise NotFound.client(client_id)
        query = newest_first(AuditFilter(client_id=client_id, actions=(action,) if action else ()), before)
        entries = self.session.scalars(query.limit(limit + 1).offset(offset)).all()
        more = len(entries) > limit
        items = list(entries[:limit])
        return AuditPage(
            items, limit, items[-1].id if more else None, offset,
            # Paging by `before` continues with nextBefore; an offset from there would mean nothing.
            offset + limit if more and before is None else None,
        )

    def search(self, audit_filter: AuditFilter, limit: int, before: int | None = None) -> AuditPage:
        """Entries of every client the filter selects; a client that does not exist has none."""
        entries = self.session.scalars(newest_first(audit_filter, before).limit(limit + 1)).all()
        items = list(entries[:limit])
        return AuditPage(items, limit, items[-1].id if len(entries) > limit else None)

    def export_window(self, audit_filter: AuditFilter, before: int | None, max_entries: int) -> ExportWindow:
        """Where one export answer starts (below `before`, or above the newest entry now: entries
        written while it streams are not in it) and, when more are selected, where it ends."""
        if before is None:
            before = (self.session.scalar(select(func.max(CreditAuditLog.id))) or 0) + 1
        ids = self.session.scalars(newest_first(audit_filter, before, columns=(CreditAuditLog.id,))
                                   .offset(max_entries - 1).limit(2)).all()
        self.session.rollback()
        return ExportWindow(before, ids[0] if len(ids) == 2 else None)

    def each_batch(self, audit_filter: AuditFilter, window: ExportWindow | None = None,
                   batch: int = EXPORT_BATCH) -> Iterator[list[CreditAuditLog]]:
        """Every selected entry (within window), newest first, `batch` at a time: memory holds one
        batch, never the result. Each batch is its own short read."""
        before = window.before if window else None
        while True:
            query = newest_first(audit_filter, before).limit(batch)
            if window and window.last_id is not None:
                query = query.where(CreditAuditLog.id >= window.last_id)
            entries = self.session.scalars(query).all()
            self.session.expunge_all()
            self.session.rollback()
            if not entries:
                return
            yield list(entries)
            if len(entries) < batch:
                return
            before = entries[-1].id
