"""Chaos on the dev process cluster, judged by a history checker (marker: system).

A mixed load (one pipelined writer per key with unique values, readers on a second client)
runs against ``python -m topgun.server`` processes while nodes are SIGKILLed or SIGSTOPped:
owners, the seed, several in a row, one during a join. Half the keys stop being written just
before the fault, so nothing rewrites them and their last acknowledged write must survive the
fault; the other half keep being written through it. At the end every key is read once more
and :func:`topgun.testing.history.check` judges the whole history: no acknowledged write lost,
no stale or backwards read, no value never written, each writer's acks in order, and each key
linearizable. The summary is printed (``pytest -s``) and is the assertion message.

Each test is bounded (well under a minute on a loaded 2-core machine).
"""
from __future__ import annotations

import re
import signal
import time
from typing import Any, Callable, List

import gevent
import pytest
from chaosload import ChaosLoad
from steadyload import wait_for

from topgun.testing.history import OK, UNKNOWN, History, Summary

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

KEYS = [f"acct:{i}" for i in range(24)]
FROZEN = KEYS[::2]                     # not written after the fault
STEADY = KEYS[1::2]                    # written through it
HOT = KEYS[:8]                         # written back to back: several frames per key in flight
WARMUP_OPS = 400


@pytest.fixture
def chaos(topgun_process_cluster_factory: Callable[..., Any], topgun_client_factory: Callable[..., Any]) -> Any:
    """``start(nodes=3) -> (cluster, writer_client, load)``: a process cluster with a ChaosLoad running."""
    def start(nodes: int = 3, **load_kw: Any) -> Any:
        cluster = topgun_process_cluster_factory(nodes)
        writer = topgun_client_factory(cluster.urls, request_timeout=20.0)
        reader = topgun_client_factory(cluster.urls, request_timeout=10.0)
        load = ChaosLoad(writer, reader, KEYS, frozen=FROZEN, hot=HOT, **load_kw).start()
        wait_for(lambda: load.op_count() >= WARMUP_OPS, timeout=30.0, what="load running")
        return cluster, writer, load
    return start


def finish(load: ChaosLoad, fresh_client: Any, what: str) -> Summary:
    more = load.op_count() + WARMUP_OPS            # the load goes on a while after the recovery
    wait_for(lambda: load.op_count() >= more, timeout=30.0, what="load after the recovery")
    summary = load.finish(fresh_client)
    print(f"\n{what}\n{summary}")
    finals = [op for op in load.history.ops if op.process == "final"]
    assert all(op.status == OK for op in finals), f"final reads failed: {[op.describe() for op in finals]}"
    return summary


def assert_clean(summary: Summary, history: History) -> None:
    assert summary.valid, str(summary)
    assert summary.ok >= WARMUP_OPS, str(summary)
    # A write whose outcome is unknown (it timed out or its connection died) is a failover that took
    # longer than the write's 20 s deadline. A read may time out (5 s) while its owner is stopped and
    # not yet declared dead: that is its deadline working, so it is shown but allowed.
    unknown = [op for op in history.ops if op.status == UNKNOWN]
    writes = [op for op in unknown if op.kind == "write"]
    assert not writes, f"{summary}\nwrites with no outcome: {[op.describe() for op in writes[:5]]}"
    if unknown:
        print(f"reads that ended at their deadline: {[op.describe() for op in unknown[:5]]}")


def owners_of_keys(client: Any, keys: List[str]) -> List[str]:
    return sorted({client.cluster.owner_of(k) for k in keys})


def test_sigkill_of_an_owner_loses_no_acknowledged_write(chaos: Any, topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    victim = next(n for n in owners_of_keys(writer, HOT) if n != "n1")   # an owner of hot keys, not the seed
    fault = load.freeze()
    cluster.kill(victim)
    took = load.wait_acked_after(fault, STEADY, what=f"after SIGKILL of {victim}")
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"SIGKILL of owner {victim}: every steady key written again after {took:.2f}s")
    assert_clean(summary, load.history)


def test_sigkill_of_the_seed_loses_no_acknowledged_write(chaos: Any, topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    seed = "n1"                                        # the first URL of both clients, the coordinator
    fault = load.freeze()
    cluster.kill(seed)
    took = load.wait_acked_after(fault, STEADY, what="after SIGKILL of the seed")
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"SIGKILL of the seed {seed}: every steady key written again after {took:.2f}s")
    assert_clean(summary, load.history)


def test_repeated_sigkills_and_restarts_lose_no_acknowledged_write(chaos: Any, topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    rounds = []
    for victim in ("n2", "n3", "n1"):                 # every node once, the seed last
        before = load.freeze() if victim == "n1" else time.monotonic()   # frozen keys: last kill only
        cluster.kill(victim)
        took = load.wait_acked_after(before, STEADY, what=f"after SIGKILL of {victim}")
        cluster.restart(victim)
        cluster.wait_converged(20.0)
        rounds.append(f"{victim}: {took:.2f}s")
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"three SIGKILLs and restarts (steady keys written again after {', '.join(rounds)})")
    assert_clean(summary, load.history)


def test_sigstop_of_an_owner_loses_no_acknowledged_write(chaos: Any, topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    victim = next(n for n in owners_of_keys(writer, FROZEN) if n != "n1")
    proc = cluster.processes[victim]
    fault = load.freeze()
    proc.signal(signal.SIGSTOP)                        # connected, but silent
    try:
        took = load.wait_acked_after(fault, STEADY, what=f"while {victim} is stopped")
    finally:
        proc.signal(signal.SIGCONT)
    # The resumed node was declared dead meanwhile; whatever it does now must not undo acked writes.
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"SIGSTOP of owner {victim} (steady keys written again after {took:.2f}s), then SIGCONT")
    assert_clean(summary, load.history)


def test_sigstop_of_the_seed_loses_no_acknowledged_write(chaos: Any, topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    proc = cluster.processes["n1"]
    fault = load.freeze()
    proc.signal(signal.SIGSTOP)
    try:
        took = load.wait_acked_after(fault, STEADY, what="while the seed is stopped")
    finally:
        proc.signal(signal.SIGKILL)                    # a hung seed that never comes back
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"SIGSTOP of the seed n1, then SIGKILL (steady keys written again after {took:.2f}s)")
    assert_clean(summary, load.history)


def test_sigkill_of_an_owner_during_a_join_loses_no_acknowledged_write(chaos: Any,
                                                                       topgun_client_factory: Any) -> None:
    cluster, writer, load = chaos()
    joining = gevent.spawn(cluster.add_node, 30.0)
    coordinating = re.compile(r"coordinating map v\d+ over \[[^\]]*'n4'")
    wait_for(lambda: any(coordinating.search(cluster.log_tail(n, 400)) for n in ("n1", "n2", "n3")),
             timeout=30.0, what="the join of n4 under way")
    fault = load.freeze()
    cluster.kill("n2")                                 # an owner whose partitions are being rebalanced
    took = load.wait_acked_after(fault, STEADY, what="after SIGKILL of n2 during the join")
    joining.join(30.0)
    assert joining.successful(), f"n4 did not join: {joining.exception}"
    cluster.wait_converged(20.0)
    summary = finish(load, topgun_client_factory(cluster.urls),
                     f"SIGKILL of n2 while n4 joined (steady keys written again after {took:.2f}s)")
    assert_clean(summary, load.history)
