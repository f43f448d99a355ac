"""Shared helpers for the real-server tests (imported by name: pytest puts this directory on sys.path)."""
from __future__ import annotations

from typing import Any, Callable

import gevent

from topgun.client import TopGunClient

MakeClient = Callable[..., TopGunClient]


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    with gevent.Timeout(timeout, AssertionError(f"{what} not reached within {timeout}s")):
        while True:
            result = check()
            if result:
                return result
            gevent.sleep(0.01)
