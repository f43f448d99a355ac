"""topgun.threads without a server: homes, marshalled calls, deadlines, futures."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, List

import gevent
import gevent.event
import pytest

from topgun import threads
from topgun.errors import ClientClosed, ConfigurationError, OperationTimeout


@pytest.fixture
def loop_home() -> Any:
    home = threads.Home("loop", name="test-loop")
    yield home
    home.close()


def in_thread(fn: Any) -> Any:
    box: List[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:
            box.append(("error", exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(15.0)
    assert not t.is_alive(), "the call hung"
    return box[0]


def test_choose_mode_validates_and_honours_explicit_modes() -> None:
    with pytest.raises(ConfigurationError, match="thread_mode"):
        threads.choose_mode("threaded")
    assert threads.choose_mode("direct") == "direct"
    assert threads.choose_mode("loop") == "loop"
    assert threads.choose_mode("auto", seams=True) == "direct"
    gevent.sleep(0)  # this thread now certainly runs a hub
    assert threads.choose_mode("auto") == "direct"


def test_calls_run_on_the_loop_thread_and_return_or_raise_there(loop_home: Any) -> None:
    assert not loop_home.is_current()
    assert loop_home.run(threading.get_ident) == loop_home.thread_ident
    with pytest.raises(KeyError, match="boom"):
        loop_home.run(lambda: {}["boom"])
    # From a plain thread (no hub there) as well.
    assert in_thread(lambda: loop_home.run(lambda: 41 + 1)) == ("ok", 42)


def test_a_call_made_on_the_home_thread_runs_inline(loop_home: Any) -> None:
    inner = loop_home.run(lambda: loop_home.run(threading.get_ident))
    assert inner == loop_home.thread_ident


def test_a_blocked_home_gives_operation_timeout_not_a_hang(loop_home: Any) -> None:
    release = threading.Event()
    blocker = threading.Thread(target=lambda: loop_home.run(lambda: release.wait(10.0)), daemon=True)
    blocker.start()
    started = time.monotonic()
    kind, error = in_thread(lambda: loop_home.run(lambda: "never", timeout=0.3, what="probe()"))
    assert kind == "error" and isinstance(error, OperationTimeout)
    assert "probe()" in str(error) and "test-loop" in str(error)
    assert time.monotonic() - started < 3.0
    release.set()
    blocker.join(5.0)
    assert loop_home.run(lambda: "back") == "back"


def test_closed_homes_refuse_calls_with_client_closed(loop_home: Any) -> None:
    loop_home.close()
    assert not loop_home.alive
    with pytest.raises(ClientClosed):
        loop_home.run(lambda: 1)


def test_greenlets_wait_cooperatively_for_the_loop_thread(loop_home: Any) -> None:
    # Ten greenlets of this (hub-running) thread each wait 0.2 s on the loop thread: together ~0.2 s.
    started = time.monotonic()
    jobs = [gevent.spawn(loop_home.run, gevent.sleep, 0.2) for _ in range(10)]
    gevent.joinall(jobs, raise_error=True, timeout=10)
    assert time.monotonic() - started < 1.0


class FakeHandle:
    """Stands in for MapHandle: a ``runtime`` with a home and a request timeout."""

    def __init__(self, home: Any) -> None:
        self.runtime = SimpleNamespace(home=home, request_timeout=0.2)

    @threads.blocking()
    def answer_async(self, value: Any, *, timeout: Any = None) -> gevent.event.AsyncResult:
        result = gevent.event.AsyncResult()
        gevent.spawn_later(0.05, result.set, value)
        return result

    @threads.blocking(none_waits_forever=True)
    def wait_for(self, seconds: float, timeout: Any = None) -> str:
        gevent.sleep(seconds)
        return "done"


def test_async_results_cross_threads_as_futures(loop_home: Any) -> None:
    future = FakeHandle(loop_home).answer_async(7)
    assert isinstance(future, threads.ThreadFuture)
    assert future.get(timeout=5) == 7 and future.result(timeout=5) == 7 and future.successful()


def test_timeout_none_can_mean_wait_as_long_as_the_home_lives(loop_home: Any) -> None:
    # request_timeout is 0.2 s here, yet a call asked to wait without limit may take longer.
    assert FakeHandle(loop_home).wait_for(0.4 + threads.GRACE_S) == "done"
