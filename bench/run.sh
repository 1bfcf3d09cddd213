#!/usr/bin/env bash
# The benchmark, by hand, never part of `make test`. Needs `make install` and PostgreSQL at
# 127.0.0.1:5432 (user postgres); installs wrk (apt) and the `bench` extra (matplotlib, py-spy).
#   bench/run.sh               the endpoints: service, framework floor, raw-psycopg ceiling
#   bench/run.sh audit-scale   the audit log at 1,000 and at 1,000,000 entries
#   bench/run.sh profile       round trips, py-spy under load, instructions by layer (valgrind)
#   bench/run.sh instructions  instructions per request (valgrind): service, floor, ceiling
#   bench/run.sh capacity      one worker's req/s and CPU, pgbench's ceiling, one hot client
# Settings (environment): DURATION (s per leg, 10), WORKERS (4), CONNECTIONS (16), CLIENTS (1000).
# Each mode writes its latest result to bench/results/<mode>.*.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
if [ "${1:-}" = capacity ] && ! command -v pgbench >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib
fi
{ [ -x .venv/bin/py-spy ] && .venv/bin/python -c "import matplotlib" 2>/dev/null; } || .venv/bin/python -m pip install --quiet -e '.[test,bench]'

if { [ "${1:-}" = instructions ] || [ "${1:-}" = profile ]; } && ! command -v valgrind >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi

case "${1:-endpoints}" in
    endpoints) exec .venv/bin/python bench/endpoints.py ;;
    audit-scale) exec .venv/bin/python bench/audit_scale.py ;;
    profile) exec .venv/bin/python bench/profile.py ;;
    instructions) exec .venv/bin/python bench/instructions.py ;;
    capacity) exec .venv/bin/python bench/capacity.py ;;
    *) echo "usage: bench/run.sh [endpoints|audit-scale|profile|instructions|capacity]" >&2; exit 2 ;;
esac
