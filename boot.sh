#!/bin/sh
# Container entrypoint: migrate, then hand the process over to gunicorn.
set -e
flask --app app db upgrade
flask --app app idempotency purge
exec gunicorn --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_CONCURRENCY:-2}" \
    --no-control-socket --access-logfile - app:app
