-- The audit log at a given size, for bench/audit_scale.py (psycopg binds the named values).
-- total entries; the oldest heavy ones belong to client <prefix>0 (a long-standing client gone
-- quiet), the rest are spread over the other clients, the four actions in turn. The clients'
-- chains are empty before: each client's entries take seq 1, 2, ... in id order.

-- Triggers off for this session (the benchmark connects as a superuser): the heads do not
-- advance row by row, which would make the load take many minutes; the benchmark reads the
-- entries, never the heads.
SET session_replication_role = replica;

-- The chain columns hold placeholders of the right shape: the benchmark reads, it never verifies.
INSERT INTO credit_audit_log (client_id, seq, admin_id, action, details, previous_value, new_value, created_at,
                              previous_hash, hash, key_id)
SELECT client_id, row_number() OVER (PARTITION BY client_id ORDER BY n), admin_id, action, details,
       previous_value, new_value, created_at,
       md5(n::text || 'p') || md5(n::text || 'q'), md5(n::text || 'h') || md5(n::text || 'i'), 'bench'
FROM (
    SELECT n,
           CASE WHEN n <= %(heavy)s THEN %(prefix)s || '0'
                ELSE %(prefix)s || (1 + n %% (%(clients)s - 1))::text END AS client_id,
           'bench-admin' AS admin_id,
           (ARRAY['credit_grant', 'usage_reset', 'limit_change', 'plan_change'])[1 + n %% 4] AS action,
           jsonb_build_object('amount', 1, 'reason', 'audit-scale benchmark') AS details,
           '100' AS previous_value,
           '101' AS new_value,
           timestamptz '2020-01-01 00:00:00+00' + n * interval '1 second' AS created_at
    FROM generate_series(1, %(total)s) AS n
) AS entries
ORDER BY n;

ANALYZE credit_audit_log;
