"""The client from plain threads, gevent greenlets and blocked homes (issue #6, modes b and c).

In this process nothing is monkey-patched; ``thread_mode="loop"`` puts the client's hub on its
own thread, ``"direct"`` on this (the main) thread's hub. Every cross-thread call either works
or fails by its deadline with a clear error.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, List

import gevent
import pytest

from topgun.errors import ClientClosed, ConfigurationError, OperationTimeout
from topgun.threads import GRACE_S, ThreadFuture

pytestmark = pytest.mark.realserver

RealThread = threading.Thread  # this process is not patched: real OS threads


def run_threads(n: int, target: Callable[[int], None], timeout: float = 30.0) -> List[BaseException]:
    errors: List[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # collected and asserted on by the test
            errors.append(exc)

    threads = [RealThread(target=guarded, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread did not finish: a call hung"
    return errors


def test_import_topgun_patches_nothing(run_python: Any) -> None:
    proc = run_python(
        "import socket, threading, time\n"
        "import topgun, topgun.client, topgun.threads, topgun.forking, topgun.cli\n"
        "from gevent import monkey\n"
        "assert not monkey.is_anything_patched(), monkey.saved\n"
        "assert socket.socket.__module__ == 'socket' and time.sleep.__module__ == 'time'\n"
        "assert threading.Thread.__module__ == 'threading'\n"
        "print('clean')\n")
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_auto_mode_picks_loop_for_plain_code_and_direct_for_gevent_code(run_python: Any, server_url: str) -> None:
    proc = run_python(
        "import sys, topgun, gevent\n"
        "url = sys.argv[1]\n"
        "with topgun.TopGunClient(url=url) as c: print('plain', c.thread_mode)\n"
        "def in_greenlet():\n"
        "    with topgun.TopGunClient(url=url) as c: return c.thread_mode\n"
        "print('greenlet', gevent.spawn(in_greenlet).get())\n"
        "with topgun.TopGunClient(url=url) as c: print('hub exists', c.thread_mode)\n"
        "from gevent import monkey; monkey.patch_all()\n"
        "with topgun.TopGunClient(url=url) as c: print('patched', c.thread_mode)\n"
        "try:\n"
        "    topgun.TopGunClient(url=url, thread_mode='loop')\n"
        "except topgun.ConfigurationError as e: print('loop refused under patching')\n",
        server_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:5] == ["plain loop", "greenlet direct", "hub exists direct", "patched direct",
                                           "loop refused under patching"], proc.stdout


def test_bad_thread_mode_is_a_configuration_error(server_url: str, make_client: Any) -> None:
    with pytest.raises(ConfigurationError, match="thread_mode"):
        make_client(server_url, thread_mode="threads")


def test_many_threads_share_one_loop_client(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    assert client.thread_mode == "loop"
    kv = client.map("threads_shared")

    def work(i: int) -> None:
        for j in range(50):
            kv.set(f"t{i}:{j}", {"i": i, "j": j})
            assert kv.get(f"t{i}:{j}") == {"i": i, "j": j}

    assert run_threads(8, work) == []
    assert len([k for k in kv.keys() if k.startswith("t")]) == 400


def test_async_writes_from_another_thread_return_futures(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    future = client.map("threads_async").set_async("k", 1)
    assert isinstance(future, ThreadFuture)
    assert future.result(timeout=5.0) == future.get(timeout=5.0)
    assert future.ready() and future.successful()
    assert client.map("threads_async").get("k") == 1


def test_callbacks_keep_arriving_while_the_caller_blocks_outside_gevent(server_url: str, make_client: Any) -> None:
    watcher = make_client(server_url, thread_mode="loop")
    writer = make_client(server_url, thread_mode="loop")
    seen: "queue.Queue[Any]" = queue.Queue()
    callback_threads = set()

    def on_change(change: Any) -> None:
        callback_threads.add(threading.get_ident())
        seen.put(change)

    with watcher.map("threads_live").subscribe(on_change):
        writer.map("threads_live").set("a", {"n": 1})
        change = seen.get(timeout=5.0)           # a plain OS-level wait: no gevent runs here
    assert (change.key, change.value, change.kind) == ("a", {"n": 1}, "ENTER")
    assert callback_threads == {watcher.runtime.home.thread_ident}, "callbacks run on the client's loop thread"


def test_a_subscription_can_be_iterated_from_a_worker_thread(server_url: str, make_client: Any) -> None:
    watcher = make_client(server_url, thread_mode="loop")
    writer = make_client(server_url, thread_mode="loop")
    got: List[Any] = []
    with watcher.map("threads_iter").subscribe() as sub:
        def consume(_: int) -> None:
            for change in sub:
                got.append(change.key)
                if len(got) == 3:
                    return

        consumer = RealThread(target=consume, args=(0,), daemon=True)
        consumer.start()
        for key in ("x", "y", "z"):
            writer.map("threads_iter").set(key, 1)
        consumer.join(10.0)
        assert not consumer.is_alive()
    assert sorted(got) == ["x", "y", "z"]


def test_greenlets_of_another_thread_wait_cooperatively(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    kv = client.map("threads_greenlets")
    in_flight = [0, 0]  # now, most at once

    def gevent_thread(_: int) -> None:
        # This thread runs its own hub: its greenlets must overlap, not queue behind each other.
        def one(j: int) -> Any:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            try:
                kv.set(f"g{j}", j)
                return kv.get(f"g{j}")
            finally:
                in_flight[0] -= 1
        greenlets = [gevent.spawn(one, j) for j in range(20)]
        gevent.joinall(greenlets, raise_error=True, timeout=20)
        assert [g.value for g in greenlets] == list(range(20))

    assert run_threads(1, gevent_thread) == []
    assert in_flight[1] == 20, "every greenlet was waiting at once"


def test_direct_client_called_while_its_thread_blocks_outside_gevent_fails_clearly(
        server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="direct", request_timeout=0.5)
    results: "queue.Queue[Any]" = queue.Queue()

    def call() -> None:
        started = time.monotonic()
        try:
            client.map("threads_direct").get("k")
            results.put(("ok", time.monotonic() - started))
        except OperationTimeout as exc:
            results.put((exc, time.monotonic() - started))

    caller = RealThread(target=call, daemon=True)
    caller.start()
    outcome, elapsed = results.get(timeout=10.0)   # the main thread blocks outside gevent meanwhile
    caller.join(5.0)
    assert isinstance(outcome, OperationTimeout), outcome
    assert "thread_mode='loop'" in str(outcome) and "MainThread" in str(outcome)
    assert elapsed < 0.5 + GRACE_S + 1.0


def test_direct_client_called_from_another_thread_works_while_its_hub_runs(
        server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="direct")
    kv = client.map("threads_direct_ok")
    done = threading.Event()
    errors: List[BaseException] = []

    def call() -> None:
        try:
            kv.set("k", "from another thread")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    RealThread(target=call, daemon=True).start()
    deadline = time.monotonic() + 10.0
    while not done.is_set() and time.monotonic() < deadline:
        gevent.sleep(0.01)                         # the home's thread keeps its hub running
    assert done.is_set() and errors == []
    assert kv.get("k") == "from another thread"


def test_a_blocked_loop_thread_gives_operation_timeout_then_recovers(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop", request_timeout=0.5)
    writer = make_client(server_url, thread_mode="loop")
    release = threading.Event()
    entered = threading.Event()

    def slow_callback(change: Any) -> None:
        entered.set()
        release.wait(10.0)                         # blocks the loop thread outside gevent

    sub = client.map("threads_blocked").subscribe(slow_callback)
    writer.map("threads_blocked").set("k", 1)
    assert entered.wait(5.0)
    started = time.monotonic()
    with pytest.raises(OperationTimeout, match="did not finish on the client's hub"):
        client.map("threads_blocked").get("k")
    assert time.monotonic() - started < 0.5 + GRACE_S + 1.0
    release.set()
    assert client.map("threads_blocked").get("k", timeout=5.0) == 1
    sub.close()


def test_calls_after_close_raise_client_closed_from_any_thread(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    kv = client.map("threads_closed")
    client.close()
    assert not client.runtime.home.loop_thread.alive

    def call(_: int) -> None:
        with pytest.raises(ClientClosed):
            kv.set("k", 1)

    assert run_threads(3, call) == []
    with pytest.raises(ClientClosed):
        kv.get("k")


def test_close_from_another_thread_stops_the_loop_thread(server_url: str, make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    loop_thread = client.runtime.home.loop_thread
    assert run_threads(1, lambda _: client.close()) == []
    assert not loop_thread.alive


def test_a_thread_waiting_without_timeout_is_released_when_the_client_closes(server_url: str,
                                                                            make_client: Any) -> None:
    client = make_client(server_url, thread_mode="loop")
    sub = client.map("threads_forever").subscribe()
    outcome: "queue.Queue[Any]" = queue.Queue()

    def wait_forever() -> None:
        try:
            outcome.put(sub.get())          # timeout=None: waits as long as the client lives
        except BaseException as exc:
            outcome.put(exc)

    RealThread(target=wait_forever, daemon=True).start()
    time.sleep(0.2)
    client.close()
    assert isinstance(outcome.get(timeout=5.0), ClientClosed)
