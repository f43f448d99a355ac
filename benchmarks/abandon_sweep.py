"""How long the hub stays blocked while a timed-out walk abandons its requests.

A walk of a big map (``walk_all``, an OR-map walk) that times out during its leaf level gives
up on up to 4,096 requests at once, in one loop without a greenlet switch; each
``Connection.abandon`` also sweeps requests given up on earlier. Prints, per request count,
the time the loop took, which is the longest any other greenlet of the process waited. No
server: the requests are registered with ``expect`` and never sent.

    python benchmarks/abandon_sweep.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/abandon_sweep.py   # the same on another checkout
"""
from __future__ import annotations

import argparse
import time

from topgun.transport.connection import Connection


def run(n: int) -> float:
    conn = Connection("ws://127.0.0.1:1/ws", ping_interval=None)
    keys = [("merkle", "bench", f"{i:03x}") for i in range(n)]
    results = [conn.expect(k) for k in keys]
    start = time.perf_counter()
    for key, result in zip(keys, results):
        conn.abandon(key, result)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[273, 1024, 4096])
    args = parser.parse_args()
    for n in args.counts:
        print(f"{n:6d} requests abandoned in one loop: {run(n) * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
