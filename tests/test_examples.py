"""Every examples/*.py runs to completion (exit 0) against a live server, so none can rot."""
from __future__ import annotations

import pathlib
import sys

import pytest
from gevent import subprocess  # stdlib Popen misreads exit codes once gevent reaps children

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("[0-9]*.py"))


@pytest.mark.realserver
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: pathlib.Path, topgun_real_server) -> None:
    proc = subprocess.run([sys.executable, str(script), "--url", topgun_real_server.url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
