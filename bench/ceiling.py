"""The ceiling: a minimal Flask app running the service's SQL with raw psycopg.

No ORM, no auth, no validation, no error handling: what these requests cost on this
machine when Python does nothing but route, run the SQL and answer JSON. bench/endpoints.py
serves it with the same gunicorn settings as the service and loads both alike.

Each worker opens one connection on its first request (after gunicorn forks) and keeps it.
"""

import os
from datetime import UTC, datetime, timedelta

import psycopg
from flask import Flask, g, jsonify, request
from psycopg.types.json import Jsonb

# The same HMAC over the same canonical bytes as the service: the chain's cost is part of a grant.
from credits_service.audit.chain import canonical_entry, chain_hash, to_milliseconds
from credits_service.audit.keys import AuditKeys

# The signing key the service gets from AUDIT_HMAC_KEYS (bench/harness.py sets it for both).
_KEYS = AuditKeys.parse(os.environ["AUDIT_HMAC_KEYS"])
AUDIT_KEY_ID, AUDIT_SECRET = _KEYS.signing_id, _KEYS.secrets[_KEYS.signing_id]

# ==== The SQL, one tuple of statements per endpoint =============================================
# Keep these in step with what the service runs for the same request (bench/README.md says how).
# The writes' tuples run in one transaction, in order, ending with COMMIT; the reads' run outside
# a transaction (autocommit), as the service runs them on PostgreSQL.

# GET /api/admin/clients/<id>/quota: the quota with this month's usage, month-grants and what
# the month's open holds reserve, and the 10 newest entries (the client range and order that
# keep the planner on the client's index).
QUOTA_READ = (
    """SELECT q.client_id, q.plan, q.monthly_generation_limit, q.storage_quota_mb, q.storage_used_bytes,
              q.updated_at, coalesce(u.generation_count, 0), coalesce(u.granted, 0),
              (SELECT coalesce(sum(h.count), 0) FROM holds h
               WHERE h.client_id = q.client_id AND h.month = %(month)s AND h.status = 'held'
                     AND h.expires_at > %(now)s)
       FROM quota_limits q
       LEFT JOIN usage_records u ON u.client_id = q.client_id AND u.month = %(month)s
       WHERE q.client_id = %(client_id)s""",
    """SELECT id, client_id, admin_id, action, details, previous_value, new_value, created_at, seq,
              previous_hash, hash, key_id
       FROM credit_audit_log WHERE client_id >= %(client_id)s AND client_id <= %(client_id)s
       ORDER BY client_id DESC, id DESC LIMIT 10""",
)

# The client's quota row lock, which every write takes first.
QUOTA_LOCK = "SELECT monthly_generation_limit FROM quota_limits WHERE client_id = %(client_id)s FOR UPDATE"

# POST /api/admin/clients/<id>/credits {"action": "grant"}, in one transaction: the quota row
# lock, this month's usage row, the ledger row, the raise, the audit head with the entry's id,
# and the chained entry (a trigger on its INSERT advances the head).
GRANT = (
    QUOTA_LOCK,
    "SELECT generation_count, granted FROM usage_records WHERE client_id = %(client_id)s AND month = %(month)s",
    """INSERT INTO credit_grants (client_id, amount, scope, admin_id, created_at)
       VALUES (%(client_id)s, %(amount)s, 'permanent', %(admin_id)s, %(now)s) RETURNING id""",
    """UPDATE quota_limits SET monthly_generation_limit = %(new_stored)s, updated_at = %(now)s
       WHERE client_id = %(client_id)s""",
    """SELECT entry_count, hash, nextval('credit_audit_log_id_seq') FROM audit_heads
       WHERE client_id = %(client_id)s""",
    """INSERT INTO credit_audit_log (id, client_id, seq, admin_id, action, details, previous_value, new_value,
                                    created_at, previous_hash, hash, key_id)
       VALUES (%(id)s, %(client_id)s, %(seq)s, %(admin_id)s, 'credit_grant', %(details)s, %(previous)s, %(new)s,
               %(now)s, %(previous_hash)s, %(hash)s, %(key_id)s)""",
)

