"""Settings from the environment: parsed when the app is created, and a bad one stops the start
with one line naming it, its value and what is expected, never a traceback."""

import logging
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from credits_service import create_app
from credits_service.config import EXIT_INVALID_CONFIGURATION, SETTINGS, Config, ConfigurationError, TestConfig

ROOT = Path(__file__).resolve().parents[1]

# (variable, bad value, what the line says about it)
BAD = [
    ("DATABASE_URL", "not a url", "is not a database URL"),
    ("DATABASE_URL", "mysql://admin:s3cret@db.internal/credits",
     "names the database 'mysql', which is neither sqlite nor postgresql"),
    ("DATABASE_URL", "postgresql+psycopg2://admin:s3cret@db.internal/credits",
     "names the driver 'postgresql+psycopg2', which is not installed"),
    ("SQLITE_BUSY_TIMEOUT_MS", "soon", "is not an integer"),
    ("SQLITE_BUSY_TIMEOUT_MS", "0", "is not a positive integer"),
    ("IDEMPOTENCY_TTL_HOURS", "1.5", "is not an integer"),
    ("IDEMPOTENCY_TTL_HOURS", "-3", "is not a positive integer"),
    ("IDEMPOTENCY_LOCK_SECONDS", "sixty", "is not an integer"),
    ("RATELIMIT_ENABLED", "maybe", "is not a boolean"),
    ("RATELIMIT_SWALLOW_ERRORS", "2", "is not a boolean"),
    ("LOG_JSON", "yes please", "is not a boolean"),
    ("LOG_LEVEL", "verbose", "is not a log level"),
    ("RATE_LIMIT_READ", "fast", "is not a rate limit Flask-Limiter understands"),
    ("RATE_LIMIT_WRITE", "50 per fortnight", "is not a rate limit Flask-Limiter understands"),
    ("RATE_LIMIT_SERVICE", "", "is not a rate limit Flask-Limiter understands"),
    ("RATELIMIT_STORAGE_URI", "rediz://:s3cret@cache.internal:6379/0", "has a scheme the limits library does not know"),
]
BAD_IDS = [f"{name}={value}" for name, value, _ in BAD]


def shown(value: str) -> str:
    """The value as the line shows it: quoted, any password in a URL hidden."""
    return repr(value.replace("s3cret", "***"))


def clean_environment(tmp_path, **variables) -> dict[str, str]:
    """This process's environment without any setting, plus a scratch database and the given ones."""
    env = {name: value for name, value in os.environ.items() if name not in {s.name for s in SETTINGS}}
    return {**env, "DATABASE_URL": f"sqlite:///{tmp_path}/credits.sqlite3", **variables}


def assert_one_line_refusal(result, name, value, problem):
    assert result.returncode == EXIT_INVALID_CONFIGURATION, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Invalid configuration: {name}={shown(value)} {problem} (expected "), line
    return line


@pytest.mark.parametrize(("name", "value", "problem"), BAD, ids=BAD_IDS)
def test_flask_command_refuses_a_bad_setting_in_one_line(tmp_path, name, value, problem):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", "list"],
        cwd=ROOT, env=clean_environment(tmp_path, **{name: value}), capture_output=True, text=True, timeout=60,
    )
    assert_one_line_refusal(result, name, value, problem)


def test_gunicorn_refuses_a_bad_setting_in_one_line(tmp_path):
    """A worker that cannot load the app makes gunicorn stop, not boot it again forever."""
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", "127.0.0.1:0", "--no-control-socket", "app:app"],
        cwd=ROOT, env=clean_environment(tmp_path, RATE_LIMIT_READ="fast"), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == EXIT_INVALID_CONFIGURATION, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Invalid configuration:")]
    assert lines == ["Invalid configuration: RATE_LIMIT_READ='fast' is not a rate limit Flask-Limiter understands"
                     ' (expected e.g. "200/minute" or "10/second;500/hour").']


