"""pytest plugin for tests/threads/test_hub_monitor.py: record gevent's blocked-hub reports.

Loaded with ``-p hub_monitor_plugin`` in a subprocess that runs with
GEVENT_MONITOR_THREAD_ENABLE=1 and GEVENT_MAX_BLOCKING_TIME=0.1. Each EventLoopBlocked event
(raised in a monitor thread, one per running hub) is appended as one JSON line to the file named
by TOPGUN_HUB_REPORTS: the test that was running, the blocked greenlet, and the blocked stack as
(file, line, function) frames, innermost last.
"""
from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, List, Optional

import gevent.events

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.*)$')
_lock = threading.Lock()
_current_test: Optional[str] = None


def _blocked_stack(info: List[str]) -> List[List[Any]]:
    frames: List[List[Any]] = []
    inside = False
    for chunk in info:
        for line in str(chunk).splitlines():
            if line.startswith("Blocked Stack"):
                inside = True
                continue
            if inside and line.startswith("Info:"):
                return frames
            match = _FRAME.match(line) if inside else None
            if match:
                frames.append([match["file"], int(match["line"]), match["func"]])
    return frames


def _on_event(event: Any) -> None:
    if not isinstance(event, gevent.events.EventLoopBlocked):
        return
    record = {"test": _current_test, "greenlet": repr(event.greenlet), "blocking_time": event.blocking_time,
              "stack": _blocked_stack(list(event.info))}
    path = os.environ.get("TOPGUN_HUB_REPORTS")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


gevent.events.subscribers.append(_on_event)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    global _current_test
    _current_test = nodeid
