"""Time `flask audit verify` over a million chained audit entries on PostgreSQL.

    .venv/bin/python bench/audit_verify.py [--entries 1000000] [--clients 1000]

Makes a database of its own (dropped at the end), migrates it, bulk-loads the entries with
COPY, chained and signed exactly as the service signs them (the database advances and checks
each client's head on every entry, as for the service: the load takes minutes), then runs the
real command and prints its wall time. A benchmark to run by hand, never a timed test.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from flask_migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
# This tree's code, also in a worktree the editable install does not point to.
sys.path.insert(0, str(ROOT))

from credits_service import create_app  # noqa: E402
from credits_service.audit.chain import GENESIS, canonical_entry, chain_hash  # noqa: E402
from credits_service.cli.db import enable_migrations  # noqa: E402
from credits_service.config import TestConfig  # noqa: E402
from credits_service.extensions import db  # noqa: E402

SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")
KEYS = TestConfig.AUDIT_HMAC_KEYS


def load(dsn: str, entries: int, clients: int) -> None:
    """The clients with empty chains, then the entries in order: the database advances each
    client's head on its entry's INSERT (and checks every step), as it does for the service."""
    key_id, secret = KEYS.split(":", 1)
    secret = secret.encode()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    heads: dict[str, tuple[int, str]] = {}
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY clients (id, name, created_at, updated_at) FROM STDIN") as copy:
            for n in range(clients):
                copy.write_row((f"client-{n}", f"Client {n}", start, start))
        with cur.copy("COPY audit_heads (client_id, entry_count, last_entry_id, hash, updated_at) FROM STDIN") as copy:
            for n in range(clients):
                copy.write_row((f"client-{n}", 0, None, GENESIS, start))
        columns = ("id, client_id, seq, admin_id, action, details, previous_value, new_value, "
                   "created_at, previous_hash, hash, key_id")
        with cur.copy(f"COPY credit_audit_log ({columns}) FROM STDIN") as copy:
            for entry_id in range(1, entries + 1):
                client = f"client-{entry_id % clients}"
                count, previous = heads.get(client, (0, GENESIS))
                created_at = start + timedelta(milliseconds=entry_id)
                details = {"amount": entry_id % 500 + 1, "reason": f"bench grant {entry_id}"}
                previous_value, new_value = str(entry_id), str(entry_id + 1)
                entry_hash = chain_hash(secret, previous, canonical_entry(
                    entry_id, client, count + 1, "bench@example.com", "credit_grant", details,
                    previous_value, new_value, created_at))
                copy.write_row((entry_id, client, count + 1, "bench@example.com", "credit_grant",
                                psycopg.types.json.Jsonb(details), previous_value, new_value,
                                created_at, previous, entry_hash, key_id))
                heads[client] = (count + 1, entry_hash)
        cur.execute("SELECT setval('credit_audit_log_id_seq', %s)", (entries,))
        cur.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=1_000)
    args = parser.parse_args()
    name = f"audit_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = SERVER.rsplit("/", 1)[0] + f"/{name}"
    try:
        app = create_app(type("Config", (TestConfig,), {"SQLALCHEMY_DATABASE_URI": dsn}))
        enable_migrations(app)
        with app.app_context():
            upgrade()
            db.engine.dispose()
        began = time.monotonic()
        load(dsn, args.entries, args.clients)
        print(f"loaded {args.entries} entries of {args.clients} clients in {time.monotonic() - began:.1f} s")
        env = {**os.environ, "DATABASE_URL": dsn, "AUDIT_HMAC_KEYS": KEYS, "LOG_LEVEL": "WARNING"}
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "audit", "verify"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"flask audit verify: exit {done.returncode} after {time.monotonic() - began:.1f} s wall, "
              f"{used.ru_utime + used.ru_stime:.1f} s CPU (the command's process, start-up included); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(done.stdout.strip(), done.stderr.strip())
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
