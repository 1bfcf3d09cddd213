"""The framework floor: the two platform routes as the libraries the service is built on do
them when used the way their documentation shows, and nothing of the service's own.

A plain Flask app: flask-smorest's Blueprint, with webargs parsing the body and marshmallow
dumping the answer through the service's own schemas; flask-httpauth's bearer guard with
roles; Flask-Limiter's decorator, switched off by its own RATELIMIT_ENABLED setting; SQLAlchemy
Core running the service's own statements (consume_at_once with the default usage thresholds, QUOTA_WITH_MONTH) on a pooled
connection with the AUTOCOMMIT execution option, one statement per request, as the service
does. What the service pays beyond this floor is its own code: the ORM session, request ids,
the access log and metrics hooks, the key check with expiry and revocation, the services and
their error handling.

A bearer key is looked up by its hash once per worker and kept (the service re-checks a valid
key every API_KEY_CACHE_SECONDS).
"""

import hashlib
import os
from datetime import UTC, datetime

from flask import Flask
from flask_httpauth import HTTPTokenAuth
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api, Blueprint
from sqlalchemy import column, create_engine, select, table

from credits_service.months import month_of, next_month_start
from credits_service.plans import UNLIMITED, effective_limit, remaining
from credits_service.schemas.usage import QuotaStatusSchema, UsageConsumeSchema, UsageResultSchema
from credits_service.config import SETTINGS
from credits_service.services.consumption import consume_at_once
from credits_service.services.quotas import QUOTA_WITH_MONTH
from credits_service.services.storage import storage_status

ROLES = {"read": ["read"], "write": ["write", "read"], "service": ["service"]}
API_KEYS = table("api_keys", column("key_hash"), column("role"))
# The statement the service runs when WEBHOOK_THRESHOLDS is left at its default.
CONSUME_AT_ONCE = consume_at_once(next(s.default for s in SETTINGS if s.name == "WEBHOOK_THRESHOLDS"))

app = Flask(__name__)
app.config.update(API_TITLE="floor", API_VERSION="1", OPENAPI_VERSION="3.0.3",
                  RATELIMIT_ENABLED=os.environ.get("RATELIMIT_ENABLED", "true").lower() != "false")
engine = create_engine(os.environ["DATABASE_URL"])
auth = HTTPTokenAuth(scheme="Bearer")
limiter = Limiter(get_remote_address, app=app)
api = Api(app)
blp = Blueprint("platform", __name__)
_roles_by_hash: dict[str, list[str]] = {}


def autocommit():
    """A pooled connection on which each statement commits by itself."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


@auth.verify_token
def verify_token(token: str):
    key_hash = hashlib.sha256(token.encode()).hexdigest()
    if key_hash not in _roles_by_hash:
        with autocommit() as connection:
            role = connection.execute(select(API_KEYS.c.role).where(API_KEYS.c.key_hash == key_hash)).scalar()
        if role is None:
            return None
        _roles_by_hash[key_hash] = ROLES[role]
    return _roles_by_hash[key_hash]


@auth.get_user_roles
def get_user_roles(roles):
    return roles


@blp.route("/api/clients/<client_id>/usage", methods=["POST"])
@limiter.limit("6000/minute")
@auth.login_required(role="service")
@blp.arguments(UsageConsumeSchema, required=False)
@blp.response(200, UsageResultSchema)
def consume(body, client_id):
    now = datetime.now(UTC)
    month = month_of(now)
    with autocommit() as connection:
        row = connection.execute(CONSUME_AT_ONCE, {"client_id": client_id, "month": month,
                                                   "count": body["count"], "now": now}).one()
    limit = effective_limit(row.stored_limit, row.granted)
    return {"month": month, "generation_count": row.generation_count, "limit": limit,
            "remaining": remaining(limit, row.generation_count)}


@blp.route("/api/clients/<client_id>/quota-status", methods=["GET"])
@limiter.limit("200/minute")
@auth.login_required(role=["service", "read"])
@blp.response(200, QuotaStatusSchema)
def quota_status(client_id):
    now = datetime.now(UTC)
    month = month_of(now)
    with autocommit() as connection:
        row = connection.execute(QUOTA_WITH_MONTH, {"client_id": client_id, "month": month, "now": now}).one()
    base, granted, held = row.monthly_generation_limit, row.granted, row.held
    limit = effective_limit(base, granted)
    used = row.generation_count + held  # what open holds reserve counts as used
    unlimited = limit == UNLIMITED
    storage = storage_status(row.storage_used_bytes, row.storage_quota_mb)
    return {
        "plan": row.plan, "month": month, "generations_used": row.generation_count, "generations_held": held,
        "generations_limit": limit, "generations_remaining": remaining(limit, used), "base_limit": base,
        "granted_this_month": granted,
        "usage_percent": 0.0 if unlimited else (100.0 if limit == 0 else round(used * 100 / limit, 2)),
        "is_unlimited": unlimited, "is_at_limit": not unlimited and used >= limit,
        "is_near_limit": not unlimited and used * 100 >= limit * 80, "reset_date": next_month_start(now),
        "storage_used_bytes": storage.used_bytes, "storage_quota_mb": storage.quota_mb,
        "storage_remaining_bytes": storage.remaining_bytes, "is_storage_at_limit": storage.is_at_limit,
    }


api.register_blueprint(blp)
