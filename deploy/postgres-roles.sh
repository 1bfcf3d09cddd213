#!/bin/sh
# The two roles, made once where the database is created (compose runs this as an init script):
# credits_owner owns the schema and runs the migrations (DATABASE_MIGRATION_URL); credits_app
# is what the service connects as (DATABASE_URL), a member of credits_runtime, which the first
# migration grants what the service needs: SELECT and INSERT only on the audit tables, no
# TRUNCATE, no DDL.
set -eu
: "${CREDITS_APP_PASSWORD:?Set CREDITS_APP_PASSWORD: the password of the role the service connects as.}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_password="$CREDITS_APP_PASSWORD" <<'SQL'
CREATE ROLE credits_runtime NOLOGIN;
CREATE ROLE credits_app LOGIN PASSWORD :'app_password' IN ROLE credits_runtime;
SQL
