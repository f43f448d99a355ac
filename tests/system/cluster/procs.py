"""A minimal process cluster for the cluster system tests: one ``python -m topgun.server`` per node.

Uses only the dev server's documented command line (``--node-id``, ``--port``, ``--seeds``, one
``READY <node-id> <ws-url>`` line once the node is in the map), so it works whether or not
``ProcessCluster`` exists yet. Every node runs in its own session (``start_new_session``) on
127.0.0.1, logs to ``log_dir/<node>.log``, and ``kill()`` is a real SIGKILL of that one pid.
Only processes started here are ever signalled.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import gevent
from gevent import subprocess


class NodeProcess:
    def __init__(self, node_id: str, log_dir: Path) -> None:
        self.node_id = node_id
        self.log_path = log_dir / f"{node_id}.log"
        self.url: Optional[str] = None
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    def start(self, seeds: List[str], timeout: float = 20.0) -> "NodeProcess":
        cmd = [sys.executable, "-m", "topgun.server", "--node-id", self.node_id, "--port", str(self.port),
               "--host", "127.0.0.1", "--timeout", str(timeout)]
        if seeds:
            cmd += ["--seeds", ",".join(seeds)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                                     cwd=str(Path(__file__).resolve().parents[3]))
        log.close()
        line = b""
        with gevent.Timeout(timeout + 5.0, TimeoutError(f"{self.node_id}: no READY line within {timeout + 5.0}s")):
            while not line.startswith(b"READY"):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.node_id} exited before READY (rc={self.proc.wait()}); "
                                       f"see {self.log_path}")
        _ready, node_id, url = line.decode().split()
        assert node_id == self.node_id, line
        self.url = url
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL this node's process (only ours: we started it) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<NodeProcess {self.node_id} {self.url} {'alive' if self.alive else 'dead'}>"


class ProcCluster:
    """Nodes n1..nN as separate processes; ``kill``/``restart``/``add_node`` like the embedded one."""

    def __init__(self, nodes: int, log_dir: Path) -> None:
        self.size = nodes
        self.log_dir = log_dir
        self.nodes: Dict[str, NodeProcess] = {}

    def start(self, timeout: float = 30.0) -> "ProcCluster":
        first = NodeProcess("n1", self.log_dir).start([], timeout)
        self.nodes["n1"] = first
        for i in range(2, self.size + 1):
            self.nodes[f"n{i}"] = NodeProcess(f"n{i}", self.log_dir)
        jobs = [gevent.spawn(self.nodes[f"n{i}"].start, [first.url], timeout) for i in range(2, self.size + 1)]
        gevent.joinall(jobs, raise_error=True)
        return self

    @property
    def urls(self) -> List[str]:
        return [n.url for _, n in sorted(self.nodes.items()) if n.alive and n.url]

    def live(self) -> List[str]:
        return sorted(n for n, p in self.nodes.items() if p.alive)

    def kill(self, node_id: str) -> float:
        """SIGKILL one node; returns time.monotonic() right after the signal was delivered."""
        proc = self.nodes[node_id]
        assert proc.proc is not None
        os.kill(proc.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.proc.wait(timeout=10)
        return killed_at

    def restart(self, node_id: str, timeout: float = 30.0) -> NodeProcess:
        """Start ``node_id`` again on its old port, joining whichever nodes are alive."""
        node = self.nodes[node_id]
        node.kill()
        return node.start([self.nodes[n].url for n in self.live() if self.nodes[n].url], timeout)

    def add_node(self, timeout: float = 30.0) -> NodeProcess:
        node_id = f"n{len(self.nodes) + 1}"
        node = self.nodes[node_id] = NodeProcess(node_id, self.log_dir)
        return node.start([self.nodes[n].url for n in self.live() if n != node_id], timeout)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
