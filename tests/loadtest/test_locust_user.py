"""The Locust user reports its calls to Locust's statistics (Locust runs in a subprocess: it patches)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from gevent import subprocess

# Not importorskip: importing locust monkey-patches, and this test process must stay unpatched.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="the locust extra is not installed")

LOCUSTFILE = Path(__file__).resolve().parents[2] / "examples" / "locustfile.py"


@pytest.mark.realserver
def test_example_locustfile_reports_requests(tmp_path: Path, topgun_real_server) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    assert locust, "the locust extra is installed but its script is not on PATH"
    proc = subprocess.run([locust, "-f", str(LOCUSTFILE), "--headless", "-u", "5", "-r", "5", "-t", "3s",
                           "--host", topgun_real_server.url, "--json", "--only-summary"],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(row["method"], row["name"]): row for row in json.loads(proc.stdout)}
    assert rows[("set", "locust-users")]["num_requests"] > 0
    assert rows[("get", "locust-users")]["num_requests"] > 0
    assert rows[("put_all", "locust-users")]["num_requests"] > 0
    assert all(row["num_failures"] == 0 for row in rows.values())


@pytest.mark.realserver
def test_failed_calls_are_reported_as_failures(tmp_path: Path, topgun_real_server) -> None:
    # A user whose writes all fail (bad values) must show up as failures, not crash the run.
    locustfile = tmp_path / "failing.py"
    locustfile.write_text(
        "from locust import task, constant\n"
        "from topgun.contrib.locust import TopGunUser\n"
        "class Bad(TopGunUser):\n"
        "    wait_time = constant(0.01)\n"
        "    @task\n"
        "    def write(self):\n"
        "        self.client.map('m').set('k', object(), name='bad-set')\n")
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "2", "-r", "2",
                           "-t", "1s", "--host", topgun_real_server.url, "--json", "--only-summary"],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    rows = {(row["method"], row["name"]): row for row in json.loads(proc.stdout)}
    bad = rows[("set", "bad-set")]
    assert bad["num_requests"] > 0 and bad["num_failures"] == bad["num_requests"]
    assert proc.returncode == 1          # Locust's own exit code when any request failed
