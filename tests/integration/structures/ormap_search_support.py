"""Fixtures and helpers of the OR-map and search tests (imported by name: pytest puts this directory on sys.path).

``any_server_url`` runs each test twice: against the real 2.2.0 binary and against one embedded
dev-server node, so the same cases check the client against both and the dev server against
the real one.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List

import gevent
import pytest

from topgun.server import EmbeddedCluster


@pytest.fixture(params=["real", "embedded"], name="any_server_url")
def any_server_url_fixture(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh no-auth server: the real topgun-server 2.2.0 or one embedded node."""
    if request.param == "real":
        request.applymarker(pytest.mark.realserver)
        yield request.getfixturevalue("topgun_real_server_factory")().url
        return
    cluster = EmbeddedCluster(1).start()
    try:
        yield cluster.urls[0]
    finally:
        cluster.stop()


def eventually(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    with gevent.Timeout(timeout, AssertionError(f"{what} not reached within {timeout}s")):
        while True:
            result = check()
            if result:
                return result
            gevent.sleep(0.02)


def drain(sub: Any, quiet: float = 0.3) -> List[Any]:
    """Every change a subscription delivers until it has been quiet for ``quiet`` seconds."""
    out = []
    while True:
        try:
            out.append(sub.get(quiet))
        except Exception:  # OperationTimeout: quiet long enough
            return out
