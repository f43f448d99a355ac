"""Stopping test-server children (topgun.testing.children), and RealServer.stop() through it.

The children are ``sh`` scripts; one ignores SIGTERM, and says so on stdout only once its trap is
set, so the SIGTERM never races the trap. Every child is killed by its own pid in ``finally``.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Iterator

import gevent
import pytest
from gevent import subprocess

from topgun.testing.children import kill_and_wait, terminate
from topgun.testing.realserver import RealServer, die_with_parent

IGNORES_TERM = "trap '' TERM; echo trapped; exec sleep 30"


def _spawn(script: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            preexec_fn=die_with_parent())


@pytest.fixture
def children() -> Iterator[list]:
    started: list = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)
        proc.stdout.close()


def _ignoring_term(children: list) -> subprocess.Popen:
    proc = _spawn(IGNORES_TERM)
    children.append(proc)
    with gevent.Timeout(10.0):
        assert proc.stdout.readline() == b"trapped\n"
    return proc


def test_terminate_ends_a_child_that_obeys_sigterm(children: list) -> None:
    proc = _spawn("exec sleep 30")
    children.append(proc)
    assert terminate(proc, timeout=5.0) is True
    assert proc.returncode == -signal.SIGTERM


def test_terminate_reports_a_child_that_ignores_sigterm_and_kill_ends_it(children: list) -> None:
    proc = _ignoring_term(children)
    assert terminate(proc, timeout=0.2) is False
    assert proc.poll() is None  # still running: the caller decides to SIGKILL
    kill_and_wait(proc)
    assert proc.returncode == -signal.SIGKILL


def test_a_gone_or_missing_child_is_left_alone(children: list) -> None:
    proc = _spawn("exit 3")
    children.append(proc)
    assert proc.wait(timeout=5.0) == 3
    assert terminate(proc, timeout=0.1) is True
    kill_and_wait(proc)
    assert proc.returncode == 3  # no signal turned into an exit code
    assert terminate(None, timeout=0.1) is True
    kill_and_wait(None)


def test_realserver_stop_warns_and_kills_a_node_that_ignores_sigterm(tmp_path: Path, caplog) -> None:
    binary = tmp_path / "stubborn"
    binary.write_text("#!/bin/sh\ntrap '' TERM\necho PORT=4321\nexec sleep 30\n")
    binary.chmod(0o755)
    server = RealServer(binary, tmp_path / "n1").start(timeout=5.0)  # PORT= is printed after the trap
    try:
        with caplog.at_level(logging.WARNING, logger="topgun.testing.realserver"):
            server.stop(timeout=0.2)
        assert not server.running
        assert [(r.levelno, r.getMessage().endswith("ignored SIGTERM for 0.2 s; sending SIGKILL"))
                for r in caplog.records] == [(logging.WARNING, True)]
    finally:
        server.kill()
