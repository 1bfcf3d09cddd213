"""The append-only credit audit log: one client's, a search across clients, and an export."""

from flask import Response, current_app, request, url_for
from sqlalchemy.orm import Session

from .. import services
from ..audit.export import MEDIA_TYPES, export_chunks, filename
from ..audit.reader import AuditFilter
from ..auth import admin_read, export_read
from ..schemas.audit import (
    AuditExportQuerySchema,
    AuditLogPageSchema,
    AuditLogQuerySchema,
    AuditSearchPageSchema,
    AuditSearchQuerySchema,
)
from . import Blueprint

blp = Blueprint("audit", __name__, description="Every admin change to a client's credits.")
search_blp = Blueprint("audit-search", __name__, description="The audit log of every client: search and export.")


@blp.route("/<client_id:client_id>/audit-log", methods=["GET"])
@admin_read
@blp.arguments(AuditLogQuerySchema, location="query")
@blp.response(200, AuditLogPageSchema)
def list_audit_log(query, client_id):
    """Entries newest first, optionally of one action; page with offset or with before (nextBefore), not both."""
    return services.audit_log().client_page(
        client_id, query["limit"], query["offset"], query.get("before"), query.get("action")
    )


@search_blp.route("", methods=["GET"])
@admin_read
@search_blp.arguments(AuditSearchQuerySchema, location="query")
@search_blp.response(200, AuditSearchPageSchema)
def search_audit_log(query):
    """Entries of every client newest first, filtered; nextBefore is null on the last page."""
    return services.audit_log(replica=True).search(AuditFilter.of(query), query["limit"], query.get("before"))


@search_blp.route("/export", methods=["GET"])
@export_read
@search_blp.arguments(AuditExportQuerySchema, location="query")
@search_blp.doc(responses={"200": {
    "description": "The selected entries, newest first, as an attachment: at most EXPORT_MAX_ROWS (50,000 "
                   "unless configured) per answer. When more are selected, the Link header names the next "
                   "answer (the same filters with before); an answer without it holds the last of them.",
    "headers": {"Link": {"description": '<...?before=ID&...>; rel="next" while more entries are selected.',
                         "schema": {"type": "string"}}},
    "content": {media_type: {"schema": {"type": "string"}} for media_type in MEDIA_TYPES.values()},
}})
def export_audit_log(query):
    """The entries the filters select, newest first, streamed as CSV (with a header row) or NDJSON,
    at most EXPORT_MAX_ROWS per answer; follow Link rel="next" for the rest. Its own rate limit
    (RATE_LIMIT_EXPORT) applies besides the read one."""
    export_format = query["format"]
    audit_filter = AuditFilter.of(query)
    # The window and its rows come from one database: the replica while it is fresh, else the primary.
    engine = services.read_engine()
    with Session(engine) as session:
        window = services.audit_log(session=session).export_window(audit_filter, query.get("before"),
                                                                   current_app.config["EXPORT_MAX_ROWS"])
    headers = {"Content-Disposition": f'attachment; filename="{filename(export_format, current_app.config["CLOCK"]())}"'}
    if window.last_id is not None:
        following = url_for(request.endpoint, **{**request.args.to_dict(flat=False), "before": window.last_id})
        headers["Link"] = f'<{following}>; rel="next"'
    return Response(export_chunks(engine, audit_filter, export_format, window),
                    mimetype=MEDIA_TYPES[export_format], headers=headers)
