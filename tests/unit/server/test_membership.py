"""Failure detection and request expiry, driven by a FakeClock (no sockets: peers are never dialled)."""
from __future__ import annotations

from topgun.clock import FakeClock
from topgun.server.membership import HEARTBEAT_S, SUSPECT_S
from topgun.server.node import Node


def _node_with_peer():
    clock = FakeClock()
    node = Node("n1", clock=clock)
    peer = node.membership._register("n2", "ws://127.0.0.1:1/ws", "inc-1", dial=False)
    return node, clock, peer


def test_a_silent_peer_is_declared_dead_after_the_suspicion_timeout():
    node, clock, peer = _node_with_peer()
    clock.advance(SUSPECT_S - HEARTBEAT_S)
    node.membership.tick(clock.monotonic())
    assert peer.alive
    clock.advance(2 * HEARTBEAT_S)
    node.membership.tick(clock.monotonic())
    assert not peer.alive and node.membership.alive_ids() == []
    node.stop()


def test_requests_expire_and_fail_on_death_exactly_once():
    node, clock, peer = _node_with_peer()
    replies = []
    node.membership.call("n2", {"type": "CLUSTER_GATHER"}, replies.append, timeout=1.0)
    node.membership.call("n2", {"type": "CLUSTER_GATHER"}, replies.append, timeout=10.0)
    assert len(peer.backlog) == 2 and replies == []           # queued until the link is up
    clock.advance(1.5)
    node.membership.tick(clock.monotonic())
    assert replies == [None]
    node.membership.declare_dead(peer, "test")
    assert replies == [None, None] and peer.backlog == []
    node.membership.call("n2", {"type": "CLUSTER_GATHER"}, replies.append, timeout=1.0)
    assert replies == [None, None, None]                      # a dead peer fails at once
    node.stop()


def test_a_new_incarnation_replaces_the_old_one():
    node, clock, peer = _node_with_peer()
    replies = []
    node.membership.call("n2", {"type": "CLUSTER_GATHER"}, replies.append, timeout=5.0)
    new = node.membership._register("n2", "ws://127.0.0.1:1/ws", "inc-2", dial=False)
    assert new is not peer and not peer.alive and new.alive and replies == [None]
    node.stop()


def test_a_long_local_pause_does_not_kill_peers():
    node, clock, peer = _node_with_peer()
    node.membership.tick(clock.monotonic())
    clock.advance(SUSPECT_S * 3)                 # we were frozen, not the peer
    node.membership.tick(clock.monotonic())
    assert peer.alive
    clock.advance(SUSPECT_S + HEARTBEAT_S)
    for _ in range(int(SUSPECT_S / HEARTBEAT_S) + 2):
        clock.advance(HEARTBEAT_S)
        node.membership.tick(clock.monotonic())
    assert not peer.alive
    node.stop()
