"""No call of a topic, lock or counter blocks past its deadline, also with no server at all."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable

import gevent
import pytest

import topgun

pytestmark = pytest.mark.integration


def _dead_url() -> str:
    with socket.socket() as s:       # a port nobody listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws"


@pytest.mark.parametrize("call", [
    lambda c: c.topic("t").publish(1, timeout=0.5),
    lambda c: c.topic("t").subscribe(timeout=0.5),
    lambda c: c.lock("l").acquire(timeout=0.5),
    lambda c: c.lock("l").acquire(blocking=False, timeout=0.5),
    lambda c: c.counter("c").increment(timeout=0.5),
    lambda c: c.counter("c").get(timeout=0.5),
    lambda c: c.counter("c").subscribe(timeout=0.5),
], ids=["publish", "subscribe", "acquire", "acquire-once", "increment", "get", "counter-subscribe"])
def test_calls_without_a_server_end_by_their_deadline(call: Callable[[Any], Any]) -> None:
    with topgun.TopGunClient(url=_dead_url(), wait_connected=False) as client:
        start = time.monotonic()
        with gevent.Timeout(0.5 + 2.0, AssertionError("a call outlived its deadline")):
            with pytest.raises(topgun.OperationTimeout):     # "no answer", never "busy" (False)
                call(client)
        assert time.monotonic() - start >= 0.4
