"""examples/sync_script.py (plain, unpatched: mode b/c) and examples/patched_script.py (mode a) run and exit 0."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.realserver


def test_plain_sync_script(run_python: Any, server_url: str) -> None:
    proc = run_python(str(EXAMPLES / "sync_script.py"), "--url", server_url)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "thread mode: loop" in proc.stdout
    assert "live change: ENTER nightly" in proc.stdout
    assert "32 writes and reads from 8 threads: ok" in proc.stdout


def test_patched_script_keeps_a_sync_library_working(run_python: Any, server_url: str) -> None:
    proc = run_python(str(EXAMPLES / "patched_script.py"), "--url", server_url)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "thread mode: direct" in proc.stdout
    assert "stored 20 hits" in proc.stdout


def test_sync_script_reads_topgun_url_from_the_environment(run_python: Any, server_url: str) -> None:
    proc = run_python(str(EXAMPLES / "sync_script.py"), env={"TOPGUN_URL": server_url})
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
