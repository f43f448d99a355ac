"""A client collected without ``close()`` warns and lets go of its thread and sockets (issue 13, item 6).

Like an unclosed file, a ``TopGunClient`` nobody references any more emits a ``ResourceWarning``
when it is collected, and its runtime is closed on its home: the loop thread ends and its
sockets are closed. The greenlets it runs hold nothing that reaches the client itself, so
dropping the last reference is enough. A client closed on purpose warns about nothing.
"""
from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from typing import Any, Callable, List, Set

import pytest

import topgun


def _loop_threads() -> Set[int]:
    return {t.ident for t in threading.enumerate() if t.name == "topgun-loop" and t.ident is not None}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _collect_unreferenced(make: Callable[[], Any]) -> List[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = make()
        client.map("m").set("k", 1)          # connected, and used
        del client
        gc.collect()
    return [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc (Linux)")
def test_an_unclosed_loop_client_warns_and_releases_its_thread_and_sockets(server_url: str) -> None:
    threads_before, fds_before = _loop_threads(), _open_fds()
    found = _collect_unreferenced(lambda: topgun.TopGunClient(server_url, thread_mode="loop"))
    assert len(found) == 1, [str(w.message) for w in found]
    message = str(found[0].message)
    assert message.startswith(f"<TopGunClient {server_url}> was never closed") and "client.close()" in message
    assert _eventually(lambda: _loop_threads() <= threads_before), "the client's loop thread is still running"
    assert _eventually(lambda: _open_fds() <= fds_before), (fds_before, _open_fds())


def test_an_unclosed_cluster_mode_client_warns_too(server_url: str) -> None:
    threads_before = _loop_threads()
    found = _collect_unreferenced(lambda: topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[server_url]),
                                                              thread_mode="loop"))
    assert len(found) == 1 and "was never closed" in str(found[0].message)
    assert _eventually(lambda: _loop_threads() <= threads_before)


def test_a_closed_client_warns_about_nothing(server_url: str) -> None:
    def make_and_close() -> Any:
        client = topgun.TopGunClient(server_url, thread_mode="loop")
        client.map("m").set("k", 1)
        client.close()
        return client

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = make_and_close()
        del client
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_client_that_failed_to_connect_warns_about_nothing(tmp_path: Any) -> None:
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(topgun.ConnectionLost):
                topgun.TopGunClient(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws", thread_mode="loop")
            gc.collect()
    finally:
        sock.close()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc (Linux)")
def test_an_unclosed_direct_client_warns_and_closes_its_sockets_on_its_hub(server_url: str) -> None:
    import gevent
    fds_before = _open_fds()
    found = _collect_unreferenced(lambda: topgun.TopGunClient(server_url, thread_mode="direct"))
    assert len(found) == 1 and "was never closed" in str(found[0].message)
    deadline = time.monotonic() + 10.0
    while _open_fds() > fds_before and time.monotonic() < deadline:
        gevent.sleep(0.02)          # the close runs on this thread's hub, as soon as it runs
    assert _open_fds() <= fds_before, (fds_before, _open_fds())
