#!/bin/sh
# The role a streaming replica connects as, made once where the primary is created
# (compose.cluster.yaml runs this as an init script): pg_basebackup and the replica's WAL
# receiver log in as it, with a password, from compose's network. PostgreSQL 15's defaults
# already stream (wal_level replica, max_wal_senders 10, hot_standby on).
set -eu
: "${CREDITS_REPLICATION_PASSWORD:?Set CREDITS_REPLICATION_PASSWORD: the password the replica connects with.}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v replication_password="$CREDITS_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'replication_password';
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
