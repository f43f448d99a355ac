"""examples/flask_app.py and examples/django_app.py under ``gunicorn -k gevent`` (issue #6, item 4).

Each app shares one cluster-mode client per worker. Real HTTP requests go to 127.0.0.1 while a
cluster node is SIGKILLed; every request must succeed except those caught in the failover window,
and those at most FAILOVER_BUDGET. Every write that was acknowledged (HTTP 200) must read back.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import gevent
import pytest
import requests

pytestmark = [pytest.mark.system]

APPS = {"flask": "flask_app:app", "django": "django_app:application"}

REQUEST_TIMEOUT_S = 5.0      # the apps' TOPGUN_REQUEST_TIMEOUT: the client's deadline per call
FAILOVER_WINDOW_S = REQUEST_TIMEOUT_S + 1.0
FAILOVER_BUDGET = 0          # failed requests allowed inside the window: failover should hide the kill


def app_env(cluster: Any) -> Dict[str, str]:
    return {"TOPGUN_SEEDS": ",".join(cluster.urls), "TOPGUN_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}


# gevent: the worker is patched and the client joins its hub; gthread: plain OS threads, the client
# runs on its loop thread and the request threads call it.
WORKERS = {"gevent": "direct", "gthread": "loop"}


@pytest.mark.parametrize("worker_class", sorted(WORKERS))
@pytest.mark.parametrize("app", sorted(APPS))
def test_put_get_404_delete(app: str, worker_class: str, cluster: Any, gunicorn_factory: Any) -> None:
    server = gunicorn_factory(APPS[app], app_env(cluster), worker_class=worker_class)
    with requests.Session() as http:
        reply = http.put(f"{server.base_url}/kv/users/42", json={"name": "Ada", "langs": ["en"]}, timeout=10)
        assert reply.status_code == 200, reply.text
        reply = http.get(f"{server.base_url}/kv/users/42", timeout=10)
        assert (reply.status_code, reply.json()) == (200, {"name": "Ada", "langs": ["en"]})
        assert http.get(f"{server.base_url}/kv/users/absent", timeout=10).status_code == 404
        assert http.put(f"{server.base_url}/kv/users/x", data=b"{not json", timeout=10).status_code == 400
        assert http.delete(f"{server.base_url}/kv/users/42", timeout=10).status_code == 204
        assert http.get(f"{server.base_url}/kv/users/42", timeout=10).status_code == 404
        health = http.get(f"{server.base_url}/healthz", timeout=10).json()
        assert health["thread_mode"] == WORKERS[worker_class]


def test_the_flask_example_exposes_the_clients_metrics(cluster: Any, gunicorn_factory: Any) -> None:
    # One worker: /metrics is per worker process, so it then counts every request of the test.
    server = gunicorn_factory(APPS["flask"], app_env(cluster), workers=1)
    with requests.Session() as http:
        for i in range(5):
            assert http.put(f"{server.base_url}/kv/users/{i}", json={"n": i}, timeout=10).status_code == 200
        assert http.get(f"{server.base_url}/kv/users/3", timeout=10).json() == {"n": 3}
        reply = http.get(f"{server.base_url}/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in reply.text.splitlines() if line and not line.startswith("#")}
    assert samples["topgun_writes_acked_total"] == 5
    assert samples['topgun_requests_total{op="get",outcome="ok"}'] == 1
    assert samples["topgun_map_version"] >= 1          # cluster mode: the partition map it routes with
    assert samples["topgun_connects_total"] >= 1


class Traffic:
    """Writer threads: PUT a fresh key, then GET it back, until stopped; every outcome recorded."""

    def __init__(self, base_url: str, threads: int = 6) -> None:
        self.base_url = base_url
        self.results: List[Tuple[float, float, str, str, int]] = []   # start, end, op, key, status (0: error)
        self.acked: Dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _record(self, start: float, op: str, key: str, status: int) -> None:
        with self._lock:
            self.results.append((start, time.monotonic(), op, key, status))

    def _run(self, worker: int) -> None:
        n = 0
        with requests.Session() as http:
            while not self._stop.is_set():
                key, n = f"w{worker}-{n}", n + 1
                start = time.monotonic()
                try:
                    status = http.put(f"{self.base_url}/kv/load/{key}", json={"n": n},
                                      timeout=REQUEST_TIMEOUT_S + 5).status_code
                except requests.RequestException:
                    status = 0
                self._record(start, "PUT", key, status)
                if status != 200:
                    continue
                with self._lock:
                    self.acked[key] = n
                start = time.monotonic()
                try:
                    reply = http.get(f"{self.base_url}/kv/load/{key}", timeout=REQUEST_TIMEOUT_S + 5)
                    status = reply.status_code if reply.status_code != 200 or reply.json() == {"n": n} else -1
                except requests.RequestException:
                    status = 0
                self._record(start, "GET", key, status)

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT_S * 3)
        assert not any(t.is_alive() for t in self._threads), "an HTTP request hung"

    def count(self, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for r in self.results if r[0] >= since)


def wait_for_requests(traffic: Traffic, n: int, since: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while traffic.count(since) < n:
        assert time.monotonic() < deadline, f"only {traffic.count(since)} requests in {timeout}s"
        time.sleep(0.02)


@pytest.mark.parametrize("worker_class", sorted(WORKERS))
@pytest.mark.parametrize("app", sorted(APPS))
def test_requests_succeed_while_a_node_is_killed(app: str, worker_class: str, cluster: Any,
                                                 gunicorn_factory: Any) -> None:
    server = gunicorn_factory(APPS[app], app_env(cluster), worker_class=worker_class)
    with Traffic(server.base_url) as traffic:
        wait_for_requests(traffic, 200, 0.0, timeout=30)
        victim = cluster.owner_of("w0-0")
        killed_at = time.monotonic()
        cluster.kill(victim)
        wait_for_requests(traffic, 400, killed_at, timeout=60)   # plenty of traffic after the kill
    failed = [r for r in traffic.results if r[4] != 200]
    outside = [r for r in failed if not killed_at - 1.0 <= r[0] <= killed_at + FAILOVER_WINDOW_S]
    assert not outside, f"requests failed outside the failover window: {outside[:10]}"
    assert len(failed) <= FAILOVER_BUDGET, f"{len(failed)} failed requests (budget {FAILOVER_BUDGET}): {failed[:10]}"
    assert len(traffic.results) >= 600
    slowest = max(r[1] - r[0] for r in traffic.results)
    print(f"{app} ({worker_class}): {len(traffic.results)} requests, {len(failed)} failed, killed {victim}, "
          f"slowest {slowest:.2f}s")
    # Every acknowledged write is still there, read through the app (one GET per key, sampled).
    with requests.Session() as http:
        keys = sorted(traffic.acked)[:: max(1, len(traffic.acked) // 150)]
        lost = [k for k in keys
                if http.get(f"{server.base_url}/kv/load/{k}", timeout=10).json() != {"n": traffic.acked[k]}]
    assert not lost, f"acknowledged writes lost after killing {victim}: {lost[:10]}"


@pytest.mark.parametrize("app", sorted(APPS))
def test_preloaded_app_reconnects_in_every_forked_worker(app: str, cluster: Any, gunicorn_factory: Any) -> None:
    # --preload imports the app (and makes its client) in the master, then forks the workers.
    server = gunicorn_factory(APPS[app], app_env(cluster), workers=3, preload=True)
    pids = set()
    with requests.Session() as http:
        deadline = time.monotonic() + 20
        while len(pids) < 3 and time.monotonic() < deadline:
            with requests.Session() as fresh:   # a new connection may land on another worker
                health = fresh.get(f"{server.base_url}/healthz", timeout=5).json()
            assert health["connected"] and health["thread_mode"] == "direct"
            pids.add(health["pid"])
        assert len(pids) == 3
        for i in range(30):
            assert http.put(f"{server.base_url}/kv/preload/k{i}", json=i, timeout=10).status_code == 200
            assert http.get(f"{server.base_url}/kv/preload/k{i}", timeout=10).json() == i
    assert "Traceback" not in server.log_tail(500)


def test_preload_forks_a_connected_client_and_the_master_keeps_its_connection(
        cluster: Any, gunicorn_factory: Any, topgun_client_factory: Any) -> None:
    # The app's client connects and writes in the master; a master thread keeps writing "beat".
    server = gunicorn_factory("preload_connected_app:app", app_env(cluster), workers=2, preload=True,
                              chdir=Path(__file__).parent)
    observer = topgun_client_factory(cluster.urls)
    seen: Dict[int, Any] = {}
    deadline = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < deadline:
        with requests.Session() as fresh:   # a new connection may land on another worker
            health = fresh.get(f"{server.base_url}/healthz", timeout=5).json()
        seen[health["pid"]] = health
    assert len(seen) == 2, seen
    master = observer.map("preload").get("master")
    for pid, health in seen.items():
        assert pid != master == health["master"]                  # the client was made in the master ...
        assert health["connected"] and health["thread_mode"] == "direct"
        assert health["forks_seen"] == 1                          # ... and the fork hook ran in the worker
    with requests.Session() as http:
        for i in range(20):
            assert http.put(f"{server.base_url}/kv/preload/w{i}", json=i, timeout=10).status_code == 200
            assert http.get(f"{server.base_url}/kv/preload/w{i}", timeout=10).json() == i
    assert all(observer.map("preload").get(f"w{i}") == i for i in range(20))
    # The master's connection was not disturbed by the forks: its beat keeps going up.
    first = observer.map("preload").get("beat")
    deadline = time.monotonic() + 10
    while observer.map("preload").get("beat") <= first + 5:
        assert time.monotonic() < deadline, f"the master's writes stalled at beat {first}"
        gevent.sleep(0.05)
    assert "Traceback" not in server.log_tail(500)
