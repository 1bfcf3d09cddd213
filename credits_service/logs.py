"""Logs: one JSON object per line on stdout, each with the request id, and one access line per request."""

import logging
import sys
import time

from flask import Flask, g, request
from pythonjsonlogger.json import JsonFormatter

access_log = logging.getLogger("credits_service.access")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.requestId = g.get("request_id")
        except RuntimeError:  # outside a request
            record.requestId = None
        return True


class UtcJsonFormatter(JsonFormatter):
    """Times as the API writes them: ISO 8601 in UTC with milliseconds."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


def configure_logging(app: Flask) -> None:
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    # Once per process: several apps (tests) must not each add a handler.
    if not app.config["LOG_JSON"] or any(getattr(h, "credits_json", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.credits_json = True
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(UtcJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level"},
    ))
    root.addHandler(handler)


def register_access_log(app: Flask) -> None:
    """Call before anything else registers request hooks, so the clock starts first and the line
    is written last, with the status the client gets (Flask runs after_request hooks in reverse)."""

    @app.before_request
    def _start_clock():
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_access(response):
        if not access_log.isEnabledFor(logging.INFO):  # LOG_LEVEL=WARNING and above: no access lines
            return response
        # The rule's template, never the raw path: no client ids, no secrets pasted into a URL.
        route = request.url_rule.rule if request.url_rule else None
        principal = g.get("principal")
        access_log.info(
            "%s %s %s", request.method, route, response.status_code,
            extra={
                "requestId": g.get("request_id"),
                "principal": principal.name if principal else None,
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "durationMs": round((time.perf_counter() - g.request_started) * 1000, 1),
            },
        )
        return response


admin_log = logging.getLogger("credits_service.admin")


def log_admin_action(actor: str, action: str, client_id: str) -> None:
    """One line per committed admin change (the audit log is the record; this is for the log pipeline)."""
    admin_log.info(
        "%s did %s on client %s", actor, action, client_id,
        extra={"event": "admin_action", "admin": actor, "action": action, "clientId": client_id},
    )
