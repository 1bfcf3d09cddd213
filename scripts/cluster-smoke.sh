#!/usr/bin/env bash
# Prove the service on the topology it scales out on, with the real programs on this machine: a
# fresh primary PostgreSQL cluster and a streaming replica of it (pg_basebackup), PgBouncer in
# transaction mode in front of the primary, two gunicorn instances (2 workers each) reading from
# the replica, and HAProxy in front of them with /readyz checks (deploy/cluster/ holds the
# HAProxy and PgBouncer settings compose.cluster.yaml uses too). Through HAProxy,
# scripts/cluster_smoke.py then runs the concurrency proofs, kills one instance under load,
# stops the replica, and counts the primary's connections; `flask audit verify` checks the
# chains in between. A summary of every proof closes the run; any failed one exits 1.
#
# Everything runs from a temporary folder on free ports and is stopped by process id on exit.
# As root, PostgreSQL and PgBouncer run as the postgres user; otherwise as you. Skips (exit 0)
# when pgbouncer, haproxy or PostgreSQL's server programs are missing.
#
#   scripts/cluster-smoke.sh      # PG_BIN: PostgreSQL's programs (default: the newest /usr/lib/postgresql/*/bin)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\ncluster-smoke: FAILED: %s\n' "$*" >&2; exit 1; }
skip() { printf 'cluster-smoke: skipped: %s\n' "$*"; exit 0; }

if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$PG_BIN" ] || PG_BIN=$(dirname "$(command -v pg_ctl || echo /nonexistent/pg_ctl)")
fi
for program in initdb pg_ctl pg_basebackup psql; do
    [ -x "$PG_BIN/$program" ] || skip "no $program in $PG_BIN (PostgreSQL's server programs: apt-get install postgresql, or set PG_BIN)"
done
command -v pgbouncer >/dev/null || skip "no pgbouncer (apt-get install pgbouncer)"
command -v haproxy >/dev/null || skip "no haproxy (apt-get install haproxy)"
.venv/bin/python -c 'import gunicorn, psycopg, requests' 2>/dev/null \
    || fail "cannot run .venv/bin/python with gunicorn, psycopg and requests as $(id -un): make the virtualenv first (see the README)"

# PostgreSQL refuses to run as root, and PgBouncer too. setpriv rather than runuser, and a
# command prefix rather than a function: it execs in place, so `$!` is PgBouncer's own pid.
as_postgres=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || skip "running as root, and there is no postgres user to run PostgreSQL as"
    as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
psql() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 "$@"; }

