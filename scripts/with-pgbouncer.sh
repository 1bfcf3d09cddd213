#!/usr/bin/env bash
# Run a command with PgBouncer in transaction mode in front of TEST_DATABASE_URL's server:
#   TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test scripts/with-pgbouncer.sh .venv/bin/pytest
# The command sees TEST_DATABASE_URL pointing at PgBouncer (default_pool_size=2, any database
# name) and TEST_DATABASE_POOLER=pgbouncer. Exits 0 with a line saying why when pgbouncer is
# missing (apt-get install pgbouncer). PgBouncer is stopped, by its process id, on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pgbouncer >/dev/null; then
    echo "with-pgbouncer: skipped, pgbouncer is not installed (apt-get install pgbouncer)"
    exit 0
fi
: "${TEST_DATABASE_URL:?set TEST_DATABASE_URL to the PostgreSQL server PgBouncer should front}"

# host, port and user of the direct URL.
read -r host port user < <(.venv/bin/python -c '
import os, sys
from sqlalchemy import make_url
url = make_url(os.environ["TEST_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))
print(url.host or "127.0.0.1", url.port or 5432, url.username or "postgres")')
listen_port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

workdir=$(mktemp -d /tmp/pgbouncer.XXXXXX)
chmod 755 "$workdir"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# Each client logs in as its own role (the tests' runtime roles too): trust here, as the server
# trusts loopback; roles missing from the auth file are looked up on the server as $user.
printf '"%s" ""\n' "$user" >"$workdir/userlist.txt"
cat >"$workdir/pgbouncer.ini" <<EOF
[databases]
* = host=$host port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen_port
unix_socket_dir =
auth_type = trust
auth_file = $workdir/userlist.txt
auth_user = $user
pool_mode = transaction
default_pool_size = 2
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
logfile = $workdir/pgbouncer.log
pidfile = $workdir/pgbouncer.pid
EOF

# PgBouncer refuses to run as root: there it runs as nobody.
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(-u nobody) && chown nobody "$workdir"
pgbouncer -d "${as_user[@]}" "$workdir/pgbouncer.ini"
for _ in $(seq 1 50); do
    [ -s "$workdir/pgbouncer.pid" ] && pid=$(cat "$workdir/pgbouncer.pid") && break
    sleep 0.1
done
if [ -z "$pid" ]; then
    echo "with-pgbouncer: PgBouncer did not start:" >&2
    cat "$workdir/pgbouncer.log" >&2 || true
    exit 1
fi

export TEST_DATABASE_URL="postgresql+psycopg://$user@127.0.0.1:$listen_port/test"
export TEST_DATABASE_POOLER=pgbouncer
echo "with-pgbouncer: PgBouncer $(pgbouncer --version | head -1 | awk '{print $2}') (transaction mode, default_pool_size=2) on 127.0.0.1:$listen_port"
"$@"
