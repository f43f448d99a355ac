"""Run a real multi-node TopGun 2.2.0 cluster on 127.0.0.1 for tests and benchmarks.

The contract:

* :class:`RealCluster` runs N ``topgun-server`` nodes (each a :class:`~topgun.testing.realserver.RealServer`
  in its own directory, log in a file, so stdout and stderr never fill a pipe) with fixed
  ``--cluster-port`` and one shared ``--seed-nodes`` list (WIRE.md 10.4). Every node is started
  with ``PR_SET_PDEATHSIG`` and in its own session, and is stopped by pid only.
* ``start()`` *forms* the cluster: it starts the nodes in id order, ``stagger`` seconds apart, then
  asks every node for its PARTITION_MAP until all of them list every node ACTIVE and report the
  same owner for all 271 partitions, and keep doing so for ``settle`` seconds. 2.2.0 formation is
  flaky (probe_notes.md 13: a join can end in a split view, each node owning all 271), so a try
  that shows a split, or does not agree within ``try_timeout``, is logged at WARNING, every node
  is killed, and the cluster is started again with fresh data and cluster ports: at most
  ``tries`` times and within the caller's deadline. Each formation is logged at INFO with the
  tries it took; ``history`` keeps them (kind, tries, seconds) for tests and benchmarks.
* ``kill()`` (SIGKILL), ``pause()`` (SIGSTOP), ``resume()`` (SIGCONT), ``stop_node()`` (SIGTERM)
  and ``restart()``: a restarted node rejoins on the same ports with the same data; if its rejoin
  splits the view (the usual 2.2.0 outcome), it is tried again, and after ``rejoin_tries`` the whole
  cluster is formed again (a WARNING says so). ``restart_all()`` forms it again on the same ports.
* Observing: ``views()`` (what each node's PARTITION_MAP says now), ``owner_of(key)`` (the agreed
  owner), ``urls`` / ``url(node_id)``.

Not in the contract: data. 2.2.0 keeps every write on the node that received it (no forwarding,
replication or migration, WIRE.md 10.6), so a restarted or re-formed cluster holds whatever each
node stored itself. Nor clusters that must survive a split: the fixture only ever hands out a
cluster whose nodes agree, and the tests make the disagreements on purpose.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
import msgpack
from gevent import socket as gsocket
from gevent.server import StreamServer

from topgun.clock import Clock, GeventClock
from topgun.errors import ConfigurationError, TopGunError
from topgun.protocol.hashing import PARTITION_COUNT, partition_id
from topgun.server.process import stop_process
from topgun.testing.realserver import RealServer, ServerStartError
from topgun.transport.websocket import WebSocketTransport

log = logging.getLogger(__name__)

__all__ = ["RealCluster", "NodeView", "FormationError", "Formation", "FramePacer", "free_port"]

_MAP_REQUEST = msgpack.packb({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}},
                             use_bin_type=True)
_POLL_S = 0.2
_ASK_TIMEOUT_S = 1.0        # a node without a table (not joined yet) never answers: give up on it then
_PEER_FRAME_LIMIT = 16 * 1024 * 1024
_STALE_S = 3.0              # members agree but tables differ this long: 2.2.0 will not fix it alone


class FormationError(ServerStartError):
    """The nodes did not agree on one partition table within the tries and the deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the cluster port must be known in advance)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FramePacer:
    """A loopback TCP relay in front of one node's cluster port that hands on the node's
    length-prefixed peer frames (4-byte big-endian length, WIRE.md 10.4) one at a time, ``gap``
    seconds apart. Bytes towards the node pass unchanged.

    Why: a 2.2.0 joiner reads the master's JoinResponse through a buffered reader and then drops
    that buffer (probe_notes.md 13.7); when the master's next broadcast lands in the same read,
    the joiner loses it, misreads a length and declares the master dead (a split view). Spacing
    the frames keeps them in separate reads. Other nodes list the relay as this node's seed.

    Not here: any change to the bytes, or to the node's own outgoing dials.
    """

    def __init__(self, target_port: int, gap: float = 0.02) -> None:
        self.target_port, self.gap = target_port, gap
        self._group = gevent.pool.Pool(None)  # a Pool: StreamServer needs one, None means unbounded
        self._server = StreamServer(("127.0.0.1", 0), self._relay, spawn=self._group)
        self._server.start()
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.stop(timeout=0)
        self._group.kill(timeout=1.0)

    def _relay(self, inbound: Any, _address: Any) -> None:
        try:
            upstream = gsocket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
        except OSError:
            inbound.close()
            return
        upstream.settimeout(None)
        forward = self._group.spawn(self._copy, inbound, upstream)
        try:
            self._paced_copy(upstream, inbound)
        finally:
            forward.kill(block=False)
            upstream.close()
            inbound.close()

    @staticmethod
    def _copy(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def _paced_copy(self, src: Any, dst: Any) -> None:
        buffer = b""
        try:
            while data := src.recv(65536):
                buffer += data
                while len(buffer) >= 4:
                    size = int.from_bytes(buffer[:4], "big")
                    if size > _PEER_FRAME_LIMIT:      # not framed as we think: stop pacing, pass it on
                        dst.sendall(buffer)
                        buffer = b""
                        break
                    if len(buffer) < 4 + size:
                        break
                    frame, buffer = buffer[:4 + size], buffer[4 + size:]
                    dst.sendall(frame)
                    gevent.sleep(self.gap)
        except OSError:
            pass


@dataclass(frozen=True)
class NodeView:
    """What one node's PARTITION_MAP says: its (per-node) version, member statuses and owners."""

    node_id: str
    version: int
    statuses: Mapping[str, str]
    owners: tuple[str, ...]
    endpoints: Mapping[str, str]

    @classmethod
    def from_payload(cls, node_id: str, payload: Mapping[str, Any]) -> NodeView:
        owners = [""] * PARTITION_COUNT
        for p in payload.get("partitions", ()):
            owners[int(p["partitionId"])] = str(p["ownerNodeId"])
        nodes = payload.get("nodes", ())
        return cls(node_id, int(payload["version"]), {n["nodeId"]: n["status"] for n in nodes}, tuple(owners),
                   {n["nodeId"]: (n.get("endpoints") or {}).get("websocket", "") for n in nodes})

    def counts(self) -> dict[str, int]:
        """Partitions per owner."""
        return dict(sorted(Counter(self.owners).items()))

    def __str__(self) -> str:
        statuses = ",".join(f"{n}={s}" for n, s in sorted(self.statuses.items()))
        return f"{self.node_id}: v{self.version} [{statuses}] owners {self.counts()}"


@dataclass(frozen=True)
class Formation:
    """One formation (``start``, ``restart_all``, or a ``restart`` that fell back to it) or rejoin."""

    kind: str
    tries: int
    seconds: float


class RealCluster:
    """N real ``topgun-server`` nodes on 127.0.0.1 that agree on one partition table.

    Args:
        binary: the 2.2.0 server binary (:func:`~topgun.testing.realserver.ensure_server_binary`).
        workdir: one subdirectory per node (``workdir/<node_id>``: data file and log).
        nodes: how many nodes; ids are ``r1``, ``r2``, ... (2.2.0 elects the lowest id as master).
        stagger: seconds between starting one node and the next.
        tries: formation tries (full restarts) before :class:`FormationError`.
        try_timeout: seconds one try may take to agree after its last node started.
        settle: seconds the agreement must hold (a master can accept a join and drop it at once).
        rejoin_tries: rejoins of one restarted node before the whole cluster is formed again.
        pace_peer_links: other nodes reach each node's cluster port through a :class:`FramePacer`,
            which works around 2.2.0's lost-frame join bug; ``False`` shows the bare server.
        jwt_secret, unbounded_write_behind, extra_env: passed to every :class:`RealServer`.
        clock: deadlines and polling sleeps.
    """

    def __init__(self, binary: os.PathLike[str] | str, workdir: os.PathLike[str] | str, nodes: int = 2, *,
                 stagger: float = 1.0, tries: int = 4, try_timeout: float = 20.0, settle: float = 1.0,
                 rejoin_tries: int = 2, pace_peer_links: bool = True, jwt_secret: str | None = None,
                 unbounded_write_behind: bool = False,
                 extra_env: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        if not 1 <= nodes <= 9:
            raise ConfigurationError(f"nodes must be 1..9 (ids r1..r9 sort as the server elects), got {nodes}")
        if tries < 1 or rejoin_tries < 0:
            raise ConfigurationError(f"tries must be >= 1 and rejoin_tries >= 0, got {tries}, {rejoin_tries}")
        self.workdir = Path(workdir)
        self.stagger, self.tries, self.try_timeout, self.settle = stagger, tries, try_timeout, settle
        self.rejoin_tries = rejoin_tries
        self.pace_peer_links = pace_peer_links
        self._pacers: dict[str, FramePacer] = {}
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.node_ids = [f"r{i + 1}" for i in range(nodes)]
        self.servers: dict[str, RealServer] = {
            nid: RealServer(binary, self.workdir / nid, node_id=nid, port=free_port(), jwt_secret=jwt_secret,
                            extra_env=extra_env, unbounded_write_behind=unbounded_write_behind,
                            clock=self.clock)
            for nid in self.node_ids}
        self.cluster_ports: dict[str, int] = {}
        self.history: list[Formation] = []
        self._paused: set[str] = set()

    # -- state

    @property
    def live(self) -> list[str]:
        """Ids of the running nodes (paused ones included), sorted."""
        return [nid for nid in self.node_ids if self.servers[nid].running]

    @property
    def urls(self) -> list[str]:
        """``ws://127.0.0.1:PORT/ws`` of the running nodes, in id order."""
        return [self.servers[nid].url for nid in self.live]

    def url(self, node_id: str) -> str:
        return self.servers[node_id].url

    @property
    def master(self) -> str:
        """The lowest running id: the node 2.2.0 elects, and the one whose table it keeps up to date."""
        live = self.live
        if not live:
            raise ServerStartError(f"{self!r} has no running node")
        return live[0]

    # -- lifecycle

    def start(self, timeout: float = 120.0) -> RealCluster:
        """Start every node and form the cluster (fresh data), trying again on a split view.

        Returns:
            ``self``.

        Raises:
            FormationError: no agreement within ``tries`` tries or ``timeout`` seconds.
            ServerStartError: a node could not start at all.
        """
        self._form("start", self.clock.monotonic() + timeout, fresh=True)
        return self

    def restart_all(self, timeout: float = 120.0) -> RealCluster:
        """Stop every node that runs, then form the cluster again on the same ports, keeping the data."""
        self._form("restart_all", self.clock.monotonic() + timeout, fresh=False)
        return self

    def stop(self) -> None:
        """Stop every node (SIGCONT first for paused ones, then SIGTERM, then SIGKILL). Safe to call twice."""
        for nid in reversed(self.node_ids):
            self.resume(nid)
            self.servers[nid].stop()
        self._close_pacers()

    def kill(self, node_id: str) -> None:
        """SIGKILL one node and wait for it to exit."""
        self._paused.discard(node_id)
        self.servers[node_id].kill()

    def stop_node(self, node_id: str) -> None:
        """SIGTERM one node (SIGKILL after 5 s)."""
        self.resume(node_id)
        self.servers[node_id].stop()

    def pause(self, node_id: str) -> None:
        """SIGSTOP one node: it keeps its sockets open and answers nothing (a hung node)."""
        pid = self.servers[node_id].pid
        if pid is None:
            raise ServerStartError(f"{self.servers[node_id]!r} is not running")
        stop_process(pid)
        self._paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT a paused node (no-op otherwise)."""
        pid = self.servers[node_id].pid
        if node_id in self._paused and pid is not None:
            os.kill(pid, signal.SIGCONT)
        self._paused.discard(node_id)

    def restart(self, node_id: str, timeout: float = 120.0) -> RealCluster:
        """Restart one node (same ports and data) and wait until the cluster agrees again.

        A rejoin that splits the view is killed and tried again, ``rejoin_tries`` times; then the
        whole cluster is formed again (keeping data), which the clients see as every node restarting.

        Raises:
            FormationError: not formed again within ``timeout``.
        """
        deadline = self.clock.monotonic() + timeout
        started = self.clock.monotonic()
        for attempt in range(1, self.rejoin_tries + 1):
            self.kill(node_id)
            self.servers[node_id].start()
            views, why = self._wait_formed(self.clock.monotonic() + self.try_timeout, deadline)
            if views is not None:
                self._record("rejoin", attempt, started)
                return self
            log.warning("rejoin of %s, try %d/%d: %s; %s", node_id, attempt, self.rejoin_tries, why,
                        "trying again" if attempt < self.rejoin_tries else "forming the whole cluster again")
        self._form("restart", deadline, fresh=False, started=started, tries_before=self.rejoin_tries)
        return self

    # -- observing

    def view(self, node_id: str, timeout: float = _ASK_TIMEOUT_S) -> NodeView | None:
        """Node ``node_id``'s PARTITION_MAP now; None if it is down or sends none within ``timeout``."""
        server = self.servers[node_id]
        if not server.running or node_id in self._paused:
            return None
        try:
            transport = WebSocketTransport.connect(server.url, timeout)
        except TopGunError:
            return None
        try:
            with gevent.Timeout(timeout, False):
                transport.send(_MAP_REQUEST)
                while True:
                    data = transport.recv()
                    if data is None:
                        return None
                    msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
                    if isinstance(msg, dict) and msg.get("type") == "PARTITION_MAP":
                        return NodeView.from_payload(node_id, msg["payload"])
            return None
        except TopGunError:
            return None
        finally:
            transport.close()

    def views(self) -> dict[str, NodeView | None]:
        """Every running node's view, asked concurrently."""
        live = [nid for nid in self.live if nid not in self._paused]
        jobs = {nid: gevent.spawn(self.view, nid) for nid in live}
        gevent.joinall(list(jobs.values()), timeout=_ASK_TIMEOUT_S + 5.0)
        return {nid: job.value if job.successful() else None for nid, job in jobs.items()}

    def owners(self) -> tuple[str, ...]:
        """The agreed owner of each partition (from the master's view)."""
        view = self.view(self.master)
        if view is None:
            raise ServerStartError(f"master {self.master} sent no partition map")
        return view.owners

    def owner_of(self, key: str) -> str:
        """The agreed owner of ``key``."""
        return self.owners()[partition_id(key)]

    def log_tail(self, node_id: str, lines: int = 60) -> str:
        return self.servers[node_id].log_tail(lines)

    def __enter__(self) -> RealCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        paused = f" paused={sorted(self._paused)}" if self._paused else ""
        return f"<RealCluster {len(self.node_ids)} nodes live={self.live}{paused} {self.workdir}>"

    # -- formation

    def _form(self, kind: str, deadline: float, *, fresh: bool, started: float | None = None,
              tries_before: int = 0) -> None:
        started = self.clock.monotonic() if started is None else started
        why = "no try ran"
        for attempt in range(1, self.tries + 1):
            if self.clock.monotonic() >= deadline:
                break
            self._kill_all()
            if fresh or attempt > 1 or not self.cluster_ports:
                self._new_cluster_ports()
            if fresh or attempt > 1:
                self._wipe_data()
            try:
                self._start_staggered()
            except ServerStartError as exc:
                why = f"a node did not start: {exc}"
            else:
                views, why = self._wait_formed(self.clock.monotonic() + self.try_timeout, deadline)
                if views is None and why.startswith("stale"):
                    views, why = self._refresh_stale(deadline)
                if views is not None:
                    self._record(kind, tries_before + attempt, started)
                    return
            log.warning("real cluster formation (%s) try %d/%d failed: %s; starting every node again",
                        kind, attempt, self.tries, why)
        self._kill_all()
        raise FormationError(f"{len(self.node_ids)} real nodes did not form one cluster in {self.tries} tries "
                             f"({self.clock.monotonic() - started:.1f}s); last: {why}. Logs in {self.workdir}")

    def _refresh_stale(self, deadline: float) -> tuple[dict[str, NodeView] | None, str]:
        # A 2.2.0 non-master keeps the table it got when it joined (probe_notes.md 13.5): with 3+
        # nodes the first joiners are stale. Once every member is ACTIVE everywhere, a rejoin of
        # each stale node, one at a time, hands it the master's current table.
        why = "no stale node found"
        for _ in range(len(self.node_ids) - 1):
            views = self.views()
            master = views.get(self.master)
            stale = [nid for nid, v in views.items()
                     if nid != self.master and v is not None and master is not None and v.owners != master.owners]
            if not stale:
                break
            log.info("real cluster: %s kept a stale partition table; restarting it to rejoin", stale[0])
            self.kill(stale[0])
            self.servers[stale[0]].start()
            result, why = self._wait_formed(self.clock.monotonic() + self.try_timeout, deadline)
            if result is not None:
                return result, ""
            if not why.startswith("stale"):
                return None, why
        return None, why

    def _record(self, kind: str, tries: int, started: float) -> None:
        formation = Formation(kind, tries, self.clock.monotonic() - started)
        self.history.append(formation)
        log.info("real cluster %s formed (%s) after %d tr%s in %.1fs", self.live, kind, tries,
                 "y" if tries == 1 else "ies", formation.seconds)

    def _kill_all(self) -> None:
        for nid in self.node_ids:
            self.kill(nid)

    def _new_cluster_ports(self) -> None:
        self._close_pacers()
        self.cluster_ports = {nid: free_port() for nid in self.node_ids}
        if self.pace_peer_links:
            self._pacers = {nid: FramePacer(port) for nid, port in self.cluster_ports.items()}
        for nid, server in self.servers.items():
            # A node lists itself directly (it must recognise its own address) and its peers through
            # their pacers; everyone keeps the same order, so the same lowest id wins the election.
            seeds = ",".join(f"127.0.0.1:{self._seed_port(peer, nid)}" for peer in self.node_ids)
            server.extra_args = ("--cluster-port", str(self.cluster_ports[nid]), "--seed-nodes", seeds)

    def _seed_port(self, peer: str, listing_node: str) -> int:
        pacer = self._pacers.get(peer)
        return pacer.port if pacer is not None and peer != listing_node else self.cluster_ports[peer]

    def _close_pacers(self) -> None:
        for pacer in self._pacers.values():
            pacer.close()
        self._pacers = {}

    def _wipe_data(self) -> None:
        for server in self.servers.values():
            for path in server.workdir.glob("tg.redb*"):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    def _start_staggered(self) -> None:
        for i, nid in enumerate(self.node_ids):
            if i:
                self.clock.sleep(self.stagger)  # a deliberate gap, not a wait for a condition
            self.servers[nid].start()

    def _wait_formed(self, try_deadline: float, deadline: float) -> tuple[dict[str, NodeView] | None, str]:
        """Poll the views until they agree for ``settle`` seconds; (None, why) on a split or timeout."""
        agreed_since: float | None = None
        stale_since: float | None = None
        why = "no node answered"
        end = min(try_deadline, deadline)
        while True:
            views = self.views()
            verdict = self._verdict(views)
            now = self.clock.monotonic()
            if verdict is None:
                agreed_since = now if agreed_since is None else agreed_since
                if now - agreed_since >= self.settle:
                    return {nid: v for nid, v in views.items() if v is not None}, ""
            else:
                agreed_since, why = None, verdict
                if verdict.startswith("split"):
                    return None, why  # a 2.2.0 split never heals by itself
                stale_since = now if stale_since is None else stale_since
                if verdict.startswith("stale") and now - stale_since >= _STALE_S:
                    return None, why  # every node ACTIVE everywhere, but a non-master kept its join snapshot
            if not (verdict or "").startswith("stale"):
                stale_since = None
            if now >= end:
                return None, f"not agreed within the try's deadline ({why})"
            self.clock.sleep(_POLL_S)

    def _verdict(self, views: Mapping[str, NodeView | None]) -> str | None:
        """None if the running nodes agree; else why not ("split ..." when it cannot heal)."""
        live = [nid for nid in self.live if nid not in self._paused]
        silent = [nid for nid in live if views.get(nid) is None]
        for nid in live:
            view = views.get(nid)
            if view is None:
                continue
            failed = sorted(peer for peer in live if peer != nid and view.statuses.get(peer) == "FAILED"
                            and views.get(peer) is not None and views[peer].statuses.get(nid) == "FAILED")  # type: ignore[union-attr]
            if failed:
                return f"split view: {'; '.join(str(v) for v in views.values() if v is not None)}"
        if silent:
            return f"no map yet from {silent}"
        shown = [v for v in views.values() if v is not None]
        for view in shown:
            if any(view.statuses.get(peer) != "ACTIVE" for peer in live):
                return f"not every node ACTIVE: {view}"
        if len({v.owners for v in shown}) != 1 or set(shown[0].owners) != set(live):
            return f"stale tables: {'; '.join(str(v) for v in shown)}"
        return None

