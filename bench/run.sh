#!/usr/bin/env bash
# Benchmark the platform's hot path (consume credits, read quota status) on PostgreSQL and set it
# beside this machine's own ceilings: the same gunicorn serving the smallest WSGI app (HTTP and
# Python), and pgbench running the same SQL (the database). Loopback only; each run is bounded.
#   bench/run.sh            (after `make install`; PostgreSQL at 127.0.0.1:5432, user postgres)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-16}
WORKERS=${WORKERS:-4}
CLIENTS=${CLIENTS:-100}
DB=credits_bench
PORT=5400
BIN=.venv/bin

command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
command -v pgbench >/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql-contrib)

psql -h 127.0.0.1 -U postgres -d test -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/$DB" RATELIMIT_ENABLED=false LOG_LEVEL=WARNING
$BIN/flask --app app db upgrade 2>/dev/null
WRITE_KEY=$($BIN/flask --app app keys create bench-admin --role write)
export SERVICE_KEY=$($BIN/flask --app app keys create bench-platform --role service)

server=
stop_server() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap stop_server EXIT
serve() {
    $BIN/gunicorn --workers "$WORKERS" --bind "127.0.0.1:$PORT" --no-control-socket "$1" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return; sleep 0.2; done
    echo "server did not start" >&2; exit 1
}
load() {  # load NAME SCRIPT CLIENTS
    local line
    line=$(CLIENTS=$3 wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "bench/$2" "http://127.0.0.1:$PORT" | grep '^RESULT')
    printf '%-44s %s\n' "$1" "${line#RESULT }"
}

serve app:app
for i in $(seq 0 $((CLIENTS - 1))); do
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/api/admin/clients" -H "Authorization: Bearer $WRITE_KEY" \
        -H "Content-Type: application/json" -d "{\"id\": \"bench-$i\", \"name\": \"Bench $i\"}"
    curl -sf -o /dev/null -X PUT "http://127.0.0.1:$PORT/api/admin/clients/bench-$i/quota" -H "Authorization: Bearer $WRITE_KEY" \
        -H "Content-Type: application/json" -d '{"monthlyGenerationLimit": 2147483647}'
done

echo "gunicorn workers=$WORKERS, wrk connections=$CONNECTIONS, ${DURATION}s each, $(nproc) cores shared by load and server"
load "POST usage, $CLIENTS clients" consume.lua "$CLIENTS"
load "POST usage, one client (one hot row)" consume.lua 1
load "GET quota-status, $CLIENTS clients" status.lua "$CLIENTS"
stop_server

serve bench.hello:app
load "ceiling: smallest WSGI app, same gunicorn" hello.lua 1
stop_server

tps=$(pgbench -h 127.0.0.1 -U postgres -n -c "$WORKERS" -j 2 -T "$DURATION" -D clients="$CLIENTS" \
      -f bench/consume.sql "$DB" 2>/dev/null | awk '/^tps/ {print $3}')
printf '%-44s tps=%.0f\n' "ceiling: pgbench, the same SQL, $WORKERS clients" "$tps"
