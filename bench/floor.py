"""The framework floor: the ceiling's two platform routes through the libraries the service is
built on, and nothing of the service's own.

What a request pays here and not in the ceiling (bench/ceiling.py) is the libraries' share:
flask-smorest's Blueprint with webargs parsing the body and marshmallow dumping the answer (the
service's own schemas), flask-httpauth's bearer guard with roles, Flask-Limiter's decorator
(called only when rate limits are on, as the service does; they are off in the benchmark), and
SQLAlchemy Core executing the service's own compiled statements on a pooled connection outside
a transaction, on the service's Flask subclass (credits_service.CreditsFlask, which keeps its
answer to "is this a coroutine function?" per function). What the service pays beyond this floor
is its own: the ORM session, its request hooks (request id, access log, metrics), the key check,
the service layer and its error handling. `bench/run.sh floor` measures the three side by side.

Keys: a bearer key is looked up by its hash once per worker and kept (the service keeps a valid
key for 2 s). Rate limits are off through RATELIMIT_ENABLED=false, as bench/harness.py sets them.
"""

import os
from datetime import UTC, datetime
from functools import wraps

from flask_httpauth import HTTPTokenAuth
from flask_limiter import Limiter
from flask_smorest import Api, Blueprint
from sqlalchemy import create_engine, select

from credits_service import CreditsFlask
from credits_service.models import ApiKey
from credits_service.months import month_of, next_month_start
from credits_service.plans import UNLIMITED, effective_limit, remaining
from credits_service.schemas import (
    QuotaStatusSchema,
    UsageConsumeSchema,
    UsageResultSchema,
)
from credits_service.services.credits import _CONSUME_AT_ONCE, _QUOTA_WITH_MONTH
from credits_service.services.keys import ROLE_GRANTS, hash_key

app = CreditsFlask(__name__)
app.config.update(API_TITLE="floor", API_VERSION="1", OPENAPI_VERSION="3.0.3",
                  RATELIMIT_ENABLED=os.environ.get("RATELIMIT_ENABLED", "true").lower() != "false")
engine = create_engine(os.environ["DATABASE_URL"], isolation_level="AUTOCOMMIT")
auth = HTTPTokenAuth(scheme="Bearer")
limiter = Limiter(lambda: "floor", app=app)
blp = Blueprint("platform", __name__)
_roles: dict[str, tuple[str, ...]] = {}


@auth.verify_token
def _verify(token: str):
    key_hash = hash_key(token)
    if key_hash not in _roles:
        with engine.connect() as connection:
            role = connection.execute(select(ApiKey.role).where(ApiKey.key_hash == key_hash)).scalar()
        if role is None:
            return None
        _roles[key_hash] = ROLE_GRANTS[role]
    return _roles[key_hash]


@auth.get_user_roles
def _user_roles(roles):
    return roles


def _guard(view):
    guarded = auth.login_required(role=["service", "read"])(view)
    limited = limiter.shared_limit("1000/second", scope="floor")(guarded)

    @wraps(guarded)
    def limited_when_enabled(*args, **kwargs):
        return (limited if app.config["RATELIMIT_ENABLED"] else guarded)(*args, **kwargs)

    return limited_when_enabled


@blp.route("/api/clients/<client_id>/usage", methods=["POST"])
@_guard
@blp.arguments(UsageConsumeSchema(), required=False)
@blp.response(200, UsageResultSchema)
def consume(body, client_id):
    now = datetime.now(UTC)
    month = month_of(now)
    with engine.connect() as connection:
        row = connection.execute(_CONSUME_AT_ONCE, {"client_id": client_id, "month": month,
                                                    "count": body["count"], "now": now}).first()
    limit = effective_limit(row.monthly_generation_limit, row.granted)
    return {"month": month, "generation_count": row.generation_count, "limit": limit,
            "remaining": remaining(limit, row.generation_count)}


@blp.route("/api/clients/<client_id>/quota-status", methods=["GET"])
@_guard
@blp.response(200, QuotaStatusSchema)
def quota_status(client_id):
    now = datetime.now(UTC)
    month = month_of(now)
    with engine.connect() as connection:
        row = connection.execute(_QUOTA_WITH_MONTH, {"client_id": client_id, "month": month}).first()
    base, used, granted = row.monthly_generation_limit, row.generation_count, row.granted
    limit = effective_limit(base, granted)
    unlimited = limit == UNLIMITED
    return {
        "plan": row.plan, "month": month, "generations_used": used, "generations_limit": limit,
        "generations_remaining": remaining(limit, used), "base_limit": base, "granted_this_month": granted,
        "usage_percent": 0.0 if unlimited else (100.0 if limit == 0 else round(used * 100 / limit, 2)),
        "is_unlimited": unlimited, "is_at_limit": not unlimited and used >= limit,
        "is_near_limit": not unlimited and used * 100 >= limit * 80, "reset_date": next_month_start(now),
    }


Api(app).register_blueprint(blp)
