"""The audit log as a file for finance: CSV (for spreadsheets) or NDJSON (one entry per line).

The export is produced as it is sent, a batch of entries at a time, in a session of its
own: it outlives the request's context when streamed, and is closed when the export ends
or the reader goes away.
"""

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..schemas.audit import AuditEntrySchema
from .reader import AuditFilter, AuditLogReader, ExportWindow

MEDIA_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_entry = AuditEntrySchema()
# The API's fields in its order, and the reason (kept in details) on its own for spreadsheets.
CSV_COLUMNS = [field.data_key or name for name, field in _entry.dump_fields.items()] + ["reason"]


def filename(export_format: str, now: datetime) -> str:
    return f"audit-log-{now.strftime('%Y%m%dT%H%M%SZ')}.{export_format}"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value  # shown as text, never evaluated
    return value


def _csv_writer(out: io.StringIO):
    # Every cell quoted: a spreadsheet that splits cells on another separator (";") then still
    # sees one cell, so "x;=1+2" in a reason cannot become a formula of its own.
    return csv.writer(out, quoting=csv.QUOTE_ALL)


def _csv_rows(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = _csv_writer(out)
    for entry in entries:
        reason = entry["details"].get("reason") if isinstance(entry["details"], dict) else None
        writer.writerow(_csv_cell(value) for value in [*(entry[c] for c in CSV_COLUMNS[:-1]), reason])
    return out.getvalue()


def _ndjson_rows(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n" for entry in entries)


def export_chunks(engine: Engine, audit_filter: AuditFilter, export_format: str,
                  window: ExportWindow | None = None) -> Iterator[str]:
    """The export as text chunks, one per batch of entries (CSV starts with its header row):
    every selected entry, or those of one window."""
    render = _csv_rows if export_format == "csv" else _ndjson_rows
    if export_format == "csv":
        header = io.StringIO()
        _csv_writer(header).writerow(CSV_COLUMNS)
        yield header.getvalue()
    with Session(engine) as session:
        for batch in AuditLogReader(session).each_batch(audit_filter, window):
            yield render(_entry.dump(batch, many=True))
