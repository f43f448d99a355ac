"""``topgun get`` and ``topgun cluster status`` against a refused port end at once (issue 13, item 5).

Before, each waited out its whole connect timeout (10-11 s with the default ``--timeout 10``)
and then printed ``ConnectTimeout`` with no cause. Now the client gives up after a few refused
connects (``REFUSED_ATTEMPTS``, about 0.1 s) and the message says the connection was refused.
The bound below is half the connect timeout: the old behaviour cannot meet it, the new one
meets it with seconds to spare even on a loaded machine (interpreter start-up included).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("TOPGUN_")}, "PYTHONPATH": str(REPO)}
CONNECT_TIMEOUT = 10.0  # what the CLI uses with its default --timeout of 10 s


@pytest.fixture
def refused_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound but not listening: connects are refused, and nobody else gets the port
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        sock.close()


@pytest.mark.parametrize("command", [["get", "users", "1", "--url"], ["put", "users", "1", "2", "--url"],
                                     ["get", "users", "1", "--seeds"], ["cluster", "status", "--seeds"]],
                         ids=["get", "put", "get-seeds", "cluster-status"])
def test_a_refused_port_ends_the_command_at_once_and_says_why(refused_url: str, command: List[str]) -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "topgun.cli", *command, refused_url], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=REPO)
    elapsed = time.monotonic() - start
    assert done.returncode == 3, done.stderr
    assert "ConnectionLost" in done.stderr and "connection refused" in done.stderr, done.stderr
    assert elapsed < CONNECT_TIMEOUT / 2, f"took {elapsed:.1f}s"

