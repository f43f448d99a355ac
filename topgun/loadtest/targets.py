"""What a benchmark runs against: a URL, cluster seeds, an embedded cluster it starts, or the real server.

A target knows how to configure a client for itself (``client_options``), how many of its
nodes are up, and, when it started the servers itself, how to kill, restart and add nodes.
Chaos scenarios need the last part; they refuse targets that cannot do it.

- :class:`UrlTarget`: one server at ``--url`` (client in single-server mode).
- :class:`SeedsTarget`: a running cluster reached through ``--seeds`` (cluster mode).
- :class:`EmbeddedTarget`: ``--embedded N`` starts the dev cluster itself, one process per
  node (:class:`topgun.server.process.ProcessCluster`) or, with ``in_process=True``, inside
  this process (:class:`topgun.server.cluster.EmbeddedCluster`, sharing our CPU).
- :class:`RealServerTarget`: one real ``topgun-server`` 2.2.0 node (the Rust binary), started
  with an unbounded write-behind queue and ``RUST_LOG=warn``, for the single-server baseline.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from ..config import ClusterConfig
from ..errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["Target", "UrlTarget", "SeedsTarget", "EmbeddedTarget", "RealServerTarget"]


class Target:
    """Base: a target that cannot be changed (no chaos)."""

    kind = "url"          # "url": TopGunClient(url=...); "cluster": TopGunClient(cluster=...)
    can_chaos = False

    def start(self, timeout: float = 30.0) -> "Target":
        return self

    def close(self) -> None:
        pass

    @property
    def urls(self) -> List[str]:
        raise NotImplementedError

    def client_options(self, *, cluster: bool, smart_routing: bool = True,
                       connections_per_node: int = 1) -> Dict[str, Any]:
        """Keyword arguments for TopGunClient: ``url=`` or ``cluster=ClusterConfig(...)``."""
        if cluster:
            return {"cluster": ClusterConfig(seeds=list(self.urls), smart_routing=smart_routing,
                                             connections_per_node=connections_per_node)}
        return {"url": self.urls[0]}

    def nodes_up(self) -> Optional[int]:
        """How many nodes are running, if this target knows (it started them)."""
        return None

    def nodes_total(self) -> Optional[int]:
        return None

    def live_nodes(self) -> List[str]:
        raise ConfigurationError(f"{self!r} cannot be changed; chaos needs --embedded N")

    def kill(self, node_id: str) -> None:
        raise ConfigurationError(f"{self!r} cannot kill nodes; use --embedded N")

    def restart(self, node_id: str) -> None:
        raise ConfigurationError(f"{self!r} cannot restart nodes; use --embedded N")

    def add_node(self) -> str:
        raise ConfigurationError(f"{self!r} cannot add nodes; use --embedded N")

    def owner_of(self, key: str) -> Optional[str]:
        return None

    def server_pids(self) -> Dict[str, int]:
        """node id -> process id of the server processes this target started (for CPU figures)."""
        return {}

    def describe(self) -> Dict[str, Any]:
        return {"kind": type(self).__name__, "urls": list(self.urls)}

    def __enter__(self) -> "Target":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class UrlTarget(Target):
    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def urls(self) -> List[str]:
        return [self.url]

    def __repr__(self) -> str:
        return f"<UrlTarget {self.url}>"


class SeedsTarget(Target):
    kind = "cluster"

    def __init__(self, seeds: List[str]) -> None:
        if not seeds:
            raise ConfigurationError("--seeds needs at least one URL")
        self.seeds = list(seeds)

    @property
    def urls(self) -> List[str]:
        return list(self.seeds)

    def __repr__(self) -> str:
        return f"<SeedsTarget {self.seeds}>"


def _process_cluster_class() -> Any:
    from ..server.process import ProcessCluster
    return ProcessCluster


def _pid_of(cluster: Any, node_id: str) -> Optional[int]:
    """The pid of one node process of a ProcessCluster, whatever it calls its process table."""
    nodes = getattr(cluster, "processes", None) or getattr(cluster, "nodes", None)
    proc = nodes.get(node_id) if isinstance(nodes, dict) else None
    value = getattr(proc, "pid", None)
    if isinstance(value, int):
        return value
    inner = getattr(proc, "proc", None) or getattr(proc, "_proc", None) or getattr(proc, "process", None)
    value = getattr(inner, "pid", None)
    return value if isinstance(value, int) else None


class EmbeddedTarget(Target):
    """The dev cluster, started and stopped by the benchmark itself.

    Args:
        nodes: how many nodes to start.
        in_process: run the nodes in this process (they then share the client's CPU and hub).
        log_dir: where process nodes write their logs (default: a temporary directory).
    """

    kind = "cluster"
    can_chaos = True

    def __init__(self, nodes: int, *, in_process: bool = False, log_dir: Optional[str] = None) -> None:
        if nodes < 1:
            raise ConfigurationError(f"--embedded needs at least 1 node, got {nodes}")
        self.size = nodes
        self.in_process = in_process
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="topgun-bench-")
        self.cluster: Any = None
        self._killed: List[str] = []
        self._known: set = set()

    def start(self, timeout: float = 30.0) -> "EmbeddedTarget":
        if self.in_process:
            from ..server.cluster import EmbeddedCluster
            self.cluster = EmbeddedCluster(self.size)
            self.cluster.start(timeout=timeout)
        else:
            cls = _process_cluster_class()
            self.cluster = cls(nodes=self.size, log_dir=self.log_dir)
            self.cluster.start(timeout=timeout)
        log.info("started %r", self.cluster)
        return self

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    @property
    def urls(self) -> List[str]:
        return list(self.cluster.urls)

    def live_nodes(self) -> List[str]:
        nodes = getattr(self.cluster, "nodes", None)
        live_attr = getattr(self.cluster, "live", None)
        if live_attr is not None:                      # ProcessCluster: ids of running processes
            alive = list(live_attr() if callable(live_attr) else live_attr)
        elif isinstance(nodes, dict):                  # EmbeddedCluster: live nodes only
            alive = [n for n, node in nodes.items() if getattr(node, "running", True)]
        else:
            ids = getattr(self.cluster, "node_ids", None)
            if ids is None:
                raise ConfigurationError(f"{self.cluster!r} does not list its nodes")
            alive = list(ids() if callable(ids) else ids)
        live = sorted(n for n in alive if n not in self._killed)
        self._known.update(live)
        return live

    def nodes_up(self) -> Optional[int]:
        try:
            return len(self.live_nodes())
        except Exception:  # a cluster in the middle of a restart: say nothing rather than fail
            return None

    def nodes_total(self) -> Optional[int]:
        """Every node started so far, killed ones included."""
        return len(self._known | set(self._killed)) if self._known else None

    def kill(self, node_id: str) -> None:
        self.cluster.kill(node_id)
        if self.in_process is False and node_id not in self._killed:
            # ProcessCluster may keep the dead process in its table until restart.
            self._killed.append(node_id)

    def restart(self, node_id: str) -> None:
        self.cluster.restart(node_id)
        if node_id in self._killed:
            self._killed.remove(node_id)

    def add_node(self) -> str:
        node = self.cluster.add_node()
        return str(getattr(node, "node_id", node))

    def server_pids(self) -> Dict[str, int]:
        if self.in_process or self.cluster is None:
            return {}
        out = {}
        for node_id in self.live_nodes():
            pid = _pid_of(self.cluster, node_id)
            if pid is not None:
                out[node_id] = pid
        return out

    def owner_of(self, key: str) -> Optional[str]:
        try:
            return str(self.cluster.owner_of(key))
        except Exception:  # no agreed map at this moment
            return None

    def describe(self) -> Dict[str, Any]:
        return {"kind": "embedded-in-process" if self.in_process else "embedded-processes",
                "nodes": self.size, "urls": self.urls if self.cluster is not None else []}

    def __repr__(self) -> str:
        return f"<EmbeddedTarget {self.size} nodes {'in-process' if self.in_process else 'processes'}>"


class RealServerTarget(Target):
    """One real ``topgun-server`` node (installed with npm on first use)."""

    can_chaos = True

    def __init__(self, *, log_dir: Optional[str] = None) -> None:
        self.workdir = log_dir or tempfile.mkdtemp(prefix="topgun-real-")
        self._own_dir = log_dir is None
        self.server: Any = None

    def start(self, timeout: float = 30.0) -> "RealServerTarget":
        from ..testing.realserver import RealServer, ensure_server_binary
        self.server = RealServer(ensure_server_binary(), self.workdir, unbounded_write_behind=True,
                                 extra_env={"RUST_LOG": "warn"})
        self.server.start(timeout=timeout)
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def urls(self) -> List[str]:
        return [self.server.url]

    def live_nodes(self) -> List[str]:
        return [self.server.node_id] if self.server.running else []

    def nodes_up(self) -> Optional[int]:
        return len(self.live_nodes())

    def nodes_total(self) -> Optional[int]:
        return 1

    def kill(self, node_id: str) -> None:
        self.server.kill()

    def server_pids(self) -> Dict[str, int]:
        pid = self.server.pid if self.server is not None else None
        return {self.server.node_id: pid} if pid is not None else {}

    def restart(self, node_id: str) -> None:
        self.server.start()

    def describe(self) -> Dict[str, Any]:
        from ..testing.realserver import SERVER_VERSION
        return {"kind": "real-server", "version": SERVER_VERSION, "urls": self.urls if self.server else []}

    def __repr__(self) -> str:
        return f"<RealServerTarget {self.server!r}>"
