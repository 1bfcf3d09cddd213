"""The Postman collection runs green with newman against a server on an empty database."""

import subprocess

import pytest

from conftest import issue_keys

from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

NEWMAN = ROOT / "node_modules" / ".bin" / "newman"


def test_postman_collection_runs_green(server_database, tmp_path):
    assert NEWMAN.exists(), "newman is missing: `make test` installs it with npm ci"
    url = server_database
    keys = issue_keys(url, **{"alice@example.com": "write", "reader@example.com": "read", "platform": "service"})
    instance = Instance(url, workers=2, log_path=tmp_path / "gunicorn.log").start()
    try:
        result = subprocess.run(
            [str(NEWMAN), "run", "postman/credits-service.postman_collection.json",
             "-e", "postman/local.postman_environment.json",
             "--env-var", f"baseUrl={instance.url}",
             "--env-var", f"writeKey={keys['alice@example.com']}",
             "--env-var", f"readKey={keys['reader@example.com']}",
             "--env-var", f"serviceKey={keys['platform']}",
             "--reporters", "cli", "--color", "off"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    finally:
        instance.stop()
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "AssertionError" not in result.stdout
