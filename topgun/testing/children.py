"""Stopping a child process that a test-server helper started (gevent's ``Popen``).

The contract:

* :func:`terminate` sends SIGTERM and waits up to a grace period; it says whether the child is
  gone by then (the caller decides what follows: both ``RealServer`` and ``NginxProxy`` SIGKILL).
* :func:`kill_and_wait` sends SIGKILL and waits for the exit; a child still there after the
  wait raises ``subprocess.TimeoutExpired``.
* Both leave alone a child that has already exited, or was never started (``None``), so a
  stop called twice is safe. Both wait on the child itself (``Popen.wait``, which yields to the
  gevent hub); nothing here looks a process up by name.
* :func:`die_with_parent` is the ``preexec_fn`` that makes a child get SIGKILL when this process
  dies (Linux, main thread only), so a test server never outlives the test run.

Not in here: starting children, what a caller logs or raises when a child outlives a signal
(``RealServer`` warns, then turns a survived SIGKILL into ``ServerStartError``), and the dev
cluster's node processes (``topgun.server.process`` polls those with its clock).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Callable, Optional

# gevent's Popen, as in realserver.py: the stdlib one loses exit codes once gevent reaps children.
from gevent import subprocess

__all__ = ["die_with_parent", "kill_and_wait", "terminate"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies; ``None`` where unusable.

    Only on Linux, and only from the main thread: the signal fires when the thread that
    spawned the child ends, which for any other thread can be long before the process does.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up here: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect: go now
            os._exit(1)

    return preexec


def terminate(proc: subprocess.Popen | None, timeout: float) -> bool:
    """SIGTERM ``proc`` and wait up to ``timeout`` seconds; False if it is still running then."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def kill_and_wait(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGKILL ``proc`` and wait up to ``timeout`` seconds for it to exit.

    Raises:
        subprocess.TimeoutExpired: it is still there after ``timeout``.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    proc.wait(timeout=timeout)
