"""The ceiling: a minimal Flask app running the service's SQL with raw psycopg.

No ORM, no auth, no validation, no error handling: what these four requests cost on this
machine when Python does nothing but route, run the SQL and answer JSON. bench/endpoints.py
serves it with the same gunicorn settings as the service and loads both alike.

Each worker opens one connection on its first request (after gunicorn forks) and keeps it.
"""

import os
from datetime import UTC, datetime

import psycopg
from flask import Flask, g, jsonify, request
from psycopg.types.json import Jsonb

# ==== The SQL, one tuple of statements per endpoint =============================================
# Keep these in step with what the service runs for the same request (bench/README.md says how):
# each tuple runs in one transaction, in order, and ends with COMMIT.

# GET /api/admin/clients/<id>/quota: the quota with this month's usage, and the 10 newest entries.
QUOTA_READ = (
    """SELECT q.plan, q.monthly_generation_limit, q.storage_quota_mb, q.created_at, q.updated_at,
              coalesce(u.generation_count, 0)
       FROM quota_limits q
       LEFT JOIN usage_records u ON u.client_id = q.client_id AND u.month = %(month)s
       WHERE q.client_id = %(client_id)s""",
    """SELECT id, admin_id, action, details, previous_value, new_value, created_at
       FROM credit_audit_log WHERE client_id = %(client_id)s ORDER BY id DESC LIMIT 10""",
)

# POST /api/admin/clients/<id>/credits {"action": "grant"}: the locked raise, this month's
# usage for the answer, and the audit entry.
GRANT = (
    """UPDATE quota_limits
       SET monthly_generation_limit = monthly_generation_limit + %(amount)s, updated_at = %(now)s
       WHERE client_id = %(client_id)s AND monthly_generation_limit <> -1
       RETURNING monthly_generation_limit - %(amount)s, monthly_generation_limit""",
    """SELECT coalesce(max(generation_count), 0) FROM usage_records
       WHERE client_id = %(client_id)s AND month = %(month)s""",
    """INSERT INTO credit_audit_log (client_id, admin_id, action, details, previous_value, new_value, created_at)
       VALUES (%(client_id)s, %(admin_id)s, 'credit_grant', %(details)s, %(previous)s, %(new)s, %(now)s)""",
)

# POST /api/clients/<id>/usage: the client's quota row lock, then the conditional upsert.
CONSUME = (
    "SELECT monthly_generation_limit FROM quota_limits WHERE client_id = %(client_id)s FOR UPDATE",
    """INSERT INTO usage_records (client_id, month, generation_count, created_at, updated_at)
       VALUES (%(client_id)s, %(month)s, %(count)s, %(now)s, %(now)s)
       ON CONFLICT (client_id, month) DO UPDATE
       SET generation_count = usage_records.generation_count + %(count)s, updated_at = %(now)s
       WHERE %(limit)s = -1 OR usage_records.generation_count + %(count)s <= %(limit)s
       RETURNING generation_count""",
)

# GET /api/clients/<id>/quota-status: the plan, the limit and this month's usage.
QUOTA_STATUS = (
    """SELECT q.plan, q.monthly_generation_limit, coalesce(u.generation_count, 0)
       FROM quota_limits q
       LEFT JOIN usage_records u ON u.client_id = q.client_id AND u.month = %(month)s
       WHERE q.client_id = %(client_id)s""",
)
# ================================================================================================

app = Flask(__name__)
_connection: psycopg.Connection | None = None


def connection() -> psycopg.Connection:
    global _connection
    if _connection is None:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
        _connection = psycopg.connect(url)
    return _connection


@app.before_request
def _now():
    g.now = datetime.now(UTC)
    g.month = g.now.strftime("%Y-%m")


def remaining(limit: int, used: int) -> int | None:
    return None if limit == -1 else max(limit - used, 0)


@app.get("/api/admin/clients/<client_id>/quota")
def quota(client_id):
    params = {"client_id": client_id, "month": g.month}
    conn = connection()
    with conn.transaction():
        plan, limit, storage, created, updated, used = conn.execute(QUOTA_READ[0], params).fetchone()
        entries = conn.execute(QUOTA_READ[1], params).fetchall()
    return jsonify(
        quota={"clientId": client_id, "plan": plan, "monthlyGenerationLimit": limit,
               "storageQuotaMb": storage, "createdAt": created.isoformat(), "updatedAt": updated.isoformat()},
        usage={"month": g.month, "generationCount": used, "limit": limit, "remaining": remaining(limit, used)},
        auditLog=[
            {"id": id_, "clientId": client_id, "adminId": admin, "action": action, "details": details,
             "previousValue": previous, "newValue": new, "createdAt": at.isoformat()}
            for id_, admin, action, details, previous, new, at in entries
        ],
    )


@app.post("/api/admin/clients/<client_id>/credits")
def grant(client_id):
    amount = request.get_json()["amount"]
    params = {"client_id": client_id, "month": g.month, "now": g.now, "amount": amount,
              "admin_id": "bench-admin", "details": Jsonb({"amount": amount, "reason": None})}
    conn = connection()
    with conn.transaction():
        previous, new = conn.execute(GRANT[0], params).fetchone()
        used = conn.execute(GRANT[1], params).fetchone()[0]
        conn.execute(GRANT[2], {**params, "previous": str(previous), "new": str(new)})
    return jsonify(action="grant", currentUsage=used, previousLimit=previous, newLimit=new,
                   remaining=remaining(new, used))


@app.post("/api/clients/<client_id>/usage")
def consume(client_id):
    params = {"client_id": client_id, "month": g.month, "now": g.now, "count": request.get_json()["count"]}
    conn = connection()
    with conn.transaction():
        params["limit"] = conn.execute(CONSUME[0], params).fetchone()[0]
        used = conn.execute(CONSUME[1], params).fetchone()[0]
    limit = params["limit"]
    return jsonify(month=g.month, generationCount=used, limit=limit, remaining=remaining(limit, used))


@app.get("/api/clients/<client_id>/quota-status")
def quota_status(client_id):
    conn = connection()
    with conn.transaction():
        plan, limit, used = conn.execute(QUOTA_STATUS[0], {"client_id": client_id, "month": g.month}).fetchone()
    unlimited = limit == -1
    return jsonify(
        plan=plan, month=g.month, generationsUsed=used, generationsLimit=limit,
        generationsRemaining=remaining(limit, used),
        usagePercent=0.0 if unlimited else (100.0 if limit == 0 else round(used * 100 / limit, 2)),
        isUnlimited=unlimited, isAtLimit=not unlimited and used >= limit,
        isNearLimit=not unlimited and used * 100 >= limit * 80,
        resetDate=g.now.isoformat(),
    )