def test_gunicorn_config_file_checks_the_settings_before_any_worker_starts(tmp_path):
    """What gunicorn.conf.py does first: the master exits with the line alone."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from credits_service.config import Config, exit_when_misconfigured\n\n"
                    "with exit_when_misconfigured():\n    Config.from_environment()\n")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", "127.0.0.1:0", "--no-control-socket", "app:app"],
        cwd=ROOT, env=clean_environment(tmp_path, LOG_LEVEL="loud"), capture_output=True, text=True, timeout=60,
    )
    assert_one_line_refusal(result, "LOG_LEVEL", "loud", "is not a log level")
    assert result.stdout == ""


@pytest.fixture
def environment(monkeypatch, tmp_path):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/credits.sqlite3")
    # The app refuses to start without an audit key (see test_audit_chain.py).
    monkeypatch.setenv("AUDIT_HMAC_KEYS", TestConfig.AUDIT_HMAC_KEYS)
    yield monkeypatch
    # LOG_JSON defaults to true: the handler it adds to the root logger must not outlive the test.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "credits_json", False)]:
        root.removeHandler(handler)


def test_create_app_reads_the_environment_when_called(environment):
    environment.setenv("IDEMPOTENCY_TTL_HOURS", "48")
    assert create_app().config["IDEMPOTENCY_TTL_HOURS"] == 48
    environment.setenv("IDEMPOTENCY_TTL_HOURS", "72")
    assert create_app().config["IDEMPOTENCY_TTL_HOURS"] == 72


def test_unset_variables_keep_their_defaults(environment):
    config = create_app().config
    for setting in SETTINGS:
        if setting.name not in {"DATABASE_URL", "AUDIT_HMAC_KEYS"}:
            assert config[setting.config_key] == setting.default == getattr(Config, setting.config_key)
    assert (config["SQLITE_BUSY_TIMEOUT_MS"], config["RATE_LIMIT_READ"], config["LOG_LEVEL"]) == (30000, "200/minute", "INFO")


def test_valid_values_are_parsed(environment):
    values = {
        "DATABASE_URL": "postgres://credits:pw@127.0.0.1:5432/credits",
        "SQLITE_BUSY_TIMEOUT_MS": "1500",
        "RATELIMIT_ENABLED": "False",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/3",
        "RATELIMIT_SWALLOW_ERRORS": "off",
        "RATE_LIMIT_READ": "10/second;500/hour",
        "RATE_LIMIT_WRITE": "5 per minute",
        "RATE_LIMIT_SERVICE": "100/second",
        "IDEMPOTENCY_TTL_HOURS": "6",
        "IDEMPOTENCY_LOCK_SECONDS": "30",
        "LOG_LEVEL": "warning",
        "LOG_JSON": "0",
        "DATABASE_CONNECT_TIMEOUT_SECONDS": "5",
        "IDEMPOTENCY_PURGE_INTERVAL_SECONDS": "0",
        "IDEMPOTENCY_PURGE_BATCH": "250",
        "API_KEY_CACHE_SECONDS": "0",
        "AUDIT_HMAC_KEYS": "k2:" + "b" * 32 + ",k1:" + "a" * 32,
        "DATABASE_MIGRATION_URL": "postgresql://owner:pw@127.0.0.1:5432/credits",
        "RATE_LIMIT_EXPORT": "2/minute",
        "EXPORT_MAX_ROWS": "1000",
        "IDEMPOTENCY_MAX_KEYS": "5000",
        "METRICS_TOKEN": "t" * 20,
        "TRUSTED_PROXY_HOPS": "1",
        "AUTH_FAILURE_LOG_SECONDS": "10",
        "HOLDS_MAX_OPEN": "20",
        "HOLD_SWEEP_INTERVAL_SECONDS": "0",
        "HOLD_SWEEP_BATCH": "50",
        "WEBHOOK_THRESHOLDS": "50, 90,100",
        "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
        "WEBHOOK_TIMEOUT_SECONDS": "3",
        "WEBHOOK_RETENTION_HOURS": "24",
        "WEBHOOK_PURGE_INTERVAL_SECONDS": "0",
        "DATABASE_POOLER": " PgBouncer",
        "DATABASE_REPLICA_URL": "postgres://reader:pw@127.0.0.2:5432/credits",
        "REPLICA_MAX_LAG_SECONDS": "2",
    }
    for name, value in values.items():
        environment.setenv(name, value)
    config = create_app().config
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://credits:pw@127.0.0.1:5432/credits"
    assert {s.name: config[s.config_key] for s in SETTINGS if s.name != "DATABASE_URL"} == {
        "SQLITE_BUSY_TIMEOUT_MS": 1500,
        "RATELIMIT_ENABLED": False,
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/3",
        "RATELIMIT_SWALLOW_ERRORS": False,
        "RATE_LIMIT_READ": "10/second;500/hour",
        "RATE_LIMIT_WRITE": "5 per minute",
        "RATE_LIMIT_SERVICE": "100/second",
        "IDEMPOTENCY_TTL_HOURS": 6,
        "IDEMPOTENCY_LOCK_SECONDS": 30,
        "LOG_LEVEL": "WARNING",
        "LOG_JSON": False,
        "DATABASE_CONNECT_TIMEOUT_SECONDS": 5,
        "IDEMPOTENCY_PURGE_INTERVAL_SECONDS": 0,
        "IDEMPOTENCY_PURGE_BATCH": 250,
        "API_KEY_CACHE_SECONDS": 0,
        "AUDIT_HMAC_KEYS": "k2:" + "b" * 32 + ",k1:" + "a" * 32,
        "DATABASE_MIGRATION_URL": "postgresql+psycopg://owner:pw@127.0.0.1:5432/credits",
        "RATE_LIMIT_EXPORT": "2/minute",
        "EXPORT_MAX_ROWS": 1000,
        "IDEMPOTENCY_MAX_KEYS": 5000,
        "METRICS_TOKEN": "t" * 20,
        "TRUSTED_PROXY_HOPS": 1,
        "AUTH_FAILURE_LOG_SECONDS": 10,
        "HOLDS_MAX_OPEN": 20,
        "HOLD_SWEEP_INTERVAL_SECONDS": 0,
        "HOLD_SWEEP_BATCH": 50,
        "WEBHOOK_THRESHOLDS": (50, 90, 100),
        "WEBHOOK_RETRY_SCHEDULE": (1, 1, 1),
        "WEBHOOK_TIMEOUT_SECONDS": 3,
        "WEBHOOK_RETENTION_HOURS": 24,
        "WEBHOOK_PURGE_INTERVAL_SECONDS": 0,
        "DATABASE_POOLER": "pgbouncer",
        "DATABASE_REPLICA_URL": "postgresql+psycopg://reader:pw@127.0.0.2:5432/credits",
        "REPLICA_MAX_LAG_SECONDS": 2,
    }
    assert config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["prepare_threshold"] is None


def test_every_bad_variable_gets_its_own_line(environment):
    environment.setenv("LOG_LEVEL", "chatty")
    environment.setenv("IDEMPOTENCY_LOCK_SECONDS", "0")
    with pytest.raises(ConfigurationError) as refused:
        create_app()
    assert str(refused.value).splitlines() == [
        "Invalid configuration: IDEMPOTENCY_LOCK_SECONDS='0' is not a positive integer (expected seconds, at least 1, e.g. 60).",
        "Invalid configuration: LOG_LEVEL='chatty' is not a log level (expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL).",
    ]


@pytest.mark.skipif(find_spec("pymemcache") is not None, reason="pymemcache is installed here")
def test_a_storage_whose_client_is_not_installed_is_refused(environment):
    environment.setenv("RATELIMIT_STORAGE_URI", "memcached://127.0.0.1:11211")
    with pytest.raises(ConfigurationError, match="RATELIMIT_STORAGE_URI='memcached://127.0.0.1:11211' needs the Python package pymemcache"):
        create_app()


def test_every_setting_has_its_row_in_the_configuration_guide():
    rows = {line.split("`")[1] for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
            if line.startswith("| `")}
    gunicorn_only = {"PORT", "WEB_CONCURRENCY", "WEB_THREADS", "PROMETHEUS_MULTIPROC_DIR"}
    assert rows == {setting.name for setting in SETTINGS} | gunicorn_only
