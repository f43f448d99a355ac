"""Pure parts of the dev server: key hashing, the LWW store and its Merkle trees, placement, JWT."""
from __future__ import annotations

from collections import Counter

import pytest

from topgun.protocol.hashing import merkle_path
from topgun.server.auth import verify_hs256
from topgun.server.placement import PartitionTable, assign
from topgun.server.store import NO_CHANGE, Store, item_hash, pid_of
from topgun.testing.jwt import make_hs256_token

# The dev server's key_hash/pid_of are checked against the golden vectors with the client's,
# in one test per vector: tests/unit/protocol/test_partition_vectors.py.


def test_lww_keeps_the_newest_and_tombstones_block_older_puts():
    store = Store()
    assert store.apply(1, "m", "k", (10, 0, "a"), "v1", None, True) is None
    assert store.apply(1, "m", "k", (9, 5, "z"), "old", None, True) is NO_CHANGE
    assert store.apply(1, "m", "k", (10, 0, "a"), "same", None, True) is NO_CHANGE
    assert store.apply(1, "m", "k", (10, 0, "b"), "v2", None, True)[1] == "v1"
    store.apply(1, "m", "k", (20, 0, "a"), None, None, False)
    assert store.apply(1, "m", "k", (15, 0, "a"), "zombie", None, True) is NO_CHANGE
    assert list(store.live_items("m", [1])) == []
    assert [list(w) for w in store.snapshot(1)] == [[1, "m", "k", 20, 0, "a", None, None, False]]


def test_merkle_tree_follows_writes_and_removes():
    store = Store()
    keys = [f"key{i}" for i in range(50)]
    for i, key in enumerate(keys):
        store.apply(pid_of(key), "m", key, (100 + i, 0, "n"), i, None, True)
    pid = pid_of(keys[0])
    tree = store.tree(pid, "m")
    expected = sum(item_hash(k, (100 + i, 0, "n")) for i, k in enumerate(keys) if pid_of(k) == pid) & 0xFFFFFFFF
    assert tree.root == expected
    store.apply(pid, "m", keys[0], (500, 0, "n"), None, None, False)           # remove: maintained incrementally
    assert tree.root == (expected - item_hash(keys[0], (100, 0, "n"))) & 0xFFFFFFFF
    path = merkle_path(keys[0])
    assert keys[0] not in {k for k, _ in store.leaf_records(pid, "m", path[:3])}
    fresh = Store()
    fresh.apply_writes(store.snapshot(pid))
    assert fresh.tree(pid, "m").root == tree.root and fresh.tree(pid, "m").sums == tree.sums


def test_rendezvous_placement_is_deterministic_balanced_and_moves_little():
    nodes = {f"n{i}": (f"ws://h:{i}/ws", "inc") for i in range(1, 4)}
    t3 = assign(nodes, 1, 0)
    assert t3.owners == assign(dict(reversed(list(nodes.items()))), 1, 0).owners
    assert min(Counter(t3.owners).values()) > 271 // 3 - 30
    assert all(t3.owners[p] not in t3.backups[p] and len(t3.backups[p]) == 1 for p in range(271))
    t4 = assign({**nodes, "n4": ("ws://h:4/ws", "inc")}, 2, 0)
    moved = [p for p in range(271) if t3.owners[p] != t4.owners[p]]
    assert all(t4.owners[p] == "n4" for p in moved)                # only the newcomer gains
    without_n2 = assign({k: v for k, v in nodes.items() if k != "n2"}, 3, 0)
    for p in range(271):                                           # a dead owner's backup takes over
        expected = t3.backups[p][0] if t3.owners[p] == "n2" else t3.owners[p]
        assert without_n2.owners[p] == expected


def test_partition_table_round_trips_and_builds_the_client_frame():
    table = assign({"a": ("ws://h:1/ws", "x"), "b": ("ws://h:2/ws", "y")}, 7, 123)
    again = PartitionTable.from_internal(table.to_internal())
    assert (again.version, again.owners, again.backups, again.nodes) == (7, table.owners, table.backups, table.nodes)
    payload = table.client_payload()
    assert payload["version"] == 7 and payload["generatedAt"] == 123 and payload["partitionCount"] == 271
    assert payload["nodes"][0] == {"nodeId": "a", "endpoints": {"websocket": "ws://h:1/ws"}, "status": "ACTIVE"}
    assert table.holds("a", "x", 0) == ("a" in table.holders(0))
    assert not table.holds("a", "other-incarnation", 0)


@pytest.mark.parametrize("token, ok", [
    (make_hs256_token("s", "u1", now=1000, exp_in=100), True),
    (make_hs256_token("s", "u1", now=1000, exp_in=-59), True),
    (make_hs256_token("s", "u1", now=1000, exp_in=-61), False),
    (make_hs256_token("s", "u1", now=1000, exp_in=None), False),
    (make_hs256_token("other", "u1", now=1000), False),
    ("not.a.token", False),
    ("abc", False),
    (42, False),
])
def test_jwt_verification(token, ok):
    assert verify_hs256(token, "s", now_s=1000) == ("u1" if ok else None)
