"""A ``url=`` client never sees its own writes in its own subscriptions (docs/reference.md).

The server skips the connection a write came in on. Absence is shown against a control: a
second client's write, made after ours, does arrive, so by then ours would have too.
"""
from __future__ import annotations

from typing import Any, List

import gevent
import pytest

from topgun.clock import GeventClock
from topgun.queries import Change

CLOCK = GeventClock()


def _wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = CLOCK.monotonic() + timeout
    while not check():
        assert CLOCK.monotonic() < deadline, f"not within {timeout}s"
        gevent.sleep(0.01)


def _own_write_stays_out(url: str, connect: Any) -> None:
    me, other = connect(url), connect(url)
    got: List[Change] = []
    sub = me.map("own").subscribe(got.append)
    me.map("own").set("mine", 1)
    other.map("own").set("theirs", 2)
    _wait_for(lambda: any(change.key == "theirs" for change in got))
    assert [change.key for change in got] == ["theirs"]
    assert me.map("own").get("mine") == 1          # the write itself went through
    sub.close()


@pytest.mark.integration
def test_dev_server(topgun_cluster_factory: Any, topgun_url_client_factory: Any) -> None:
    _own_write_stays_out(topgun_cluster_factory(1).urls[0], topgun_url_client_factory)


@pytest.mark.realserver
def test_real_server(topgun_real_server: Any, topgun_url_client_factory: Any) -> None:
    _own_write_stays_out(topgun_real_server.url, topgun_url_client_factory)
