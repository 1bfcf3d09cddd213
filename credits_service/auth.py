"""Bearer-key authentication and the role guards every /api route wears."""

import logging
from collections.abc import Callable

from flask import current_app, g, request
from flask_httpauth import HTTPTokenAuth
from flask_smorest import Blueprint

from . import metrics, services
from .errors import HTTP_MESSAGES, error_response
from .extensions import limiter
from .services.api_keys import Principal

security_log = logging.getLogger("credits_service.security")
auth = HTTPTokenAuth(scheme="Bearer")


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
            security_log.warning(
                "authentication failed: %s",
                result.failure,
                extra={"event": "auth_failed", "reason": result.failure, "path": request.path,
                       "remoteAddr": request.remote_addr},
            )
    return g.principal


@auth.verify_token
def _verify_token(token: str) -> Principal | None:
    return current_principal()


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


def _guard(roles: list[str], limit_kind: str):
    def decorate(view):
        # One budget per principal across every route of the kind, not one per route.
        limited = limiter.shared_limit(_rate_limit(limit_kind), scope=limit_kind, key_func=rate_limit_key)
        guarded = limited(auth.login_required(role=roles)(view))
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
