"""Membership: links to peer nodes, heartbeats, failure detection and request/reply between nodes.

Every node keeps one *outgoing* WebSocket link to each live peer (``/cluster`` on the peer's
client port) and sends everything for that peer on it; it receives on the peer's outgoing link
(its incoming one). A link starts with a handshake (below), so a seed is just a node's URL. A
new link is followed by CLUSTER_WELCOME
(the members we know and our partition table) and CLUSTER_INTEREST (maps we have live queries
on). Node-to-node messages are msgpack maps whose ``type`` starts with ``CLUSTER_``; they are
internal to the dev server and not part of the client protocol.

The link handshake, and how peers prove the cluster secret:

1. the accepting node sends CLUSTER_CHALLENGE ``{nonce}`` (16 random bytes, new per link);
2. the dialling node answers CLUSTER_HELLO ``{nodeId, url, incarnation, version, nonce, proof}``
   with a nonce of its own and ``proof = HMAC-SHA256(key, msgpack(["hello", their nonce, our
   nonce, nodeId, url, incarnation]))``;
3. the acceptor checks the proof (constant time) and answers CLUSTER_HELLO_ACK ``{nodeId, url,
   incarnation, version, proof}`` with ``proof`` over ``["ack", dialler's nonce, its nonce,
   its nodeId, url, incarnation]``, which the dialler checks in turn.

``key = HMAC-SHA256(secret, "topgun dev cluster links")``; the secret is the node's cluster
secret, by default its JWT secret, so a cluster started with ``--jwt-secret`` protects its
``/cluster`` door with the same secret as its client door. A HELLO without a valid proof is
refused: the link is closed before anything of it is registered or dispatched, so an
unauthenticated peer can neither write (CLUSTER_REPLICATE) nor pose as a node id (which would
make us declare that node restarted). The nonces make a recorded HELLO useless on a new link,
and the proof covers the identity, so it cannot be moved to another node id. Without a secret
proofs are sent empty and not checked (no-auth mode, as for clients). What it does not do: hide
or integrity-protect the traffic after the handshake (no TLS; the dev server listens on
loopback by default).

Joining. A node started without seeds founds a cluster. A node with seeds dials all of them
until it is in a map. If none of the nodes it reached has a map yet (all are waiting, as when
every node was given every other as a seed), the node with the lowest id among itself and the
nodes it reached founds the cluster once it has reached every seed, or after ``FOUND_AFTER_S``
with some seeds still unreachable; the others are taken into the founder's first map. This is
deterministic for nodes started together; a node that comes up only after another has founded
alone joins that one. Not covered: two groups founding separately (seed lists that do not reach
each other) are never merged.

Failure detection, bounded in time:

* an outgoing link that drops is redialled ``REDIAL_ATTEMPTS`` times, ``DIAL_TIMEOUT_S`` each;
  if that fails the peer is dead (well under 1 s after a process is killed);
* a peer we have heard nothing from for ``SUSPECT_S`` (heartbeats go every ``HEARTBEAT_S``)
  is dead, which catches hung processes;
* a HELLO with a new incarnation of a known node id means the old one died (restart).

A death fails every request waiting on that peer and is reported through ``on_death``; a
heartbeat that shows a newer map version than ours is reported through ``on_newer_map`` (so
the node can fetch the map and a missed commit heals).

What the node wires in: ``map_version()`` (for heartbeats), and the hooks ``on_change()``
(someone joined, came back or died), ``on_death(peer_id)``, ``on_link_up(peer_id)`` (a new
outgoing link: time to send the peer what it should know) and ``on_newer_map(peer_id,
version)``. Every other ``CLUSTER_*`` message is dispatched through the handler table the node
fills with :meth:`Membership.on`.

Not here: what the messages mean (writes, events, migrations, Merkle), the partition table.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gevent
import msgpack
from gevent.event import Event

from topgun.clock import Clock

from .frames import FrameSocket, FrameTooLarge, dial

__all__ = ["Membership", "Peer", "HEARTBEAT_S", "SUSPECT_S"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.2
SUSPECT_S = 2.5   # + one heartbeat period of slack: a hung node is out of the map within 3 s
DIAL_TIMEOUT_S = 0.3
REDIAL_ATTEMPTS = 2
HELLO_TIMEOUT_S = 2.0
FOUND_AFTER_S = 3.0   # with seeds unreachable this long, the lowest reachable node founds
MAX_BACKLOG = 10_000
JOIN_RETRY_S = 0.2

Reply = Callable[[Optional[Dict[str, Any]]], None]
Handler = Callable[[str, Dict[str, Any]], None]
_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Peer:
    """What a node knows about one other node."""

    __slots__ = ("node_id", "url", "incarnation", "out", "alive", "last_heard", "pending", "dialing", "backlog",
                 "version")

    def __init__(self, node_id: str, url: str, incarnation: str, now: float) -> None:
        self.node_id, self.url, self.incarnation = node_id, url, incarnation
        self.out: Optional[FrameSocket] = None
        self.alive = True
        self.last_heard = now
        self.pending: Dict[int, Tuple[Reply, float]] = {}
        self.dialing = False
        # Frames sent while the link is being (re)established; flushed when it is up.
        self.backlog: List[bytes] = []
        self.version: Optional[int] = None   # its map version, once a hello or heartbeat told us

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        link = "linked" if self.out is not None else "unlinked"
        return f"<Peer {self.node_id} {self.url} {state} {link} pending={len(self.pending)}>"


def _nothing(*_args: Any) -> None:
    pass


def link_key(secret: Optional[str]) -> Optional[bytes]:
    """The HMAC key for link proofs derived from a cluster secret (None: no-auth mode)."""
    if secret is None:
        return None
    return hmac.new(secret.encode(), b"topgun dev cluster links", hashlib.sha256).digest()


def link_proof(key: Optional[bytes], label: str, nonce_a: bytes, nonce_b: bytes, node_id: str, url: str,
               incarnation: str) -> bytes:
    """The proof one side of a link handshake sends (empty without a key)."""
    if key is None:
        return b""
    return hmac.new(key, _pack([label, nonce_a, nonce_b, node_id, url, incarnation]), hashlib.sha256).digest()


def _identity(msg: Any, kind: str) -> Optional[Tuple[str, str, str]]:
    if not isinstance(msg, dict) or msg.get("type") != kind:
        return None
    ident = msg.get("nodeId"), msg.get("url"), msg.get("incarnation")
    if not all(type(x) is str and x for x in ident):
        return None
    return ident  # type: ignore[return-value]


def _as_bytes(value: Any) -> bytes:
    return value if type(value) is bytes else b""


def _version(msg: Dict[str, Any]) -> Optional[int]:
    v = msg.get("version")
    return v if type(v) is int else None


class Membership:
    """The peers of one node (``node_id``, this run ``incarnation``) and the messages between them."""

    def __init__(self, node_id: str, incarnation: str, clock: Clock, spawn: Callable[..., Any], *,
                 map_version: Callable[[], int], secret: Optional[str] = None) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self._key = link_key(secret)
        self.refused = 0                  # /cluster links refused for a missing or wrong proof
        self.url = ""                     # ours, known once the node listens (start())
        self.clock = clock
        self.spawn = spawn
        self.map_version = map_version
        self.on_change: Callable[[], None] = _nothing
        self.on_death: Callable[[str], None] = _nothing
        self.on_link_up: Callable[[str], None] = _nothing
        self.on_newer_map: Callable[[str, int], None] = _nothing
        self.peers: Dict[str, Peer] = {}
        self.closed = False
        self._rids = itertools.count(1)
        self._incoming: List[FrameSocket] = []
        self.max_version_seen = 0
        self._last_tick: Optional[float] = None
        self._handlers: Dict[str, Handler] = {
            "CLUSTER_REPLY": self._on_reply, "CLUSTER_HEARTBEAT": self._on_heartbeat}

    def on(self, kind: str, handler: Handler) -> None:
        """Dispatch peer messages of type ``kind`` to ``handler(peer_id, msg)``."""
        self._handlers[kind] = handler

    # -- lifecycle

    def start(self, url: str, seeds: Sequence[str], joined: Event, found: Callable[[], None]) -> None:
        """Heartbeats from now on; with ``seeds``, dial them until ``joined`` is set.

        ``found()`` is called (once) if this node is to found the cluster (see Joining above).
        """
        self.url = url
        if seeds:
            self.spawn(self._join, tuple(seeds), joined, found)
        self.spawn(self._heartbeat_loop)

    def close(self) -> None:
        """Drop every link without telling anyone (a stop is indistinguishable from a crash)."""
        self.closed = True
        for peer in self.peers.values():
            peer.pending = {}
            if peer.out is not None:
                peer.out.close()
                peer.out = None
        for fs in self._incoming:
            fs.close()
        self._incoming = []

    def alive_ids(self) -> List[str]:
        return sorted(n for n, p in self.peers.items() if p.alive)

    def is_alive(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        peer = self.peers.get(node_id)
        return peer is not None and peer.alive

    # -- sending

    def send(self, peer_id: str, msg: Dict[str, Any]) -> bool:
        peer = self.peers.get(peer_id)
        if peer is None or not peer.alive:
            return False
        return self._send(peer, _pack(msg))

    def _send(self, peer: Peer, data: bytes) -> bool:
        if peer.out is not None:
            return peer.out.send(data)
        if len(peer.backlog) >= MAX_BACKLOG:
            return False
        peer.backlog.append(data)
        return True

    def broadcast(self, msg: Dict[str, Any]) -> None:
        data = _pack(msg)
        for peer in self.peers.values():
            if peer.alive:
                self._send(peer, data)

    def call(self, peer_id: str, msg: Dict[str, Any], on_reply: Reply, timeout: float) -> None:
        """Send a request; ``on_reply(reply)`` runs once, with ``None`` on failure or timeout."""
        peer = self.peers.get(peer_id)
        if peer is None or not peer.alive:
            on_reply(None)
            return
        rid = next(self._rids)
        msg["rid"] = rid
        peer.pending[rid] = (on_reply, self.clock.monotonic() + timeout)
        if not self._send(peer, _pack(msg)):
            peer.pending.pop(rid, None)
            on_reply(None)

    def reply(self, peer_id: str, request: Dict[str, Any], body: Dict[str, Any]) -> None:
        body["type"] = "CLUSTER_REPLY"
        body["rid"] = request.get("rid")
        self.send(peer_id, body)

    def _on_reply(self, peer_id: str, msg: Dict[str, Any]) -> None:
        peer = self.peers.get(peer_id)
        entry = peer.pending.pop(msg.get("rid") or 0, None) if peer is not None else None
        if entry is not None:
            entry[0](msg)

    # -- links

    def _identity_fields(self) -> Dict[str, Any]:
        return {"nodeId": self.node_id, "url": self.url, "incarnation": self.incarnation,
                "version": self.map_version()}

    def _dial(self, url: str) -> Peer:
        """Open our outgoing link to the node at ``url`` (handshake above); returns that node's Peer.

        Raises:
            OSError: it did not complete the handshake in time, or did not prove the secret.
        """
        fs, ident, version = self._handshake(url)
        peer = self._register(*ident, dial=False)
        peer.version = version
        self._use_link(peer, fs)
        return peer

    def _handshake(self, url: str) -> Tuple[FrameSocket, Tuple[str, str, str], Optional[int]]:
        """A new link to ``url`` after the handshake: (link, the node's identity, its map version)."""
        fs = dial(url, "/cluster", timeout=DIAL_TIMEOUT_S, spawn=self.spawn, name=f"{self.node_id}->{url}")
        try:
            with gevent.Timeout(HELLO_TIMEOUT_S, OSError(f"{url}: link handshake timed out")):
                data = fs.recv()
                challenge = _unpack(data) if isinstance(data, bytes) else None
                if not isinstance(challenge, dict) or challenge.get("type") != "CLUSTER_CHALLENGE" \
                        or type(challenge.get("nonce")) is not bytes:
                    raise OSError(f"{url}: expected CLUSTER_CHALLENGE, got {challenge!r}")
                theirs, mine = challenge["nonce"], os.urandom(16)
                proof = link_proof(self._key, "hello", theirs, mine, self.node_id, self.url, self.incarnation)
                fs.send(_pack({"type": "CLUSTER_HELLO", **self._identity_fields(), "nonce": mine, "proof": proof}))
                data = fs.recv()
            ack = _unpack(data) if isinstance(data, bytes) else None
            ident = _identity(ack, "CLUSTER_HELLO_ACK")
            if ident is None:
                raise OSError(f"{url}: expected CLUSTER_HELLO_ACK, got {ack!r}")
            assert isinstance(ack, dict)  # _identity found its fields
            if self._key is not None and not hmac.compare_digest(
                    link_proof(self._key, "ack", mine, theirs, *ident), _as_bytes(ack.get("proof"))):
                raise OSError(f"{url}: CLUSTER_HELLO_ACK does not prove the cluster secret")
        except BaseException:
            fs.close()
            raise
        return fs, ident, _version(ack)

    def _use_link(self, peer: Peer, fs: FrameSocket) -> None:
        """Make ``fs`` (handshake done) our outgoing link to ``peer``; the backlog goes out on it."""
        old, peer.out = peer.out, fs
        if old is not None:
            # Two dials crossed (ours from the seed list, another from _ensure_link): frames
            # already queued on the old link (a snapshot reply, say) must still go out.
            old.close(flush=True)
        self.spawn(self._read_outgoing, peer, fs)
        self.on_link_up(peer.node_id)
        backlog, peer.backlog = peer.backlog, []
        for data in backlog:
            fs.send(data)

    def members(self) -> List[List[str]]:
        """``[node_id, url, incarnation]`` of us and every live peer (for CLUSTER_WELCOME)."""
        members = [[self.node_id, self.url, self.incarnation]]
        members += [[p.node_id, p.url, p.incarnation] for p in self.peers.values() if p.alive]
        return members

    def _ensure_link(self, peer: Peer) -> None:
        """Dial ``peer`` unless linked; after ``REDIAL_ATTEMPTS`` failures it is dead."""
        if peer.dialing or peer.out is not None:
            return
        peer.dialing = True
        try:
            for attempt in range(REDIAL_ATTEMPTS):
                if self.closed or not peer.alive or self.peers.get(peer.node_id) is not peer:
                    return
                try:
                    self._dial(peer.url)
                    return
                except (OSError, gevent.Timeout) as exc:
                    log.debug("%s: dial %s failed (%s), attempt %d", self.node_id, peer.node_id, exc, attempt + 1)
                    if attempt + 1 < REDIAL_ATTEMPTS:
                        self.clock.sleep(0.05)
            self.declare_dead(peer, "unreachable")
        finally:
            peer.dialing = False

    def _read_outgoing(self, peer: Peer, fs: FrameSocket) -> None:
        # Peers never send on our outgoing link after the ack; reading tells us when it drops.
        try:
            while fs.recv() is not None:
                pass
        except FrameTooLarge:
            fs.close()
        if peer.out is fs and not self.closed:
            peer.out = None
            log.info("%s: link to %s dropped", self.node_id, peer.node_id)
            self._ensure_link(peer)

    def serve_incoming(self, fs: FrameSocket) -> None:
        """Run a peer's link to us (called by the app for ``/cluster``; the app closes ``fs`` after)."""
        nonce = os.urandom(16)
        fs.send(_pack({"type": "CLUSTER_CHALLENGE", "nonce": nonce}))
        first = None
        with gevent.Timeout(HELLO_TIMEOUT_S, False):
            first = fs.recv()
        try:
            hello = _unpack(first) if isinstance(first, bytes) else None
        except Exception:
            hello = None
        ident = _identity(hello, "CLUSTER_HELLO")
        if ident is None or ident[0] == self.node_id:
            return  # a probe, a stray client or ourselves: nothing to do
        assert isinstance(hello, dict)
        theirs = _as_bytes(hello.get("nonce"))
        if self._key is not None and not hmac.compare_digest(
                link_proof(self._key, "hello", nonce, theirs, *ident), _as_bytes(hello.get("proof"))):
            self.refused += 1
            log.warning("%s: refused a /cluster link claiming to be %r: it does not prove the cluster secret",
                        self.node_id, ident[0])
            return
        peer = self._register(*ident)
        peer.version = _version(hello)
        fs.send(_pack({"type": "CLUSTER_HELLO_ACK", **self._identity_fields(),
                       "proof": link_proof(self._key, "ack", theirs, nonce, self.node_id, self.url,
                                           self.incarnation)}))
        self._incoming.append(fs)
        handlers, clock = self._handlers, self.clock
        try:
            while not self.closed:
                data = fs.recv()
                if data is None or self.peers.get(peer.node_id) is not peer:
                    return
                try:
                    msg = _unpack(data)
                    peer.last_heard = clock.monotonic()
                    if not peer.alive:
                        self._register(peer.node_id, peer.url, peer.incarnation)
                    handler = handlers.get(msg.get("type"))
                    if handler is not None:
                        handler(peer.node_id, msg)
                except Exception:
                    log.exception("%s: bad message from %s", self.node_id, peer.node_id)
        except FrameTooLarge:
            return
        finally:
            if fs in self._incoming:
                self._incoming.remove(fs)

    def _register(self, node_id: str, url: str, incarnation: str, dial: bool = True) -> Peer:
        now = self.clock.monotonic()
        peer = self.peers.get(node_id)
        if peer is not None and peer.incarnation == incarnation:
            peer.last_heard = now
            if not peer.alive:
                log.info("%s: %s is back", self.node_id, node_id)
                peer.alive = True
                self.on_change()
            if dial and peer.out is None:
                self.spawn(self._ensure_link, peer)
            return peer
        if peer is not None:
            self.declare_dead(peer, "restarted with a new incarnation")
        peer = self.peers[node_id] = Peer(node_id, url, incarnation, now)
        log.info("%s: met %s at %s", self.node_id, node_id, url)
        self.on_change()
        if dial:
            self.spawn(self._ensure_link, peer)
        return peer

    def learn(self, nodes: Dict[str, Tuple[str, str]]) -> None:
        """Register (and dial) every node of a map we do not know yet, by its url and incarnation."""
        for node_id, (url, incarnation) in nodes.items():
            known = self.peers.get(node_id)
            if node_id != self.node_id and (known is None or known.incarnation != incarnation):
                self._register(node_id, url, incarnation)

    def learn_members(self, members: Any) -> None:
        """Register every ``[node_id, url, incarnation]`` of a CLUSTER_WELCOME we do not know yet."""
        self.learn({node_id: (url, incarnation) for node_id, url, incarnation in members or ()})

    def declare_dead(self, peer: Peer, why: str) -> None:
        if not peer.alive:
            return
        peer.alive = False
        log.info("%s: %s is dead (%s)", self.node_id, peer.node_id, why)
        if peer.out is not None:
            out, peer.out = peer.out, None
            out.close()
        pending, peer.pending, peer.backlog = peer.pending, {}, []
        for on_reply, _deadline in pending.values():
            on_reply(None)
        self.on_death(peer.node_id)
        self.on_change()

    # -- joining and heartbeats

    def _join(self, seeds: Tuple[str, ...], joined: Event, found: Callable[[], None]) -> None:
        started = self.clock.monotonic()
        while not self.closed and not joined.is_set():
            reached_all = True
            for seed in seeds:
                if any(p.url == seed and p.alive and (p.out is not None or p.dialing) for p in self.peers.values()):
                    continue  # linked, or being dialled, already (a seed is a node's advertised url)
                try:
                    self._dial(seed)
                except (OSError, gevent.Timeout) as exc:
                    reached_all = False
                    log.info("%s: seed %s not reachable: %s", self.node_id, seed, exc)
            if self.should_found(reached_all, self.clock.monotonic() - started):
                log.info("%s: no reachable node has a map and ours is the lowest id: founding the cluster",
                         self.node_id)
                found()
                return
            if joined.wait(1.0 if self.peers and reached_all else JOIN_RETRY_S):
                return

    def should_found(self, reached_all_seeds: bool, waited: float) -> bool:
        """Whether this seeded node founds the cluster now (see Joining in the module docstring)."""
        if self.map_version() or self.max_version_seen:
            return False
        alive = [p for p in self.peers.values() if p.alive]
        if any(p.version != 0 for p in alive):
            return False        # someone has a map (we will be taken in), or we do not know yet
        if any(p.node_id < self.node_id for p in alive):
            return False        # a lower id founds
        return reached_all_seeds or waited >= FOUND_AFTER_S

    def _heartbeat_loop(self) -> None:
        clock = self.clock
        while not self.closed:
            clock.sleep(HEARTBEAT_S)
            self.tick(clock.monotonic())

    def tick(self, now: float) -> None:
        """One heartbeat round: send heartbeats, detect silent peers, expire requests."""
        if self._last_tick is not None and now - self._last_tick > SUSPECT_S / 2:
            # We ourselves did not run for a while (a long synchronous job in a shared hub, or a
            # SIGSTOP): silence from peers says nothing about them, so start their clocks again.
            for peer in self.peers.values():
                peer.last_heard = max(peer.last_heard, now)
        self._last_tick = now
        beat = _pack({"type": "CLUSTER_HEARTBEAT", "version": self.map_version()})
        for peer in list(self.peers.values()):
            if not peer.alive:
                continue
            if peer.out is not None:
                peer.out.send(beat)
            elif not peer.dialing:
                self.spawn(self._ensure_link, peer)
            if now - peer.last_heard > SUSPECT_S:
                self.declare_dead(peer, f"silent for {SUSPECT_S} s")
                continue
            expired = [rid for rid, (_cb, deadline) in peer.pending.items() if deadline < now]
            for rid in expired:
                entry = peer.pending.pop(rid, None)
                if entry is not None:
                    entry[0](None)

    def _on_heartbeat(self, peer_id: str, msg: Dict[str, Any]) -> None:
        version = int(msg.get("version") or 0)
        peer = self.peers.get(peer_id)
        if peer is not None:
            peer.version = version
        self.max_version_seen = max(self.max_version_seen, version)
        if version > self.map_version():
            self.on_newer_map(peer_id, version)

    def __repr__(self) -> str:
        return f"<Membership {self.node_id} alive={self.alive_ids()} peers={len(self.peers)}>"
