"""Bearer-key authentication and the role guards every /api route wears."""

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import wraps

from flask import Flask, current_app, g, request
from flask_httpauth import HTTPTokenAuth
from flask_smorest import Blueprint

from . import metrics, services
from .errors import HTTP_MESSAGES, error_response
from .extensions import limiter
from .services.api_keys import Principal

security_log = logging.getLogger("credits_service.security")
auth = HTTPTokenAuth(scheme="Bearer")
metrics_auth = HTTPTokenAuth(scheme="Bearer")


class FailureLog:
    """Refused keys as log lines: the first refusal of each interval in full, the rest as one
    line of counts when the next interval begins, so a storm of bad keys cannot flood the log.
    The metric credits_authentication_failures counts every one."""

    def __init__(self, interval_seconds: float):
        self.interval = interval_seconds
        self._lock = threading.Lock()
        self._started: float | None = None
        self._held: Counter[str] = Counter()

    def refused(self, failure: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            opens_interval = self._started is None or now - self._started >= self.interval
            if opens_interval:
                held, self._held, self._started = self._held, Counter(), now
            else:
                self._held[reason] += 1
        if not opens_interval:
            return
        if held:
            security_log.warning(
                "%d more authentication failures in the interval before: %s", sum(held.values()),
                ", ".join(f"{count} {reason}" for reason, count in sorted(held.items())),
                extra={"event": "auth_failed_summary", "counts": dict(held)},
            )
        security_log.warning(
            "authentication failed: %s", failure,
            extra={"event": "auth_failed", "reason": failure, "path": request.path, "remoteAddr": request.remote_addr},
        )


def init_app(app: Flask) -> None:
    app.extensions["auth_failures"] = FailureLog(app.config["AUTH_FAILURE_LOG_SECONDS"])


def _presented_key() -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def current_principal() -> Principal | None:
    """The caller, resolved once per request (the rate limiter asks before the guard does)."""
    if "principal_checked" not in g:
        result = services.api_keys().check(_presented_key())
        g.principal_checked = True
        g.principal = result.principal
        if result.failure:
            metrics.authentication_failed(result.reason)
            current_app.extensions["auth_failures"].refused(result.failure, result.reason)
    return g.principal


@auth.verify_token
def _verify_token(token: str) -> Principal | None:
    return current_principal()


@metrics_auth.verify_token
def _verify_metrics_token(token: str) -> bool:
    return hmac.compare_digest(token.encode(), current_app.config["METRICS_TOKEN"].encode())


def metrics_guard(view):
    """Open while METRICS_TOKEN is unset, as Prometheus on a private network expects; set, the
    view needs it as a bearer token."""
    guarded = metrics_auth.login_required(view)

    @wraps(view)
    def decorated(*args, **kwargs):
        return (view if current_app.config["METRICS_TOKEN"] is None else guarded)(*args, **kwargs)

    return decorated


@metrics_auth.error_handler
def _metrics_auth_error(status: int):
    return error_response(status, "/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.")


@auth.get_user_roles
def _roles(principal: Principal) -> tuple[str, ...]:
    return principal.roles


@auth.error_handler
def _auth_error(status: int):
    # flask-httpauth skips verify_token without a Bearer header; resolving here logs that too.
    principal = current_principal()
    if status == 403:
        security_log.warning(
            "forbidden: key %s (role %s) on %s %s",
            principal.name, principal.role, request.method, request.path,
            extra={"event": "forbidden", "keyName": principal.name, "role": principal.role,
                   "path": request.path, "remoteAddr": request.remote_addr},
        )
    return error_response(status, HTTP_MESSAGES[status])


def rate_limit_key() -> str:
    principal = current_principal()
    return f"key:{principal.name}" if principal else f"addr:{request.remote_addr}"


def _rate_limit(kind: str) -> Callable[[], str]:
    def limit() -> str:
        principal = current_principal()
        if principal is not None and principal.role == "service":
            return current_app.config["RATE_LIMIT_SERVICE"]
        return current_app.config[kind]

    return limit


def _guard(roles: list[str], limit_kind: str, route_limit: str | None = None):
    """Who may call a view, under which rate limits: the kind's budget per principal, shared by
    every route of the kind, and optionally a budget of the route's own (a setting's name).
    The limits wrap the role check, so refused keys count against their address's budget."""

    def decorate(view):
        guarded = auth.login_required(role=roles)(view)
        if route_limit:
            guarded = limiter.limit(lambda: current_app.config[route_limit], key_func=rate_limit_key)(guarded)
        guarded = limiter.shared_limit(_rate_limit(limit_kind), scope=limit_kind, key_func=rate_limit_key)(guarded)
        return Blueprint.doc(
            security=[{"bearerAuth": []}],
            description=f"{(view.__doc__ or '').strip()}\n\nRequires a key with role: {' or '.join(roles)}.",
            responses={
                "401": "UNAUTHORIZED",
                "403": "FORBIDDEN",
                "429": "TOO_MANY_REQUESTS",
                "503": "SERVICE_UNAVAILABLE",
            },
            **{"x-required-roles": roles},
        )(guarded)

    return decorate


admin_read = _guard(["read"], "RATE_LIMIT_READ")
admin_write = _guard(["write"], "RATE_LIMIT_WRITE")
service_write = _guard(["service"], "RATE_LIMIT_WRITE")
status_read = _guard(["service", "read"], "RATE_LIMIT_READ")
export_read = _guard(["read"], "RATE_LIMIT_READ", route_limit="RATE_LIMIT_EXPORT")
