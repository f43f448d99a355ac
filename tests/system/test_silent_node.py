"""Every blocking call ends by its deadline against a connected but silent node (SIGSTOP).

A stopped process keeps its sockets open: the client's connections stay up, TCP accepts
what it sends, and nothing ever comes back. Each blocking call (set, get, put_all, remove,
entries, query, subscribe, ping) must still return or raise by its ``timeout`` plus a little
slack, in single-server mode (the real TopGun 2.2.0 server and a dev-server process) and in
cluster mode (every node stopped, or only the owner of the key). The calls run at once, on
one client, so a call that blocks the hub would also make the others late.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, Dict, List, Tuple

import gevent
import pytest

import topgun
from topgun.errors import OperationTimeout, TopGunError
from topgun.server.process import stop_process

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

TIMEOUT = 1.5        # each call's deadline; below the dev cluster's SIGSTOP detection (about 2.7 s)
SLACK = 1.0          # the reaper ticks every 50 ms; the rest is for a loaded 2-core machine
KEY = "silent:1"
CALLS = ("set", "get", "put_all", "remove", "entries", "query", "subscribe", "ping")


def blocking_calls(client: Any) -> Dict[str, Callable[[], Any]]:
    m = client.map("silent")
    return {
        "set": lambda: m.set(KEY, 2, timeout=TIMEOUT),
        "get": lambda: m.get(KEY, timeout=TIMEOUT),
        "put_all": lambda: m.put_all({KEY: 3, "silent:2": 3}, timeout=TIMEOUT),
        "remove": lambda: m.remove(KEY, timeout=TIMEOUT),
        "entries": lambda: m.entries(timeout=TIMEOUT),
        "query": lambda: m.query(where={"n": 1}, timeout=TIMEOUT),
        "subscribe": lambda: m.subscribe(timeout=TIMEOUT).close(),
        "ping": lambda: client.ping(timeout=TIMEOUT),
    }   # keys: CALLS


def run_all(client: Any) -> Dict[str, Tuple[float, str]]:
    """Run every blocking call at once; per call: seconds taken and what it did."""
    out: Dict[str, Tuple[float, str]] = {}

    def one(name: str, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            call()
            what = "returned"
        except TopGunError as exc:
            what = type(exc).__name__
        out[name] = (time.monotonic() - started, what)

    jobs = [gevent.spawn(one, name, call) for name, call in blocking_calls(client).items()]
    gevent.joinall(jobs, timeout=TIMEOUT + SLACK + 30.0)
    for job in jobs:
        job.kill()
    return out


def assert_by_deadline(results: Dict[str, Tuple[float, str]], what: str) -> None:
    report = ", ".join(f"{n} {t:.2f}s {w}" for n, (t, w) in sorted(results.items()))
    print(f"\n{what}: {report}")
    assert sorted(results) == sorted(CALLS), f"unfinished calls: {report}"
    late = [n for n, (t, _) in results.items() if t > TIMEOUT + SLACK]
    assert not late, f"{what}: past the {TIMEOUT}s deadline + {SLACK}s: {late} ({report})"
    # The write to the silent node's key cannot have been acknowledged: proof the node was hit.
    assert results["set"][1] == OperationTimeout.__name__, report


def stopped(pids: List[int]) -> Any:
    class Stopped:
        def __enter__(self) -> None:
            for pid in pids:
                stop_process(pid)           # returns once every thread is stopped, not when the signal is sent

        def __exit__(self, *exc: Any) -> None:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)   # so the fixtures can stop it cleanly
    return Stopped()


@pytest.mark.realserver
def test_single_real_server_stopped(topgun_real_server_factory: Any, topgun_url_client_factory: Any) -> None:
    server = topgun_real_server_factory()
    client = topgun_url_client_factory(server.url, request_timeout=10.0)
    client.map("silent").set(KEY, 1)
    assert server.pid is not None
    with stopped([server.pid]):
        results = run_all(client)
    assert_by_deadline(results, "real server stopped")
    assert all(w != "returned" for n, (_, w) in results.items()), results


def test_single_dev_server_process_stopped(topgun_process_cluster_factory: Any,
                                           topgun_url_client_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(1)
    client = topgun_url_client_factory(cluster.urls[0], request_timeout=10.0)
    client.map("silent").set(KEY, 1)
    with stopped([p.pid for p in cluster.processes.values()]):
        results = run_all(client)
    assert_by_deadline(results, "dev server stopped")
    assert all(w != "returned" for n, (_, w) in results.items()), results


@pytest.mark.parametrize("which", ["every-node", "owner"])
def test_cluster_with_silent_nodes(which: str, topgun_process_cluster_factory: Any,
                                   topgun_client_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    client: topgun.TopGunClient = topgun_client_factory(cluster.urls, request_timeout=10.0)
    client.map("silent").set(KEY, 1)
    deadline = time.monotonic() + 20.0
    while not (len(client.cluster.node_states()) == 3
               and all(s.state == "CONNECTED" for s in client.cluster.node_states().values())):
        assert time.monotonic() < deadline, f"not connected to every node: {client.cluster.node_states()}"
        gevent.sleep(0.02)
    owner = client.cluster.owner_of(KEY)
    victims = cluster.live if which == "every-node" else [owner]
    with stopped([cluster.processes[n].pid for n in victims]):
        results = run_all(client)
    assert_by_deadline(results, f"cluster, stopped: {victims}")
    if which == "every-node":
        assert all(w != "returned" for n, (_, w) in results.items()), results
