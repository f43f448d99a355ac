"""The README's demo command runs: a short demo kills a node and loses no acknowledged write."""
from __future__ import annotations

import sys

import pytest
from gevent import subprocess  # stdlib Popen misreads exit codes once gevent reaps children


@pytest.mark.system
def test_demo_kills_a_node_and_loses_nothing() -> None:
    proc = subprocess.run([sys.executable, "-m", "topgun.cli.demo", "--duration", "4", "--users", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ">>> SIGKILL" in proc.stdout
    assert "every acknowledged write is there" in proc.stdout
