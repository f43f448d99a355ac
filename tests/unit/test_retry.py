"""retry.retrying() over a live partition map: what retries, stops on the injected clock, wakes on a new map."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, List

import gevent
import pytest

from topgun.clock import FakeClock
from topgun.cluster.partition_map import LivePartitionMap, single_node_map
from topgun.config import RetryPolicy
from topgun.errors import ConfigurationError, ConnectionLost, NotOwnerError
from topgun.retry import retrying

FAST = RetryPolicy(max_attempts=5, backoff_s=0.001, max_backoff_s=0.002, deadline_s=10.0)


def live(version: int = 1) -> LivePartitionMap:
    pmap = LivePartitionMap()
    pmap.apply(replace(single_node_map("n", "ws://n:1"), version=version))
    return pmap


def test_retryable_errors_are_retried_until_success() -> None:
    calls: List[int] = []
    retried: List[BaseException] = []

    def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionLost("gone")
        return "ok"

    assert retrying(live(), FAST, FakeClock(), lambda: None, on_retry=retried.append)(op) == "ok"
    assert len(calls) == 3 and len(retried) == 2


def test_non_retryable_errors_surface_at_once() -> None:
    calls: List[int] = []

    def op() -> None:
        calls.append(1)
        raise ConfigurationError("bad")

    with pytest.raises(ConfigurationError):
        retrying(live(), FAST, FakeClock(), lambda: None)(op)
    assert len(calls) == 1


def test_stops_after_max_attempts_and_reraises_the_real_error() -> None:
    with pytest.raises(ConnectionLost, match="gone"):
        retrying(live(), FAST, FakeClock(), lambda: None)(lambda: (_ for _ in ()).throw(ConnectionLost("gone")))


def test_deadline_is_measured_on_the_injected_clock() -> None:
    clock = FakeClock()
    calls: List[int] = []

    def op() -> None:
        calls.append(1)
        clock.advance(4.0)
        raise ConnectionLost("gone")

    policy = RetryPolicy(max_attempts=1000, backoff_s=0.001, max_backoff_s=0.001, deadline_s=10.0)
    with pytest.raises(ConnectionLost):
        retrying(live(), policy, clock, lambda: None)(op)
    assert len(calls) == 3                      # t=4, 8, 12 >= 10
    calls.clear()
    clock = FakeClock()
    with pytest.raises(ConnectionLost):
        retrying(live(), policy, clock, lambda: None, deadline=clock.monotonic() + 5.0)(op)
    assert len(calls) == 2


def test_stale_routing_asks_for_a_map_before_the_next_try() -> None:
    asked: List[int] = []
    calls: List[int] = []

    def op() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise NotOwnerError("moved", partition_id=3, map_version=9)
        return "ok"

    assert retrying(live(), FAST, FakeClock(), lambda: asked.append(1))(op) == "ok"
    assert asked == [1]


def test_a_newer_map_ends_the_back_off_early() -> None:
    pmap = live()
    slow = RetryPolicy(max_attempts=3, backoff_s=30.0, max_backoff_s=30.0, deadline_s=60.0)
    calls: List[float] = []

    def op() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            gevent.spawn_later(0.02, pmap.apply, replace(single_node_map("m", "ws://m:1"), version=2))
            raise ConnectionLost("owner died")
        return "ok"

    with gevent.Timeout(5.0):
        assert retrying(pmap, slow, FakeClock(), lambda: None)(op) == "ok"
    assert calls[1] - calls[0] < 1.0


def test_give_up_stops_retrying() -> None:
    calls: List[Any] = []

    def op() -> None:
        calls.append(1)
        raise ConnectionLost("gone")

    with pytest.raises(ConnectionLost):
        retrying(live(), FAST, FakeClock(), lambda: None, give_up=lambda: True)(op)
    assert len(calls) == 1


def test_max_attempts_counts_the_first_attempt() -> None:
    calls: List[int] = []

    def op() -> None:
        calls.append(1)
        raise ConnectionLost("gone")

    with pytest.raises(ConnectionLost):
        retrying(live(), FAST, FakeClock(), lambda: None)(op)
    assert len(calls) == FAST.max_attempts


def test_a_map_that_changed_during_the_first_attempt_ends_its_back_off_at_once() -> None:
    # The first attempt runs outside tenacity: the view it routed with is the one taken before it,
    # so a new map that landed while it ran (here: before it failed) needs no wait.
    pmap = live()
    slow = RetryPolicy(max_attempts=3, backoff_s=30.0, max_backoff_s=30.0, deadline_s=60.0)
    calls: List[int] = []

    def op() -> str:
        calls.append(1)
        if len(calls) == 1:
            pmap.apply(replace(single_node_map("m", "ws://m:1"), version=2))
            raise ConnectionLost("owner died")
        return "ok"

    with gevent.Timeout(5.0):
        assert retrying(pmap, slow, FakeClock(), lambda: None)(op) == "ok"


def test_a_call_that_succeeds_at_once_builds_no_tenacity_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # About 20 us per request of CPU on the path of every get() and query: only a failure pays it.
    import topgun.retry

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built a tenacity.Retrying for a call that needed no retry")

    monkeypatch.setattr(topgun.retry, "Retrying", refuse)
    assert retrying(live(), FAST, FakeClock(), lambda: None)(lambda: "ok") == "ok"
