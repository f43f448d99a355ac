"""What the machine and the processes did during a run: CPU seconds per process, load average.

``cpu_snapshot`` before and after a run, then ``cpu_figures``, gives the cores each process used
(1.0 = one core busy) over the run. CPU per op stays put when a shared machine makes ops/s swing,
so the benchmark reports compare it. Linux only for other processes (``/proc/<pid>/stat``);
elsewhere only the client's own figure is given.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, Iterable, List, Optional

from .targets import Target

try:
    import resource
except ImportError:  # not on Windows: the client's own CPU is then not reported
    resource = None  # type: ignore[assignment]

__all__ = ["machine_info", "loadavg", "process_cpu_s", "cpu_snapshot", "cpu_figures"]


def machine_info() -> Dict[str, Any]:
    return {"platform": platform.platform(), "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def process_cpu_s(pid: Optional[int] = None) -> Optional[float]:
    """CPU seconds (user + system) used so far by ``pid`` (None: this process); None if unknown."""
    if pid is None:
        if resource is None:
            return None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_snapshot(target: Target, extra_pids: Iterable[int]) -> Dict[str, Any]:
    # Keyed by name and pid: a node restarted during the run is a new process, and its old
    # one can no longer be read, so it is left out rather than reported wrong.
    snap: Dict[Any, Optional[float]] = {("client", None): process_cpu_s()}
    pids = dict(target.server_pids())
    pids.update({f"pid {pid}": pid for pid in extra_pids})
    for name, pid in pids.items():
        snap[(name, pid)] = process_cpu_s(pid)
    return snap


def cpu_figures(before: Dict[Any, Optional[float]], after: Dict[Any, Optional[float]],
                elapsed_s: float) -> Dict[str, Any]:
    """CPU use of the client and each server process over the run, in cores (1.0 = one core busy)."""
    cores: Dict[str, Any] = {}
    for (name, pid), start in before.items():
        end = after.get((name, pid))
        if start is not None and end is not None and elapsed_s > 0:
            cores[name] = round((end - start) / elapsed_s, 3)
    return {"cpu_cores": cores, "loadavg_end": loadavg(), "cpus": os.cpu_count()}
