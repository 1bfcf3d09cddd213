"""Offset paging, shared by the lists."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, Select
from sqlalchemy.orm import Session

from .results import Page


def page_of(session: Session, query: Select, limit: int, offset: int, item: Callable[[Row], Any]) -> Page:
    """One page, asking for one row more to know whether another page follows."""
    rows = session.execute(query.limit(limit + 1).offset(offset)).all()
    more = len(rows) > limit
    return Page([item(row) for row in rows[:limit]], limit, offset, offset + limit if more else None)