# POST /api/clients/<id>/usage (no Idempotency-Key): one statement outside a transaction, the
# client's quota row locked in a CTE, then the conditional upsert against the limit it locked
# plus this month's month-grants (a new month's row only when the count fits the stored limit;
# a month with anything held is left to the service's transaction).
CONSUME = (
    """WITH locked AS (SELECT monthly_generation_limit AS stored_limit FROM quota_limits
                      WHERE client_id = %(client_id)s FOR UPDATE)
       INSERT INTO usage_records (client_id, month, generation_count, consumed, granted, created_at, updated_at)
       SELECT %(client_id)s::varchar, %(month)s::varchar, %(count)s::bigint, %(count)s::bigint, 0,
              %(now)s::timestamptz, %(now)s::timestamptz
       FROM locked
       WHERE locked.stored_limit = -1 OR %(count)s <= locked.stored_limit
             OR EXISTS (SELECT existing.client_id FROM usage_records AS existing
                        WHERE existing.client_id = %(client_id)s AND existing.month = %(month)s)
       ON CONFLICT (client_id, month) DO UPDATE
       SET generation_count = usage_records.generation_count + %(count)s,
           consumed = usage_records.consumed + %(count)s, updated_at = %(now)s
       WHERE ((SELECT stored_limit FROM locked) = -1
              OR usage_records.generation_count + usage_records.held + %(count)s
                 <= (SELECT stored_limit FROM locked) + usage_records.granted)
             AND usage_records.held = 0
       RETURNING generation_count, granted, (SELECT stored_limit FROM locked)""",
)

# GET /api/clients/<id>/quota-status: the same joined row as the quota read's first statement,
# which is what the service reads for it.
QUOTA_STATUS = QUOTA_READ[:1]

# What a month's open holds reserve now, and the usage row's `held` set to it: the holds' writes
# make `held` exact under the quota row lock.
HELD = """SELECT coalesce(sum(count), 0) FROM holds
          WHERE client_id = %(client_id)s AND month = %(month)s AND status = 'held' AND expires_at > %(now)s"""
SET_HELD = "UPDATE usage_records SET held = %(held)s, updated_at = %(now)s WHERE id = %(row_id)s"

# POST /api/clients/<id>/holds, in one transaction: the quota row lock, the client's open holds
# counted (against HOLDS_MAX_OPEN), this month's usage row made when missing and read, what the
# month's open holds reserve, the hold, and the row's `held` with the hold's count added.
HOLD = (
    QUOTA_LOCK,
    "SELECT count(*) FROM holds WHERE client_id = %(client_id)s AND status = 'held' AND expires_at > %(now)s",
    """INSERT INTO usage_records (client_id, month, generation_count, granted, held, consumed, captured, refunded,
                                created_at, updated_at)
       VALUES (%(client_id)s, %(month)s, 0, 0, 0, 0, 0, 0, %(now)s, %(now)s)
       ON CONFLICT (client_id, month) DO NOTHING RETURNING id""",
    "SELECT id, generation_count, granted FROM usage_records WHERE client_id = %(client_id)s AND month = %(month)s",
    HELD,
    """INSERT INTO holds (client_id, month, count, status, captured_count, reference, key_name, created_at,
                         expires_at, resolved_at)
       VALUES (%(client_id)s, %(month)s, %(count)s, 'held', NULL, %(reference)s, 'bench-platform', %(now)s,
               %(expires_at)s, NULL) RETURNING id""",
    SET_HELD,
)

# POST /api/clients/<id>/holds/<holdId>/capture (all of it), in one transaction: the quota row
# lock, the hold's row lock, the hold marked captured, its month's usage row read and raised by
# the count, and the row's `held` made exact (written only when it changed, as the service does).
CAPTURE = (
    QUOTA_LOCK,
    "SELECT month, count FROM holds WHERE id = %(hold_id)s AND client_id = %(client_id)s FOR UPDATE",
    "UPDATE holds SET status = 'captured', captured_count = %(count)s, resolved_at = %(now)s WHERE id = %(hold_id)s",
    """SELECT id, generation_count, granted, held, captured FROM usage_records
       WHERE client_id = %(client_id)s AND month = %(month)s""",
    """UPDATE usage_records SET generation_count = %(generation_count)s, captured = %(captured)s, updated_at = %(now)s
       WHERE id = %(row_id)s""",
    HELD,
    SET_HELD,
)

