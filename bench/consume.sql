-- The statements one consumption runs (key lookup, then the locked transaction), for pgbench.
\set id random(0, :clients - 1)
SELECT id, name, role, revoked_at, expires_at FROM api_keys WHERE key_hash = 'bench';
BEGIN;
SELECT client_id, plan, monthly_generation_limit FROM quota_limits WHERE client_id = 'bench-' || :id FOR UPDATE;
INSERT INTO usage_records (client_id, month, generation_count, created_at, updated_at)
VALUES ('bench-' || :id, '2026-11', 1, now(), now())
ON CONFLICT (client_id, month) DO UPDATE SET generation_count = usage_records.generation_count + 1, updated_at = now()
WHERE usage_records.generation_count + 1 <= 2147483647
RETURNING generation_count;
COMMIT;
