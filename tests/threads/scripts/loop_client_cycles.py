"""Connect and close a loop-thread client many times; print how much was left behind, as JSON.

Usage: loop_client_cycles.py URL WARM_UP CYCLES
"""
from __future__ import annotations

import gc
import json
import sys

import greenlet
import psutil
from gevent.hub import Hub

import topgun


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))


def dead_hubs() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Hub) and o.loop is None)


def connect_and_close(url: str) -> None:
    client = topgun.TopGunClient(url, thread_mode="loop")
    assert client.thread_mode == "loop"
    client.close()


def main(url: str, warm_up: int, cycles: int) -> None:
    for _ in range(warm_up):
        connect_and_close(url)
    process = psutil.Process()
    greenlets, rss, hubs = live_greenlets(), process.memory_info().rss, dead_hubs()
    for _ in range(cycles):
        connect_and_close(url)
    print(json.dumps({"greenlets": live_greenlets() - greenlets, "dead_hubs": dead_hubs() - hubs,
                      "rss": process.memory_info().rss - rss}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
