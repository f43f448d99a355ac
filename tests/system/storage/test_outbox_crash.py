"""The durable outbox survives a SIGKILL (issue 15, "must show").

A client process writes with SQLite storage while every node of the cluster is down, and is
SIGKILLed with thousands of writes outstanding. After the cluster is back, a new client on the
same file delivers every one of them, in order per key, none twice (the dev server's per-key
history, ``Store.keep_history``, records every write its owner sees); and a write another
client made in between, newer than the replayed ones, is not overwritten (the dev server
merges by the writes' own HLC timestamps, which the outbox keeps).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import gevent
import pytest

import topgun
from topgun.clock import GeventClock

pytestmark = pytest.mark.system

CLOCK = GeventClock()
WRITES = 4000
KEYS = 1000  # four writes per key, so order per key matters

_WRITER = textwrap.dedent("""
    import json, sys
    import topgun
    db, seeds, writes, keys = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=seeds), storage=db,
                                 wait_connected=False, request_timeout=600.0)
    users = client.map("crash")
    for i in range(writes):
        users.set_async(f"k{i % keys}", f"v{i}")
    print("WROTE", writes, client.pending_writes, flush=True)
    sys.stdin.read()   # until the test kills us (or, if the test dies, until stdin closes)
""")


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = CLOCK.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert CLOCK.monotonic() < deadline, f"{what}: not within {timeout}s"
        gevent.sleep(0.02)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    reader = gevent.get_hub().threadpool.spawn(proc.stdout.readline)  # type: ignore[union-attr]
    line = reader.get(timeout=timeout)
    return line.decode().strip()


def _history(cluster: Any) -> Dict[Tuple[str, str], List[Tuple[Any, Any, bool, bool]]]:
    merged: Dict[Tuple[str, str], List[Tuple[Any, Any, bool, bool]]] = {}
    for node in cluster.nodes.values():
        for mk, entries in (node.store.history or {}).items():
            merged.setdefault(mk, []).extend(entries)
    return merged


def test_writes_outstanding_at_a_sigkill_are_delivered_by_the_next_client(
        tmp_path: Path, topgun_cluster_factory: Callable[..., Any],
        topgun_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    cluster = topgun_cluster_factory(3)
    seeds = list(cluster.urls)
    for node_id in sorted(cluster.nodes):
        cluster.kill(node_id)                       # every node down, ports kept for restart()
    db = tmp_path / "outbox.db"

    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), json.dumps(seeds), str(WRITES), str(KEYS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = _read_line(writer, 60.0)
        assert line.split()[:2] == ["WROTE", str(WRITES)], line
        assert int(line.split()[2]) == WRITES        # nothing was delivered: all outstanding
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.close()
        writer.stdout.close()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == WRITES

    for node_id in ("n1", "n2", "n3"):
        cluster.restart(node_id)
    cluster.wait_converged()
    for node in cluster.nodes.values():
        node.store.keep_history()

    other = topgun_client_factory(cluster.urls)
    other.map("crash").set("k0", "later")          # newer than every queued write

    replayer = topgun_client_factory(cluster.urls, storage=str(db))
    _wait_for(lambda: replayer.stats["outbox"]["rows"] == 0, 60.0, "outbox drained")
    assert replayer.stats["outbox"]["replayed"] == WRITES
    _wait_for(lambda: replayer.pending_writes == 0, 30.0, "writes acknowledged")

    history = _history(cluster)
    for k in range(KEYS):
        key = f"k{k}"
        written = [f"v{i}" for i in range(k, WRITES, KEYS)]
        arrived = [value for _, value, _, _ in history[("crash", key)] if value != "later"]
        applied = [value for _, value, _, won in history[("crash", key)] if won]
        assert sorted(arrived) == sorted(written), key       # every one delivered ...
        assert len(arrived) == len(set(arrived)), key        # ... none twice
        if key == "k0":
            assert applied == ["later"], history[("crash", key)]  # the older replay changed nothing
        else:
            assert applied == written, key                   # in the order they were written
    reader = other.map("crash")
    assert reader.get("k0") == "later"
    assert reader.get("k1") == f"v{WRITES - KEYS + 1}"
    assert replayer.stats["outbox"]["dropped"] == 0
