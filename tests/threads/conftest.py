"""Fixtures for the thread-mode, fork and patched-program tests.

Programs that monkey-patch or fork run in subprocesses (``run_python``): this test process
never patches, and never forks itself. The server is the real topgun-server (one node).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from topgun.client import TopGunClient

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"

RunPython = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def server_url(topgun_real_server: Any) -> str:
    return str(topgun_real_server.url)


@pytest.fixture
def run_python() -> RunPython:
    """``run_python(path_or_code, *args, timeout=60, env=None)``: run it with this interpreter."""
    def run(target: str, *args: str, timeout: float = 60.0, env: Any = None) -> subprocess.CompletedProcess:
        path = Path(target)
        cmd = [sys.executable, str(path)] if path.suffix == ".py" else [sys.executable, "-c", target]
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO), env=full_env)
    return run


@pytest.fixture
def make_client(topgun_url_client_factory: Callable[..., TopGunClient]) -> Callable[..., TopGunClient]:
    return topgun_url_client_factory
