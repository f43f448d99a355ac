"""The demo: a write workload on an embedded 3-node cluster, with a node killed mid-run.

    python -m topgun.cli.demo [--nodes 3] [--duration 12] [--users 20] [--no-kill]

It starts one dev-server process per node (``topgun.server``), connects a cluster-mode
``TopGunClient``, and runs ``--users`` greenlets that each write their own keys in a loop.
After a third of the run it SIGKILLs the node that owns the most keys, and restarts it after
two thirds. Once a second it prints throughput, latency and the cluster's state. At the end
it reads back every key and checks that it holds the last acknowledged value: no
acknowledged write may be lost. Exit status 0 means none was.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from typing import Dict, List, Optional

import gevent

import topgun
from topgun.server.process import ProcessCluster

__all__ = ["main"]


def _pct(values: List[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Workload:
    """Writer greenlets; remembers the last acknowledged value of every key."""

    def __init__(self, client: topgun.TopGunClient, users: int, keys_per_user: int) -> None:
        self.map = client.map("demo")
        self.users = users
        self.keys_per_user = keys_per_user
        self.acked: Dict[str, int] = {}
        self.latencies: List[float] = []
        self.errors: collections.Counter = collections.Counter()
        self.done = 0
        self.running = True

    def user(self, u: int) -> None:
        i = 0
        while self.running:
            key = f"user{u}:key{i % self.keys_per_user}"
            start = time.perf_counter()
            try:
                self.map.set(key, i, timeout=10.0)
            except topgun.TopGunError as exc:
                self.errors[type(exc).__name__] += 1
            else:
                self.latencies.append(time.perf_counter() - start)
                self.acked[key] = i
                self.done += 1
            i += 1

    def take_latencies(self) -> List[float]:
        taken, self.latencies = self.latencies, []
        return taken


def _status(client: topgun.TopGunClient) -> str:
    states = client.cluster.node_states()
    up = sum(1 for s in states.values() if s.state == "CONNECTED")
    return f"map v{client.cluster.map_version}, nodes up {up}/{len(states)}"


def run(nodes: int, duration: float, users: int, kill: bool, out=sys.stdout) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="topgun-demo-") as logs:
        cluster = ProcessCluster(nodes, log_dir=logs)
        say(f"starting a {nodes}-node embedded TopGun cluster (one process per node) ...")
        cluster.start()
        try:
            for node_id in cluster.live:
                say(f"  {node_id}  {cluster.url(node_id)}")
            client = topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=cluster.urls))
            try:
                return _drive(cluster, client, duration, users, kill, say)
            finally:
                client.close()
        finally:
            cluster.stop()


def _drive(cluster: ProcessCluster, client: topgun.TopGunClient, duration: float, users: int,
           kill: bool, say) -> int:
    work = Workload(client, users, keys_per_user=50)
    say(f"connected: {_status(client)}; {users} writers, {duration:.0f} s, write concern REPLICATED")
    say(f"{'t':>4} {'acked/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  cluster")
    greenlets = [gevent.spawn(work.user, u) for u in range(users)]
    victim: Optional[str] = None
    start = time.monotonic()
    last_done, tick = 0, 1
    while time.monotonic() - start < duration:
        gevent.sleep(max(0.0, start + tick - time.monotonic()))
        lat = work.take_latencies()
        say(f"{tick:>3}s {work.done - last_done:>8} {_pct(lat, .5) * 1e3:>7.2f} {_pct(lat, .99) * 1e3:>7.2f} "
            f"{sum(work.errors.values()):>6}  {_status(client)}")
        last_done = work.done
        if kill and victim is None and tick >= duration / 3:
            owners = collections.Counter(client.cluster.owner_of(k) for k in work.acked)
            victim = owners.most_common(1)[0][0]
            say(f"  >>> SIGKILL {victim} (owner of {owners[victim]} of the keys being written)")
            cluster.kill(victim)
        elif kill and victim is not None and tick == int(2 * duration / 3):
            say(f"  >>> restarting {victim}")
            gevent.spawn(cluster.restart, victim)
        tick += 1
    work.running = False
    gevent.joinall(greenlets, timeout=15.0)
    return _verify(client, work, say)


def _verify(client: topgun.TopGunClient, work: Workload, say) -> int:
    demo = client.map("demo")
    stored = demo.entries()
    lost = {k: v for k, v in work.acked.items() if stored.get(k) != v}
    stats = client.cluster.stats
    say(f"done: {work.done} writes acknowledged, errors {dict(work.errors) or 'none'}, "
        f"routing direct={stats.get('direct')} retries={stats.get('retries')}")
    if lost:
        say(f"LOST {len(lost)} acknowledged writes, e.g. {list(lost.items())[:3]}")
        return 1
    say(f"read back all {len(work.acked)} keys: every acknowledged write is there")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m topgun.cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of load (default 12)")
    parser.add_argument("--users", type=int, default=20, help="writer greenlets (default 20)")
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="do not kill a node")
    args = parser.parse_args(argv)
    if args.nodes < 2 and args.kill:
        parser.error("killing a node needs --nodes 2 or more (or --no-kill)")
    return run(args.nodes, args.duration, args.users, args.kill)


if __name__ == "__main__":
    sys.exit(main())
