"""/docs renders in a real browser with every host but the server unreachable."""

import shutil
import subprocess

import pytest

from test_openapi import ROLES

from .conftest import new_database
from .servers import Instance

pytestmark = pytest.mark.integration


def test_swagger_ui_renders_offline(request, tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed: `sudo apt-get install chromium` (.ci/run does)")
    url = new_database(request, "sqlite", tmp_path)
    instance = Instance(url, workers=1, log_path=tmp_path / "gunicorn.log").start()
    try:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}",
             # Any host but loopback fails to resolve: the page must need nothing from the internet.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=10000", "--dump-dom", f"{instance.url}/docs/"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        instance.stop()
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    # Swagger UI fetched /openapi.json and drew one block per operation.
    # Every API operation, and /healthz, /readyz and /metrics.
    assert dom.count('class="opblock opblock-') == len(ROLES) + 3, dom[:2000]
    assert "/api/clients/{client_id}/usage" in dom
    assert "/api/admin/clients/{client_id}/grants" in dom
    assert "credits-service" in dom