workdir=$(mktemp -d -t cluster-smoke.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$workdir"
summary="$workdir/summary"
: >"$summary"
clusters=()
pgbouncer_pid=
haproxy_pid=
web_1_pid=
web_2_pid=

# A gunicorn master and its workers: TERM to the master (it stops its workers), KILL to what is left.
stop_instance() {
    local master=$1 workers pid
    [ -n "$master" ] && kill -0 "$master" 2>/dev/null || return 0
    workers=$(pgrep -P "$master" || true)
    kill -TERM "$master" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
    for pid in $master $workers; do kill -KILL "$pid" 2>/dev/null || true; done
    wait "$master" 2>/dev/null || true
}
stop_process() {
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# pg_ctl finds the postmaster by the process id in its data directory's postmaster.pid.
stop_cluster() {
    local data=$1 pid
    [ -f "$data/postmaster.pid" ] || return 0
    pid=$(head -n 1 "$data/postmaster.pid")
    "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1 \
        || kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$? cluster
    stop_process "$haproxy_pid"
    stop_instance "$web_1_pid"
    stop_instance "$web_2_pid"
    stop_process "$pgbouncer_pid"
    for cluster in "${clusters[@]}"; do stop_cluster "$cluster"; done
    if [ -s "$summary" ]; then
        printf '\ncluster-smoke: summary\n'
        cat "$summary"
        grep -q '^FAILED' "$summary" && status=1
    fi
    rm -rf "$workdir"
    [ "$status" = 0 ] && printf '\ncluster-smoke: passed\n'
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One line per proof in the summary; the driver appends its own the same way.
passed() { printf 'ok      %s\n' "$*" >>"$summary"; printf 'ok: %s\n' "$*"; }
failed() { printf 'FAILED  %s\n' "$*" >>"$summary"; printf 'FAILED: %s\n' "$*" >&2; }
show_log() { tail -n 30 "$1" >&2; }

read -r primary_port replica_port pgbouncer_port web_1_port web_2_port haproxy_port stats_port < <(
    .venv/bin/python -c '
import socket
sockets = [socket.socket() for _ in range(7)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')

say "Primary: initdb and pg_ctl start on port $primary_port"
primary="$workdir/primary"
"${as_postgres[@]}" "$PG_BIN/initdb" -D "$primary" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$workdir/initdb.log" 2>&1 \
    || { show_log "$workdir/initdb.log"; fail "initdb failed"; }
# A throwaway cluster: fsync off. Replication as a production primary would have it.
cat >>"$primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $primary_port
unix_socket_directories = '$workdir'
max_connections = 100
fsync = off
wal_level = replica
max_wal_senders = 4
hot_standby = on
CONF
clusters+=("$primary")
"${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$primary" -l "$workdir/primary.log" -w -t 30 start >/dev/null \
    || { show_log "$workdir/primary.log"; fail "the primary did not start"; }
psql -p "$primary_port" -d postgres -qc 'CREATE DATABASE credits' >/dev/null

say "Replica: pg_basebackup -R from the primary, pg_ctl start on port $replica_port"
replica="$workdir/replica"
"${as_postgres[@]}" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$replica" -R -X stream -c fast \
    >"$workdir/basebackup.log" 2>&1 || { show_log "$workdir/basebackup.log"; fail "pg_basebackup failed"; }
printf 'port = %s\n' "$replica_port" >>"$replica/postgresql.conf"
clusters+=("$replica")
"${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$replica" -l "$workdir/replica.log" -w -t 30 start >/dev/null \
    || { show_log "$workdir/replica.log"; fail "the replica did not start"; }
[ "$(psql -p "$replica_port" -d credits -tAc 'select pg_is_in_recovery()')" = t ] || fail "the replica is not in recovery"
for _ in $(seq 1 50); do
    streaming=$(psql -p "$primary_port" -d postgres -tAc "select count(*) from pg_stat_replication where state = 'streaming'")
    [ "$streaming" = 1 ] && break
    sleep 0.2
done
[ "$streaming" = 1 ] || fail "the replica is not streaming from the primary"

say "PgBouncer (transaction mode, deploy/cluster/pgbouncer.ini) on port $pgbouncer_port"
mkdir -p "$workdir/pgbouncer"
cp deploy/cluster/pgbouncer.ini "$workdir/pgbouncer/pooling.ini"
printf '"postgres" ""\n' >"$workdir/pgbouncer/userlist.txt"
cat >"$workdir/pgbouncer/pgbouncer.ini" <<INI
[databases]
credits = host=127.0.0.1 port=$primary_port dbname=credits
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $workdir/pgbouncer/userlist.txt
admin_users = postgres
%include $workdir/pgbouncer/pooling.ini
INI
"${as_postgres[@]}" pgbouncer "$workdir/pgbouncer/pgbouncer.ini" >"$workdir/pgbouncer.log" 2>&1 &
pgbouncer_pid=$!
for _ in $(seq 1 50); do
    psql -p "$pgbouncer_port" -d credits -tAc 'select 1' >/dev/null 2>&1 && break
    kill -0 "$pgbouncer_pid" 2>/dev/null || { show_log "$workdir/pgbouncer.log"; fail "pgbouncer exited"; }
    sleep 0.1
done
pgbouncer_setting() { psql -p "$pgbouncer_port" -d pgbouncer -tAc 'SHOW CONFIG' | awk -F'|' -v key="$1" '$1 == key { print $2 }'; }
[ "$(pgbouncer_setting pool_mode)" = transaction ] || fail "PgBouncer is not in transaction mode"
pool_size=$(pgbouncer_setting default_pool_size)
echo "pool_mode=transaction default_pool_size=$pool_size max_client_conn=$(pgbouncer_setting max_client_conn)"

service_env=(
    DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$pgbouncer_port/credits"
    DATABASE_MIGRATION_URL="postgresql+psycopg://postgres@127.0.0.1:$primary_port/credits"
    DATABASE_POOLER=pgbouncer
    DATABASE_REPLICA_URL="postgresql+psycopg://postgres@127.0.0.1:$replica_port/credits"
    REPLICA_MAX_LAG_SECONDS=2
    RATELIMIT_ENABLED=false
    AUDIT_HMAC_KEYS="smoke:$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')"
    # A claim left by a killed worker is taken over after this, so a retry need not wait a minute.
    IDEMPOTENCY_LOCK_SECONDS=3
    LOG_LEVEL=WARNING
)
flask() { env "${service_env[@]}" .venv/bin/flask --app app "$@"; }

say "Migrating over DATABASE_MIGRATION_URL (straight to the primary); creating keys"
flask db upgrade >"$workdir/migrate.log" 2>&1 || { show_log "$workdir/migrate.log"; fail "flask db upgrade failed"; }
write_key=$(flask keys create smoke-admin --role write 2>"$workdir/keys.log") \
    || { show_log "$workdir/keys.log"; fail "flask keys create failed"; }
service_key=$(flask keys create smoke-platform --role service 2>>"$workdir/keys.log") \
    || { show_log "$workdir/keys.log"; fail "flask keys create failed"; }

# Instance 1 or 2: gunicorn with the house settings, 2 workers, its own metrics folder.
start_instance() {
    local number=$1 port=$2 pid
    mkdir -p "$workdir/metrics-$number"
    env "${service_env[@]}" PORT="$port" WEB_CONCURRENCY=2 PROMETHEUS_MULTIPROC_DIR="$workdir/metrics-$number" \
        .venv/bin/gunicorn -c gunicorn.conf.py --bind "127.0.0.1:$port" app:app >>"$workdir/web-$number.log" 2>&1 &
    pid=$!
    printf -v "web_${number}_pid" '%s' "$pid"
    for _ in $(seq 1 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return 0
        kill -0 "$pid" 2>/dev/null || { show_log "$workdir/web-$number.log"; fail "instance $number exited"; }
        sleep 0.2
    done
    show_log "$workdir/web-$number.log"
    fail "instance $number did not answer /readyz within 30 s"
}
say "Two instances: gunicorn on ports $web_1_port and $web_2_port, 2 workers each"
start_instance 1 "$web_1_port"
start_instance 2 "$web_2_port"

say "HAProxy (deploy/cluster/haproxy.cfg) on port $haproxy_port, stats on $stats_port"
CREDITS_LISTEN="127.0.0.1:$haproxy_port" CREDITS_STATS="127.0.0.1:$stats_port" \
    CREDITS_WEB_1="127.0.0.1:$web_1_port" CREDITS_WEB_2="127.0.0.1:$web_2_port" \
    haproxy -db -f deploy/cluster/haproxy.cfg >"$workdir/haproxy.log" 2>&1 &
haproxy_pid=$!

driver_env=(
    CLUSTER_URL="http://127.0.0.1:$haproxy_port"
    CLUSTER_STATS_URL="http://127.0.0.1:$stats_port/stats;csv"
    CLUSTER_INSTANCES="http://127.0.0.1:$web_1_port http://127.0.0.1:$web_2_port"
    CLUSTER_WRITE_KEY="$write_key"
    CLUSTER_SERVICE_KEY="$service_key"
    CLUSTER_PRIMARY_DSN="host=127.0.0.1 port=$primary_port user=postgres dbname=credits"
    CLUSTER_REPLICA_DSN="host=127.0.0.1 port=$replica_port user=postgres dbname=credits"
    CLUSTER_REPLICA_MAX_LAG=2
    CLUSTER_PGBOUNCER_DSN="host=127.0.0.1 port=$pgbouncer_port user=postgres dbname=pgbouncer"
    CLUSTER_POOL_SIZE="$pool_size"
    CLUSTER_SUMMARY="$summary"
)
driver() { env "${driver_env[@]}" "$@" .venv/bin/python scripts/cluster_smoke.py; }

say "Through HAProxy: concurrency proofs, then instance 2 killed under load"
# bash reports the instance the driver kills ("Killed") on its own stderr, silenced here; the
# driver's stderr goes on to the terminal.
{ env "${driver_env[@]}" CLUSTER_PHASE=load CLUSTER_VICTIM_PID="$web_2_pid" .venv/bin/python scripts/cluster_smoke.py 2>&3 \
    || failed "cluster_smoke.py stopped before the end of its load phase" 2>&3; } 3>&2 2>/dev/null
{ wait "$web_2_pid"; } 2>/dev/null || true
web_2_pid=

say "flask audit verify (over PgBouncer)"
if flask audit verify >"$workdir/verify.log" 2>&1; then
    passed "audit verify: $(tail -n 1 "$workdir/verify.log")"
else
    cat "$workdir/verify.log" >&2
    failed "audit verify exited non-zero: $(tail -n 1 "$workdir/verify.log")"
fi
say "flask audit verify --replica"
if ! flask audit verify --help 2>/dev/null | grep -q -- --replica; then
    failed "audit verify --replica: flask audit verify has no --replica option"
elif flask audit verify --replica >"$workdir/verify-replica.log" 2>&1; then
    passed "audit verify --replica: $(tail -n 1 "$workdir/verify-replica.log")"
else
    cat "$workdir/verify-replica.log" >&2
    failed "audit verify --replica exited non-zero: $(tail -n 1 "$workdir/verify-replica.log")"
fi

say "Restarting instance 2; HAProxy takes it back once /readyz answers"
start_instance 2 "$web_2_port"

say "Replica: reads from it; then pg_ctl stop, and the same reads from the primary"
driver CLUSTER_PHASE=replica-up || failed "cluster_smoke.py stopped before the end of its replica-up phase"
say "Replica: replay paused behind a fresh grant; its reads go to the primary, then it catches up"
driver CLUSTER_PHASE=replica-lag || failed "cluster_smoke.py stopped before the end of its replica-lag phase"
stop_cluster "$replica"
! psql -p "$replica_port" -d credits -tAc 'select 1' >/dev/null 2>&1 || fail "the replica still answers after pg_ctl stop"
driver CLUSTER_PHASE=replica-down || failed "cluster_smoke.py stopped before the end of its replica-down phase"
