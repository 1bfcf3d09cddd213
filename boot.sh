#!/bin/sh
# Container entrypoint: migrate once, then hand the process over to gunicorn (it gets the signals).
# `boot.sh worker` runs the webhook delivery worker instead, from the same image (no migration:
# it starts once a web instance has migrated).
set -e
if [ "${1:-}" = worker ]; then
    exec flask --app app webhooks deliver
fi
# gunicorn reads WEB_CONCURRENCY itself, before any config file, and answers a bad value with a
# traceback: refuse it here in one line, with the status the other settings use.
case "${WEB_CONCURRENCY:-2}" in
    *[!0-9]* | 0*)
        echo "Invalid configuration: WEB_CONCURRENCY='$WEB_CONCURRENCY' is not a positive integer (expected the number of worker processes, e.g. 2)." >&2
        exit 4 ;;
esac
# The package is installed as a wheel, so the migrations live beside app.py, not beside the package.
flask --app app db upgrade --directory /app/migrations
exec gunicorn -c gunicorn.conf.py app:app