# POST /api/clients/<id>/storage: one statement outside a transaction, the conditional UPDATE
# of the quota row that moves the level only if it stays at or above zero, at most 10**18 bytes
# (MAX_LEVEL) and, when it adds, within the quota (storage_quota_mb x 1,048,576; -1 unlimited).
STORAGE_MOVE = (
    """UPDATE quota_limits SET storage_used_bytes = storage_used_bytes + %(delta)s::bigint, updated_at = %(now)s
       WHERE client_id = %(client_id)s AND storage_used_bytes + %(delta)s::bigint >= 0
             AND storage_used_bytes + %(delta)s::bigint <= 1000000000000000000
             AND (%(delta)s::bigint <= 0 OR storage_quota_mb = -1
                  OR storage_used_bytes + %(delta)s::bigint <= CAST(storage_quota_mb AS bigint) * 1048576)
       RETURNING storage_used_bytes, storage_quota_mb""",
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


def autocommit() -> psycopg.Connection:
    """The connection outside a transaction: each statement commits by itself."""
    conn = connection()
    conn.autocommit = True
    return conn


def in_transaction() -> psycopg.Connection:
    conn = connection()
    conn.autocommit = False
    return conn


@app.get("/api/admin/clients/<client_id>/quota")
def quota(client_id):
    params = {"client_id": client_id, "month": g.month, "now": g.now}
    conn = autocommit()
    _, plan, base, storage, stored, updated, used, granted, held = conn.execute(QUOTA_READ[0], params).fetchone()
    entries = conn.execute(QUOTA_READ[1], params).fetchall()
    limit = base if base == -1 else base + granted
    return jsonify(
        quota={"clientId": client_id, "plan": plan, "monthlyGenerationLimit": base,
               "storageQuotaMb": storage, "updatedAt": updated.isoformat()},
        usage={"month": g.month, "generationCount": used, "limit": limit, "baseLimit": base,
               "grantedThisMonth": granted, "held": held, "remaining": remaining(limit, used + held),
               "isUnlimited": base == -1, "resetDate": g.now.isoformat(), "storageUsedBytes": stored},
        auditLog=[
            {"id": id_, "seq": seq, "clientId": client, "adminId": admin, "action": action, "details": details,
             "previousValue": previous, "newValue": new, "createdAt": at.isoformat(), "hash": hash_}
            for id_, client, admin, action, details, previous, new, at, seq, _, hash_, _ in entries
        ],
    )


@app.post("/api/admin/clients/<client_id>/credits")
def grant(client_id):
    amount = request.get_json()["amount"]
    now = to_milliseconds(g.now)
    params = {"client_id": client_id, "month": g.month, "now": now, "amount": amount, "admin_id": "bench-admin"}
    conn = in_transaction()
    with conn.transaction():
        stored = conn.execute(GRANT[0], params).fetchone()[0]
        used, granted = conn.execute(GRANT[1], params).fetchone() or (0, 0)
        grant_id = conn.execute(GRANT[2], params).fetchone()[0]
        conn.execute(GRANT[3], {**params, "new_stored": stored + amount})
        count, previous_hash, entry_id = conn.execute(GRANT[4], params).fetchone()
        previous, new = stored + granted, stored + granted + amount
        details = {"amount": amount, "reason": None, "scope": "permanent", "grantId": grant_id}
        entry = {**params, "id": entry_id, "seq": count + 1, "previous": str(previous), "new": str(new),
                 "previous_hash": previous_hash, "details": Jsonb(details), "key_id": AUDIT_KEY_ID}
        entry["hash"] = chain_hash(AUDIT_SECRET, previous_hash, canonical_entry(
            entry_id, client_id, count + 1, "bench-admin", "credit_grant", details, entry["previous"],
            entry["new"], now))
        conn.execute(GRANT[5], entry)
    return jsonify(action="grant", grantId=grant_id, scope="permanent", month=None, expiresAt=None,
                   currentUsage=used, previousLimit=previous, newLimit=new, remaining=remaining(new, used))


@app.post("/api/clients/<client_id>/usage")
def consume(client_id):
    params = {"client_id": client_id, "month": g.month, "now": g.now, "count": request.get_json()["count"]}
    used, granted, stored = autocommit().execute(CONSUME[0], params).fetchone()
    limit = stored if stored == -1 else stored + granted
    return jsonify(month=g.month, generationCount=used, limit=limit, remaining=remaining(limit, used))


@app.get("/api/clients/<client_id>/quota-status")
def quota_status(client_id):
    _, plan, base, storage, stored, _, generations, granted, held = autocommit().execute(
        QUOTA_STATUS[0], {"client_id": client_id, "month": g.month, "now": g.now}).fetchone()
    unlimited = base == -1
    limit = base if unlimited else base + granted
    used = generations + held
    storage_left = None if storage == -1 else max(storage * 1024 * 1024 - stored, 0)
    return jsonify(
        plan=plan, month=g.month, generationsUsed=generations, generationsHeld=held, generationsLimit=limit,
        baseLimit=base, grantedThisMonth=granted,
        generationsRemaining=remaining(limit, used),
        usagePercent=0.0 if unlimited else (100.0 if limit == 0 else round(used * 100 / limit, 2)),
        isUnlimited=unlimited, isAtLimit=not unlimited and used >= limit,
        isNearLimit=not unlimited and used * 100 >= limit * 80,
        resetDate=g.now.isoformat(), storageUsedBytes=stored, storageQuotaMb=storage,
        storageRemainingBytes=storage_left, isStorageAtLimit=storage_left == 0,
    )


@app.post("/api/clients/<client_id>/holds")
def place_hold(client_id):
    body = request.get_json()
    params = {"client_id": client_id, "month": g.month, "now": g.now, "count": body["count"],
              "reference": body.get("reference"), "expires_at": g.now + timedelta(seconds=body["ttlSeconds"])}
    conn = in_transaction()
    with conn.transaction():
        stored = conn.execute(HOLD[0], params).fetchone()[0]
        conn.execute(HOLD[1], params).fetchone()
        conn.execute(HOLD[2], params)
        row_id, used, granted = conn.execute(HOLD[3], params).fetchone()
        held = conn.execute(HOLD[4], params).fetchone()[0] + params["count"]
        hold_id = conn.execute(HOLD[5], params).fetchone()[0]
        conn.execute(HOLD[6], {**params, "held": held, "row_id": row_id})
    limit = stored if stored == -1 else stored + granted
    return jsonify(holdId=hold_id, status="held", count=params["count"], month=g.month,
                   reference=params["reference"], expiresAt=params["expires_at"].isoformat(),
                   generationsHeld=held, generationsRemaining=remaining(limit, used + held)), 201


@app.post("/api/clients/<client_id>/holds/<int:hold_id>/capture")
def capture_hold(client_id, hold_id):
    params = {"client_id": client_id, "hold_id": hold_id, "now": g.now}
    conn = in_transaction()
    with conn.transaction():
        stored = conn.execute(CAPTURE[0], params).fetchone()[0]
        month, count = conn.execute(CAPTURE[1], params).fetchone()
        params.update(month=month, count=count)
        conn.execute(CAPTURE[2], params)
        row_id, used, granted, stored_held, captured = conn.execute(CAPTURE[3], params).fetchone()
        used += count
        conn.execute(CAPTURE[4], {**params, "generation_count": used, "captured": captured + count, "row_id": row_id})
        held = conn.execute(CAPTURE[5], params).fetchone()[0]
        if held != stored_held:
            conn.execute(CAPTURE[6], {**params, "held": held, "row_id": row_id})
    limit = stored if stored == -1 else stored + granted
    return jsonify(holdId=hold_id, status="captured", count=count, month=month, capturedCount=count,
                   releasedCount=0, generationCount=used, generationsHeld=held,
                   generationsRemaining=remaining(limit, used + held))


@app.post("/api/clients/<client_id>/storage")
def move_storage(client_id):
    params = {"client_id": client_id, "now": g.now, "delta": request.get_json()["deltaBytes"]}
    used, quota = autocommit().execute(STORAGE_MOVE[0], params).fetchone()
    unlimited = quota == -1
    return jsonify(usedBytes=used, quotaMb=quota, isUnlimited=unlimited,
                   remainingBytes=None if unlimited else max(quota * 1024 * 1024 - used, 0))
