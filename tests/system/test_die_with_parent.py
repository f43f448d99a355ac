"""Server processes started by the pytest plugin die with the pytest run (issue 13, item 4).

A small project of its own starts servers through the plugin's fixtures, writes their pids to
a file and waits; this test then SIGKILLs (or SIGTERMs) that pytest process, which runs no
teardown either way, and checks that every pid it wrote is gone. Dev-server nodes exit when
the pipe from their parent closes; the real server gets SIGKILL from PR_SET_PDEATHSIG.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, List

import gevent
import pytest
from gevent import subprocess  # stdlib Popen misreads exit codes once gevent reaps children

from topgun.clock import GeventClock

pytestmark = pytest.mark.system

CLOCK = GeventClock()

_PROJECT_TEST = '''
import json, os, threading

def _hold(pids):
    tmp = os.environ["PIDS_FILE"] + ".tmp"
    with open(tmp, "w") as out:
        json.dump(pids, out)
    os.rename(tmp, os.environ["PIDS_FILE"])
    threading.Event().wait(120)           # until the outer test kills this run
    raise AssertionError("nobody killed this run")

def test_process_cluster(topgun_process_cluster_factory):
    cluster = topgun_process_cluster_factory(2)
    _hold({n: p.pid for n, p in cluster.processes.items()})

def test_real_server(topgun_real_server):
    _hold({"real": topgun_real_server.pid})
'''

# what each kind of server runs, to tell our process from an unrelated one that reused its pid
_COMMAND_MARK = {"test_process_cluster": "topgun.server", "test_real_server": "topgun-server"}


def _alive(pid: int, mark: str) -> bool:
    """``pid`` runs and is one of ours (a zombie, or a new process that reused the pid, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z" and mark in cmdline


def _wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = CLOCK.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if CLOCK.monotonic() >= deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        gevent.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("test_name", ["test_process_cluster", "test_real_server"])
def test_killing_pytest_leaves_no_server_behind(tmp_path: Path, test_name: str, sig: signal.Signals,
                                               topgun_server_binary: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_servers.py").write_text(textwrap.dedent(_PROJECT_TEST))
    pids_file = tmp_path / "pids.json"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_servers.py::{test_name}"]
    if not any(ep.value == "topgun.testing.plugin" for ep in entry_points(group="pytest11")):
        args[3:3] = ["-p", "topgun.testing.plugin"]       # a source checkout that is not pip-installed
    env = dict(os.environ, PIDS_FILE=str(pids_file), TOPGUN_SERVER_BIN=str(topgun_server_binary))
    mark = _COMMAND_MARK[test_name]
    pids: Dict[str, int] = {}
    with open(tmp_path / "pytest.log", "wb") as log:
        run = subprocess.Popen(args, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def started() -> bool:
            assert run.poll() is None, "the inner pytest run ended early:\n" + (tmp_path / "pytest.log").read_text()
            return pids_file.exists()
        _wait_for(started, 60.0, "the inner run's servers")
        pids = json.loads(pids_file.read_text())
        assert pids and all(_alive(pid, mark) for pid in pids.values()), pids

        os.kill(run.pid, sig)
        run.wait(timeout=10.0)
        assert run.returncode == -sig, "the inner run did not die of the signal"

        survivors: List[str] = []

        def all_gone() -> bool:
            survivors[:] = [name for name, pid in pids.items() if _alive(pid, mark)]
            return not survivors
        try:
            _wait_for(all_gone, 15.0, "every server's exit")
        except AssertionError:
            raise AssertionError(f"still running after the pytest run died: {survivors} of {pids}") from None
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10.0)
        for pid in pids.values():           # clean up what the inner run left, by pid, if anything
            if _alive(pid, mark):
                os.kill(pid, signal.SIGKILL)
