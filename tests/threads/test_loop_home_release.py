"""A closed loop-thread client leaves nothing behind: no hub, no loop, no greenlets (issue 10, item 4).

Before the fix every unpatched client left its dead hub and its thread's main greenlet behind
(+2 greenlets and about 20 KB per connect/close), held through the frame of ``LoopThread._main``
by a ``LoopExit`` that ``Hub.destroy()`` raised into a hub still suspended in a callback.
"""
from __future__ import annotations

import gc
from typing import Any

import greenlet
import psutil
import pytest
from gevent.hub import Hub

import topgun

pytestmark = pytest.mark.timeout(120)

CYCLES = 500
WARM_UP = 20


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))


def dead_hubs() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Hub) and o.loop is None)


def connect_and_close(url: str) -> None:
    client = topgun.TopGunClient(url, thread_mode="loop")
    assert client.thread_mode == "loop"
    client.close()


def test_500_loop_client_connect_close_cycles_leave_greenlets_and_rss_flat(server_url: str) -> None:
    for _ in range(WARM_UP):
        connect_and_close(server_url)
    process = psutil.Process()
    greenlets_before, rss_before, hubs_before = live_greenlets(), process.memory_info().rss, dead_hubs()

    for _ in range(CYCLES):
        connect_and_close(server_url)

    greenlets_after, rss_after = live_greenlets(), process.memory_info().rss
    assert greenlets_after - greenlets_before <= 20, (greenlets_before, greenlets_after)
    assert dead_hubs() - hubs_before <= 5
    assert rss_after - rss_before <= 3 * 1024 * 1024, f"RSS grew by {(rss_after - rss_before) / 1e6:.1f} MB"


def test_a_closed_loop_thread_leaves_no_frame_of_its_main_behind(server_url: str) -> None:
    client = topgun.TopGunClient(server_url, thread_mode="loop")
    client.map("release").set("k", 1)
    client.close()
    gc.collect()
    frames: Any = [o for o in gc.get_objects()
                   if type(o).__name__ == "frame" and o.f_code.co_name == "_main"
                   and o.f_code.co_filename.endswith("threads.py")]
    assert frames == []
