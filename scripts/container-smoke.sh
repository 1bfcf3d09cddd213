#!/usr/bin/env bash
# Build the image with buildah and prove it serves, on a machine with no Docker engine and no
# image registry: a Debian bookworm base made with debootstrap (cached), wheels built on the
# host (pip in the build cannot reach the index), then the image run against the local
# PostgreSQL in a database made for this run. Needs root (debootstrap, buildah chroot isolation).
#
#   scripts/container-smoke.sh        # CACHE_DIR (default /var/cache/credits-service) keeps the base
#   PG_URL=postgresql://postgres@127.0.0.1:5432/postgres   the server to make the database on
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR=${CACHE_DIR:-/var/cache/credits-service}
PG_URL=${PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

BASE_TAR="$CACHE_DIR/debian-bookworm-python3.tar"
BASE_IMAGE=localhost/credits-service-base:bookworm
IMAGE=localhost/credits-service:smoke
DATABASE="credits_smoke_$$"
# The two roles of a deployment: the schema's owner runs the migrations, the service connects
# as a member of credits_runtime (deploy/postgres-roles.sh; migration 0006 grants its rights).
OWNER_ROLE="credits_smoke_owner_$$"
APP_ROLE="credits_smoke_app_$$"

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\ncontainer-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root: debootstrap and buildah's chroot isolation need it"

containers=()
server_pid=
workdir=$(mktemp -d)
database_made=
# The entrypoint's process (gunicorn after boot.sh's exec): the first process below buildah's
# chroot helpers. buildah run does not pass SIGTERM on to it the way docker stop does.
entrypoint_pid() {
    local pid=$server_pid
    while pid=$(pgrep -P "$pid" | head -n 1) && [ -n "$pid" ]; do
        # Their names read "buildah-chroot-..." or, run from memory, "memfd:buildah-...".
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in *buildah*) ;; *) echo "$pid"; return 0 ;; esac
    done
    return 1
}
cleanup() {
    local status=$? pid
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        pid=$(entrypoint_pid) && kill -KILL "$pid" 2>/dev/null
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    for container in "${containers[@]}"; do
        buildah rm "$container" >/dev/null 2>&1 || true
    done
    if [ -n "$database_made" ]; then
        psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
        psql "$PG_URL" -qc "DROP ROLE IF EXISTS $APP_ROLE" >/dev/null 2>&1 || true
        psql "$PG_URL" -qc "DROP ROLE IF EXISTS $OWNER_ROLE" >/dev/null 2>&1 || true
    fi
    rm -rf "$workdir"
    [ "$status" = 0 ] && printf '\ncontainer-smoke: passed\n'
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    say "Installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
        || fail "could not install ${missing[*]} with apt-get"
fi
psql "$PG_URL" -qtAc 'select 1' >/dev/null || fail "PostgreSQL at $PG_URL is not reachable"

if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -f "$BASE_TAR" ]; then
        say "Making a Debian bookworm base with debootstrap (once; cached as $BASE_TAR)"
        mkdir -p "$CACHE_DIR"
        rootfs="$workdir/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$workdir/debootstrap.log" 2>&1 \
            || { tail -20 "$workdir/debootstrap.log" >&2; fail "debootstrap did not finish (log above)"; }
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/*
        # buildah run mounts /dev, /proc and /sys itself.
        tar -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -cf "$BASE_TAR.part" .
        mv "$BASE_TAR.part" "$BASE_TAR"
        rm -rf "$rootfs"
    fi
    say "Importing the base into buildah as $BASE_IMAGE"
    container=$(buildah from scratch)
    containers+=("$container")
    buildah add --quiet "$container" "$BASE_TAR" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
    buildah commit --quiet "$container" "$BASE_IMAGE" >/dev/null
fi

say "Building the wheels on the host from requirements/runtime.txt and the project"
context="$workdir/context"
mkdir -p "$context"
# The build context: the files git would commit (tracked or new, not ignored), and the wheels.
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$context" \
    || fail "could not copy the project into the build context"
python3 -m pip wheel --quiet --require-hashes --wheel-dir "$context/wheels" -r requirements/runtime.txt \
    || fail "pip wheel could not build the locked wheels"
# The project's own build backend from the lock too (requirements/build.txt), as the Dockerfile does.
python3 -m venv "$workdir/build" && "$workdir/build/bin/pip" install --quiet --require-hashes -r requirements/build.txt \
    || fail "could not install requirements/build.txt"
"$workdir/build/bin/pip" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$context/wheels" . \
    || fail "pip wheel could not build the project"

say "Building $IMAGE with buildah bud (BASE=$BASE_IMAGE, WHEELS=wheels)"
buildah bud --quiet --isolation chroot --format docker --layers=false \
    --build-arg BASE="$BASE_IMAGE" --build-arg WHEELS=wheels -t "$IMAGE" -f Dockerfile "$context" >/dev/null \
    || fail "buildah bud failed"

say "Checking the image: non-root numeric user, port, health check"
buildah inspect --type image "$IMAGE" >"$workdir/image.json"
image() { python3 -c 'import json, sys; config = json.load(open(sys.argv[1]))["Docker"]["config"]; print(eval(sys.argv[2]))' "$workdir/image.json" "$1"; }
user=$(image 'config.get("User", "")')
[[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "the image runs as '$user', not a non-root numeric user"
[ "$(image '" ".join(sorted(config.get("ExposedPorts", {})))')" = 8000/tcp ] || fail "the image does not expose 8000 alone"
# The health check's command, one argument a line, to run inside the container below.
image '"\n".join((config.get("Healthcheck") or {}).get("Test", [])[1:])' >"$workdir/healthcheck"
grep -q /healthz "$workdir/healthcheck" || fail "the image has no HEALTHCHECK on /healthz"

say "Creating roles $OWNER_ROLE (owner) and $APP_ROLE (in credits_runtime), and database $DATABASE"
database_made=1
psql "$PG_URL" -v ON_ERROR_STOP=1 -q >/dev/null <<SQL || fail "could not create the roles and database $DATABASE"
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'credits_runtime') THEN CREATE ROLE credits_runtime NOLOGIN; END IF;
END \$\$;
CREATE ROLE $OWNER_ROLE LOGIN PASSWORD 'smoke-owner';
CREATE ROLE $APP_ROLE LOGIN PASSWORD 'smoke-app' IN ROLE credits_runtime;
CREATE DATABASE $DATABASE OWNER $OWNER_ROLE;
SQL
url_as() { python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(netloc=f"{sys.argv[3]}:{sys.argv[4]}@{p.hostname}:{p.port or 5432}", path="/" + sys.argv[2]).geturl())' "$PG_URL" "$DATABASE" "$1" "$2"; }
database_url=$(url_as "$OWNER_ROLE" smoke-owner)
app_url=$(url_as "$APP_ROLE" smoke-app)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

container=$(buildah from --quiet "$IMAGE")
containers+=("$container")
buildah config --env DATABASE_MIGRATION_URL="$database_url" --env DATABASE_URL="$app_url" --env PORT="$port" \
    --env WEB_CONCURRENCY=2 \
    --env AUDIT_HMAC_KEYS="smoke:$(python3 -c 'import secrets; print(secrets.token_hex(32))')" "$container"
run() { buildah run --isolation chroot "$container" -- "$@"; }

say "Starting the container's entrypoint on port $port (boot.sh: migrate, then gunicorn)"
buildah run --isolation chroot "$container" -- /app/boot.sh >"$workdir/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
status() { curl -s -o "$workdir/body" -w '%{http_code}' "$@" || true; }
for _ in $(seq 1 60); do
    [ "$(status "$base/openapi.json")" = 200 ] && break
    kill -0 "$server_pid" 2>/dev/null || { tail -30 "$workdir/server.log" >&2; fail "the container exited (log above)"; }
    sleep 1
done
[ "$(status "$base/openapi.json")" = 200 ] || { tail -30 "$workdir/server.log" >&2; fail "gunicorn did not answer within 60 s"; }

# A health endpoint answers 200 and {"status": "ok"}.
endpoint_answers() {
    local path=$1 code
    code=$(status "$base$path")
    [ "$code" = 200 ] || { tail -30 "$workdir/server.log" >&2; fail "$path answered $code: $(cat "$workdir/body")"; }
}

say "GET /healthz"
endpoint_answers /healthz
grep -q '"status": *"ok"' "$workdir/body" || fail "/healthz answered $(cat "$workdir/body")"
say "Running the image's HEALTHCHECK command inside the container"
mapfile -t probe <"$workdir/healthcheck"
run "${probe[@]}" || fail "the image's HEALTHCHECK command failed against the running server"

say "Checking the migration ran (alembic_version in $DATABASE)"
revision=$(psql "$database_url" -tAc 'select version_num from alembic_version') \
    || fail "no alembic_version table in $DATABASE: the migration did not run"
[ -n "$revision" ] || fail "alembic_version is empty in $DATABASE"
echo "revision $revision"

say "GET /readyz"
endpoint_answers /readyz
grep -q '"status": *"ok"' "$workdir/body" || fail "/readyz answered $(cat "$workdir/body")"

say "Creating a key with 'flask keys create' inside the container"
key=$(run flask --app app keys create smoke@example.com --role read 2>"$workdir/keys.log") \
    || { cat "$workdir/keys.log" >&2; fail "flask keys create failed in the container"; }
[[ "$key" =~ ^[A-Za-z0-9_-]+$ ]] || fail "flask keys create printed something that is not a key"

say "GET /api/admin/clients with that key"
code=$(status -H "Authorization: Bearer $key" "$base/api/admin/clients")
[ "$code" = 200 ] || fail "GET /api/admin/clients answered $code: $(cat "$workdir/body")"
code=$(status "$base/api/admin/clients")
[ "$code" = 401 ] || fail "GET /api/admin/clients without a key answered $code, not 401"

say "The service's role cannot change the audit log; its owner's tables belong to $OWNER_ROLE"
if psql "$app_url" -qc "UPDATE credit_audit_log SET admin_id = 'mallory'" >"$workdir/psql.log" 2>&1; then
    fail "$APP_ROLE could UPDATE credit_audit_log"
fi
grep -q "permission denied" "$workdir/psql.log" || { cat "$workdir/psql.log" >&2; fail "the UPDATE failed, but not for want of rights"; }
[ "$(psql "$database_url" -tAc "select tableowner from pg_tables where tablename = 'credit_audit_log'")" = "$OWNER_ROLE" ] \
    || fail "the migration did not run as $OWNER_ROLE"

say "Stopping the container: SIGTERM to its entrypoint process, as docker stop sends"
master=$(entrypoint_pid) || fail "no entrypoint process found under buildah run"
grep -q gunicorn "/proc/$master/cmdline" || fail "the entrypoint process $master is not gunicorn: boot.sh must exec it"
kill -TERM "$master"
wait "$server_pid" || { tail -30 "$workdir/server.log" >&2; fail "the container did not exit 0 on SIGTERM"; }
server_pid=
