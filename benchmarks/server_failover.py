"""How fast the dev cluster notices a dead node: SIGKILL (links drop) and SIGSTOP (the node hangs).

Starts a 3-process :class:`~topgun.server.process.ProcessCluster`, then per round kills (or
freezes) one node and polls the survivors with PARTITION_MAP_REQUEST until both hold a map
without it; the time from the signal to that moment is reported. The node is then restarted for
the next round. The goals (topgun.server docs): under 1 s after a kill, under 3 s after a hang.

Run::

    python benchmarks/server_failover.py --rounds 3

Recorded 2026-11-26 (2 shared cores, loaded; median of 3 rounds):

    SIGKILL  0.12 s to a map without the node (rounds 0.12 / 0.10 / 0.12)
    SIGSTOP  2.67 s to a map without the node (rounds 2.69 / 2.67 / 2.61)
"""
from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time

import gevent

from topgun.server.process import ProcessCluster


def time_to_removal(cluster: ProcessCluster, victim: str, sig: int) -> float:
    survivors = [n for n in cluster.live if n != victim]
    start = time.monotonic()
    cluster.processes[victim].signal(sig)
    while True:
        maps = [cluster.partition_map(n) for n in survivors]
        if all(victim not in {x["nodeId"] for x in m["nodes"]} for m in maps):
            return time.monotonic() - start
        if time.monotonic() - start > 20:
            raise SystemExit(f"{victim} still in the map after 20 s")
        gevent.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {"SIGKILL": [], "SIGSTOP": []}
    with tempfile.TemporaryDirectory() as logs:
        cluster = ProcessCluster(3, log_dir=logs).start()
        try:
            for i in range(args.rounds):
                for name, sig in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
                    victim = ["n2", "n3"][i % 2]
                    took = time_to_removal(cluster, victim, sig)
                    results[name].append(took)
                    print(f"  round {i + 1} {name} {victim}: {took:.2f} s", file=sys.stderr)
                    if sig == signal.SIGSTOP:
                        cluster.processes[victim].signal(signal.SIGCONT)
                    cluster.restart(victim)
                    cluster.wait_converged(10.0)
        finally:
            cluster.stop()
    for name, values in results.items():
        print(f"{name}  {statistics.median(values):.2f} s to a map without the node "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
