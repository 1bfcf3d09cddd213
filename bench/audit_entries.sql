-- The audit log at a given size, for bench/audit_scale.py (psycopg binds the named values).
-- total entries; the oldest heavy ones belong to client <prefix>0 (a long-standing client gone
-- quiet), the rest are spread over the other clients, the four actions in turn.
-- One INSERT ... SELECT: when entries gain columns (hash, key id, sequence), add them here.
TRUNCATE credit_audit_log RESTART IDENTITY;

INSERT INTO credit_audit_log (client_id, admin_id, action, details, previous_value, new_value, created_at)
SELECT CASE WHEN n <= %(heavy)s THEN %(prefix)s || '0'
            ELSE %(prefix)s || (1 + n %% (%(clients)s - 1))::text END,
       'bench-admin',
       (ARRAY['credit_grant', 'usage_reset', 'limit_change', 'plan_change'])[1 + n %% 4],
       jsonb_build_object('amount', 1, 'reason', 'audit-scale benchmark'),
       '100',
       '101',
       timestamptz '2020-01-01 00:00:00+00' + n * interval '1 second'
FROM generate_series(1, %(total)s) AS n;

ANALYZE credit_audit_log;
