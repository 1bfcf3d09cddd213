"""The TypeScript client (clients/typescript): its committed types are what openapi-typescript
makes of the service's OpenAPI document today, and its contract test passes against a server."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import config_for, issue_keys
from credits_service import create_app

from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

PACKAGE = ROOT / "clients" / "typescript"


def run(*command, cwd=PACKAGE, env=None) -> subprocess.CompletedProcess:
    assert (PACKAGE / "node_modules" / "openapi-typescript").exists(), \
        "clients/typescript has no node_modules: `make test` installs them with npm ci"
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_the_committed_types_match_the_openapi_document():
    result = run("npm", "run", "--silent", "check-generated")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_drift_check_fails_on_a_renamed_field_and_names_the_command(tmp_path):
    """In a copy of the package whose types come from today's document, so that only the rename differs."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "src").mkdir()
    shutil.copy(PACKAGE / "scripts" / "openapi-types.mjs", tmp_path / "scripts")
    (tmp_path / "node_modules").symlink_to(PACKAGE / "node_modules")
    document = create_app(config_for("sqlite://")).test_client().get("/openapi.json").get_json()
    today = tmp_path / "openapi.json"
    today.write_text(json.dumps(document))
    usage = document["components"]["schemas"]["UsageResult"]["properties"]
    usage["generationsCounted"] = usage.pop("generationCount")
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(document))

    for generate in (["--spec", str(today)], ["--check", "--spec", str(today)]):
        result = run("node", "scripts/openapi-types.mjs", *generate, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run("node", "scripts/openapi-types.mjs", "--check", "--spec", str(renamed), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "npm run generate" in result.stderr
    assert "generationCount?: number;" in result.stderr
    assert "generationsCounted?: number;" in result.stderr


def test_the_contract_test_passes_against_a_server(server_database, tmp_path):
    keys = issue_keys(server_database, **{"alice@example.com": "write", "reader@example.com": "read",
                                          "platform": "service"})
    instance = Instance(server_database, workers=2, log_path=tmp_path / "gunicorn.log").start()
    try:
        result = run("npm", "test", env={
            **os.environ,
            "CREDITS_URL": instance.url,
            "CREDITS_WRITE_KEY": keys["alice@example.com"],
            "CREDITS_SERVICE_KEY": keys["platform"],
            "CREDITS_READ_KEY": keys["reader@example.com"],
        })
    finally:
        instance.stop()
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
