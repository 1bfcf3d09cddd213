"""schemathesis fuzzes a running server from /openapi.json: no 5xx, no undocumented response."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import issue_keys

from .servers import ROOT, Instance

pytestmark = pytest.mark.integration

MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "30")
# Webhook endpoints the fuzzer registers point at loopback (tests/integration/schemathesis_hooks.py).
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


@pytest.fixture(scope="module")
def server(server_database, tmp_path_factory):
    """A server on a fresh database, with a write and a service key."""
    issued = issue_keys(server_database, **{"fuzz@example.com": "write", "fuzz-platform": "service"})
    keys = {"CREDITS_KEY": issued["fuzz@example.com"], "CREDITS_SERVICE_KEY": issued["fuzz-platform"]}
    # No request-line limit in gunicorn: an overlong generated query reaches the app, whose answer
    # is under test, rather than gunicorn's own HTML 414.
    instance = Instance(server_database, workers=2, env={"GUNICORN_CMD_ARGS": "--limit-request-line 0"},
                        log_path=tmp_path_factory.mktemp("fuzz-logs") / "gunicorn.log").start()
    yield instance, keys
    instance.stop()


def schemathesis(server, config: Path, *args: str) -> subprocess.CompletedProcess:
    instance, keys = server
    return subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
         f"{instance.url}/openapi.json", "--checks", "all", "--max-examples", MAX_EXAMPLES,
         "--seed", "20261125", "--no-color", *args],
        env={**os.environ, **keys, "SCHEMATHESIS_HOOKS": str(HOOKS)}, cwd=config.parent, capture_output=True,
        text=True, timeout=900,
    )


def test_fuzz_every_operation(server):
    """Generated client ids (mostly unknown), every phase including stateful sequences."""
    result = schemathesis(server, ROOT / "schemathesis.toml")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_fuzz_an_existing_client(server, tmp_path):
    """Every operation but DELETE on one existing client, to reach the rules behind the 404."""
    instance, keys = server
    response = requests.post(
        f"{instance.url}/api/admin/clients", json={"id": "fuzzed", "name": "Fuzzed"},
        headers={"Authorization": f"Bearer {keys['CREDITS_KEY']}"}, timeout=10,
    )
    assert response.status_code == 201
    config = tmp_path / "schemathesis.toml"
    # The hold id too: with one path parameter pinned, a generated "invalid" request could only
    # be invalid in the other, and would still name a valid client.
    config.write_text((ROOT / "schemathesis.toml").read_text()
                      + '\n[parameters]\n"path.client_id" = "fuzzed"\n"path.hold_id" = 1\n')
    result = schemathesis(server, config, "--exclude-method", "DELETE", "--phases", "coverage,fuzzing")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
