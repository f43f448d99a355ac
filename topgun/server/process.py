"""ProcessCluster: one ``python -m topgun.server`` process per node, for real SIGKILL tests.

Each node runs ``[sys.executable, "-m", "topgun.server", "--node-id", ID, "--port", PORT,
"--seeds", URLS]`` in its own session (``start_new_session=True``), with stdout and stderr in
``log_dir/<node-id>.log``. Starting a node waits, with a deadline, for its
``READY <node-id> <ws-url>`` line, which it prints once it is part of the cluster's map.
``kill()`` is SIGKILL by pid; ``restart()`` comes back on the same port (empty, it rejoins and
gets its partitions back); ``stop()`` is SIGTERM, then SIGKILL after ``timeout``.

Nodes die with their parent: each gets the read end of a pipe (``--parent-fd``) whose write end
only this process holds, and exits once it reads EOF, which is what the kernel delivers when
this process dies for any reason, SIGKILL included. (A ``preexec_fn`` with
``PR_SET_PDEATHSIG`` would be Linux-only and fire when the *thread* that spawned the node
exits.) Not covered: a node that is SIGSTOPped when its parent dies stays stopped, and a
child forked (without exec) from this process after the node started keeps the pipe open.

Waiting never blocks the gevent hub: processes are polled with ``clock.sleep``.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import gevent

from topgun.clock import Clock, GeventClock
from topgun.protocol.hashing import partition_id

from .auth import sign_hs256
from .rawclient import RawClient

__all__ = ["ProcessCluster", "NodeProcess", "NodeStartError", "stop_process"]

_ADDR_IN_USE = re.compile(r"address already in use|errno 98", re.IGNORECASE)
_LOG_TAIL_LINES = 80


def stop_process(pid: int, timeout: float = 5.0, clock: Optional[Clock] = None) -> None:
    """SIGSTOP ``pid`` and return once every thread of it is stopped (Linux: /proc).

    ``kill()`` returns before the signal lands: a thread busy on another core may still answer a
    request sent right after it (seen with the multi-threaded 2.2.0 server under load), so a
    test of a "silent" node must wait for the stop itself.

    Raises:
        TimeoutError: some thread is not stopped after ``timeout`` seconds.
    """
    clock = clock or GeventClock()
    os.kill(pid, signal.SIGSTOP)
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return  # no /proc: nothing to look at, the signal is all there is
    deadline = clock.monotonic() + timeout
    while True:
        states = []
        for stat in tasks.glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue  # a thread that just ended
        if all(state in ("T", "t", "Z", "X") for state in states):
            return  # stopped (or already dead: nothing of it runs either)
        if clock.monotonic() >= deadline:
            raise TimeoutError(f"process {pid} not stopped after {timeout}s (thread states {states})")
        clock.sleep(0.001)


class NodeStartError(RuntimeError):
    """A node process exited early or printed no READY line in time; the message has its log tail."""


class NodeProcess:
    """One node process; ``port`` is kept after it stops so a restart reuses it."""

    def __init__(self, node_id: str, log_dir: Path, clock: Clock, extra_args: Sequence[str] = ()) -> None:
        self.node_id = node_id
        self.log_path = Path(log_dir) / f"{node_id}.log"
        self.clock = clock
        self.extra_args = list(extra_args)
        self.port = 0
        self.url = ""
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._lifeline: Optional[int] = None   # write end of the node's --parent-fd pipe

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.running and self.proc is not None else None

    def start(self, seeds: Sequence[str], timeout: float) -> "NodeProcess":
        """Spawn the node and wait for its READY line.

        Raises:
            NodeStartError: it exited, or printed no READY line before ``timeout`` (then it is killed).
        """
        deadline = self.clock.monotonic() + timeout
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.proc = self._spawn(seeds)
            try:
                self.url = self._wait_ready(offset, deadline)
                self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
                return self
            except NodeStartError:
                # A restart on a fixed port can race the old process's socket: retry only that.
                busy = _ADDR_IN_USE.search(self._log_since(offset))
                if not self.port or not busy or self.clock.monotonic() >= deadline:
                    raise
                self.clock.sleep(0.1)

    def _spawn(self, seeds: Sequence[str]) -> subprocess.Popen[bytes]:
        self._drop_lifeline()
        # os.pipe() descriptors are not inheritable: only this node gets the read end, and no
        # other child of ours holds the write end open after we die.
        read_end, self._lifeline = os.pipe()
        cmd = [sys.executable, "-m", "topgun.server", "--node-id", self.node_id, "--port", str(self.port),
               "--parent-fd", str(read_end), "-v", *self.extra_args]
        if seeds:
            cmd += ["--seeds", ",".join(seeds)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"--- topgun: {' '.join(cmd)}\n".encode())
                log.flush()
                return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, pass_fds=(read_end,))
        finally:
            os.close(read_end)

    def _drop_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def _wait_ready(self, offset: int, deadline: float) -> str:
        pattern = re.compile(rf"^READY {re.escape(self.node_id)} (\S+)\s*$", re.MULTILINE)
        while True:
            match = pattern.search(self._log_since(offset))
            if match:
                return match.group(1)
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise NodeStartError(self._failure(f"exited with code {self.proc.returncode} before READY"))
            if self.clock.monotonic() >= deadline:
                self.kill()
                raise NodeStartError(self._failure("printed no READY line in time (killed it)"))
            self.clock.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (no clean shutdown) and wait for the exit."""
        if self.running and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self._wait_exit(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                self.kill()

    def signal(self, sig: int) -> None:
        """Send any signal (SIGSTOP makes a hung node: returns once it is stopped)."""
        if self.proc is not None:
            if sig == signal.SIGSTOP:
                stop_process(self.proc.pid, clock=self.clock)
            else:
                os.kill(self.proc.pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            if self.clock.monotonic() >= deadline:
                return False
            self.clock.sleep(0.01)
        self._drop_lifeline()
        return True

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self._log_since(0).rstrip("\n").splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        return f"node {self.node_id} {what}; log {self.log_path}:\n{self.log_tail()}"

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        return f"<NodeProcess {self.node_id} {self.url or 'port=?'} {state}>"


class ProcessCluster:
    """N node processes named ``n1``..``nN``.

    Args:
        nodes: how many nodes :meth:`start` starts.
        log_dir: one ``<node-id>.log`` per node.
        jwt_secret: run the nodes in JWT mode.
        strict: nodes answer NOT_OWNER instead of forwarding.
        clock: deadlines and polling.
    """

    def __init__(self, nodes: int = 3, *, log_dir: os.PathLike[str] | str, jwt_secret: Optional[str] = None,
                 strict: bool = False, clock: Optional[Clock] = None) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.size = nodes
        self.log_dir = Path(log_dir)
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.extra_args: List[str] = []
        self.jwt_secret = jwt_secret
        if jwt_secret:
            self.extra_args += ["--jwt-secret", jwt_secret]
        if strict:
            self.extra_args.append("--strict")
        self.processes: Dict[str, NodeProcess] = {}
        self._next = 1

    # -- lifecycle

    def start(self, timeout: float = 20.0) -> "ProcessCluster":
        """Start every node; returns once all agree on a map that lists them all."""
        deadline = self.clock.monotonic() + timeout
        first = self._new(self._take_id())
        first.start((), timeout)
        joiners = [self._new(self._take_id()) for _ in range(self.size - 1)]
        jobs = [gevent.spawn(p.start, (first.url,), max(0.5, deadline - self.clock.monotonic())) for p in joiners]
        gevent.joinall(jobs, raise_error=True)
        self.wait_converged(max(0.5, deadline - self.clock.monotonic()))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every node, then SIGKILL what is left after ``timeout``."""
        for proc in self.processes.values():
            if proc.running and proc.proc is not None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            if not proc._wait_exit(timeout):
                proc.kill()

    def __enter__(self) -> "ProcessCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def kill(self, node_id: str) -> None:
        """SIGKILL one node."""
        self.processes[node_id].kill()

    def restart(self, node_id: str, timeout: float = 20.0) -> NodeProcess:
        """Start a killed (or running: killed first) node again on its port; it rejoins empty."""
        proc = self.processes[node_id]
        proc.kill()
        return proc.start(self._live_urls(), timeout)

    def add_node(self, timeout: float = 20.0) -> NodeProcess:
        """Start one more node; returns once it is part of the map (its data moved)."""
        proc = self._new(self._take_id())
        return proc.start(self._live_urls(), timeout)

    # -- looking at it

    @property
    def live(self) -> List[str]:
        return sorted(n for n, p in self.processes.items() if p.running)

    @property
    def urls(self) -> List[str]:
        return [self.processes[n].url for n in self.live]

    def url(self, node_id: str) -> str:
        return self.processes[node_id].url

    def partition_map(self, node_id: str, timeout: float = 2.0) -> Dict[str, Any]:
        """The PARTITION_MAP payload node ``node_id`` holds now."""
        token = None
        if self.jwt_secret:  # the map is asked for like a client would, so it must authenticate
            token = sign_hs256(self.jwt_secret, {"sub": "process-cluster", "exp": self.clock.now_ms() // 1000 + 300})
        with RawClient(self.url(node_id), token=token) as client:
            return client.request({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}},
                                  "PARTITION_MAP", timeout)["payload"]

    def newest_map(self) -> Dict[str, Any]:
        return max((self.partition_map(n) for n in self.live), key=lambda m: m["version"])

    def owner_of(self, key: str) -> str:
        """The owner of ``key`` under the newest map of any live node."""
        return self.newest_map()["partitions"][partition_id(key)]["ownerNodeId"]

    def backups_of(self, key: str) -> List[str]:
        return list(self.newest_map()["partitions"][partition_id(key)]["backupNodeIds"])

    def wait_converged(self, timeout: float = 10.0) -> Dict[str, Any]:
        """Block until every live node has the same map listing exactly the live nodes.

        Raises:
            TimeoutError: not within ``timeout``.
        """
        deadline = self.clock.monotonic() + timeout
        last: List[Any] = []
        while True:
            try:
                maps = [self.partition_map(n) for n in self.live]
                last = [(m["version"], [x["nodeId"] for x in m["nodes"]]) for m in maps]
                if len({m["version"] for m in maps}) == 1 and \
                        {x["nodeId"] for x in maps[0]["nodes"]} == set(self.live):
                    return maps[0]
            except (OSError, AssertionError, EOFError):
                pass
            if self.clock.monotonic() > deadline:
                raise TimeoutError(f"processes did not converge in {timeout}s: {dict(zip(self.live, last))}")
            self.clock.sleep(0.05)

    def log_tail(self, node_id: str, lines: int = _LOG_TAIL_LINES) -> str:
        return self.processes[node_id].log_tail(lines)

    # -- internals

    def _live_urls(self) -> List[str]:
        return [p.url for p in self.processes.values() if p.running]

    def _take_id(self) -> str:
        while f"n{self._next}" in self.processes:
            self._next += 1
        node_id = f"n{self._next}"
        self._next += 1
        return node_id

    def _new(self, node_id: str) -> NodeProcess:
        proc = self.processes[node_id] = NodeProcess(node_id, self.log_dir, self.clock, self.extra_args)
        return proc

    def __repr__(self) -> str:
        return f"<ProcessCluster live={self.live} logs={self.log_dir}>"
