#!/bin/sh
# Container entrypoint: migrate once, then hand the process over to gunicorn (it gets the signals).
set -e
# The package is installed as a wheel, so the migrations live beside app.py, not beside the package.
flask --app app db upgrade --directory /app/migrations
exec gunicorn -c gunicorn.conf.py app:app
