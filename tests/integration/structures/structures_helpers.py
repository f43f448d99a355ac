"""Helpers of the structure tests (imported by the integration and the system tests)."""
from __future__ import annotations

import time
from typing import Any, Callable

import gevent

import topgun


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        gevent.sleep(0.02)  # (lets an embedded server on this hub run)


def drop_connections(client: topgun.TopGunClient) -> None:
    """Close every connection of ``client`` under it, as a network failure would (on its home)."""
    def close_all() -> None:
        for conn in client.runtime.provider.open_connections():
            conn.close()
    client.runtime.home.run(close_all, timeout=5.0)
