"""In-memory LWW maps, one store per node, split by partition; pure data (no IO, no time).

A record is the tuple ``(ts, value, ttl_ms, live)`` with ``ts = (millis, counter, node_id)``.
:meth:`Store.apply` keeps the record with the greater timestamp (last-writer-wins); an equal
timestamp changes nothing, so resending a write is harmless. A remove leaves a tombstone
(``live=False``) so an older put arriving later cannot bring the key back; tombstones are never
returned by reads, queries or the Merkle trees.

Merkle trees (WIRE.md 8.2) are built lazily, one per (map, partition), the first time a sync
request needs one, and kept up to date on every later write to that map and partition. Maps
nobody syncs therefore cost nothing per write. Item hash: ``fnv1a("key:millis:counter:nodeId")``;
path: ``merkle_path(key)``; depth 3; every node's hash is the wrapping u32 sum of its items.

A *write* is the named tuple :class:`Write` ``(pid, map, key, millis, counter, node_id, value,
ttl, live)``: the unit that is replicated, forwarded and snapshotted between nodes. msgpack
encodes a tuple as an array, so between nodes a write is a nine-element array; a receiver
gets lists back and rebuilds them with ``Write._make`` where it needs the names.

Per-key history, for tests (off by default: it grows with every write): after
:meth:`Store.keep_history`, every write that reaches :meth:`Store.apply` (the owner applying a
client's write) is appended to ``history[(map, key)]`` as ``(ts, value, live, applied)``;
``applied`` is False when an equal or newer record was already there. A write delivered twice
shows up twice, the second time not applied; one re-stamped and sent again would be applied twice.

Not here: routing, replication, events (``writes.py``, ``subscriptions.py``).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from topgun.protocol.hashing import PARTITION_COUNT, fnv1a32

__all__ = ["Store", "MerkleTree", "NO_CHANGE", "item_hash", "Record", "Write", "pid_of"]

MASK = 0xFFFFFFFF
Record = Tuple[Tuple[int, int, str], Any, Optional[int], bool]
NO_CHANGE: Any = object()


class Write(NamedTuple):
    """One record to merge into a partition: a put (``live``) or a remove (``value`` None)."""

    pid: int
    map: str
    key: str
    millis: int
    counter: int
    node_id: str
    value: Any
    ttl: Optional[int]
    live: bool

    @property
    def ts(self) -> Tuple[int, int, str]:
        return (self.millis, self.counter, self.node_id)

_hashes: Dict[str, int] = {}
_HASH_CACHE_LIMIT = 500_000


def key_hash(key: str) -> int:
    """``fnv1a32(key)``, cached; partition and Merkle path both come from it.

    The cache matters on the write path; ``fnv1a32`` has the ASCII fast path.
    """
    h = _hashes.get(key)
    if h is None:
        h = fnv1a32(key)
        if len(_hashes) >= _HASH_CACHE_LIMIT:
            _hashes.clear()
        _hashes[key] = h
    return h


def pid_of(key: str) -> int:
    """The key's partition, as ``topgun.protocol.hashing.partition_id``."""
    return key_hash(key) % PARTITION_COUNT


def _path(key: str) -> str:
    return format(key_hash(key), "08x")


def item_hash(key: str, ts: Tuple[int, int, str]) -> int:
    return fnv1a32(f"{key}:{ts[0]}:{ts[1]}:{ts[2]}")


class MerkleTree:
    """Sums of item hashes for every path prefix of length 0..3 in one (map, partition)."""

    __slots__ = ("sums", "counts", "leaves", "items")

    def __init__(self) -> None:
        self.sums: Dict[str, int] = {}
        self.counts: Dict[str, int] = {}
        self.leaves: Dict[str, Set[str]] = {}
        self.items: Dict[str, int] = {}

    def update(self, key: str, ts: Optional[Tuple[int, int, str]]) -> None:
        """Set the key's item (``ts=None`` removes it)."""
        old = self.items.pop(key, None)
        path = _path(key)
        if old is not None:
            self._adjust(path, -old, -1)
            leaf = self.leaves[path[:3]]
            leaf.discard(key)
            if not leaf:
                del self.leaves[path[:3]]
        if ts is not None:
            h = item_hash(key, ts)
            self.items[key] = h
            self._adjust(path, h, 1)
            self.leaves.setdefault(path[:3], set()).add(key)

    def _adjust(self, path: str, delta: int, count: int) -> None:
        sums, counts = self.sums, self.counts
        for i in range(4):
            p = path[:i]
            c = counts.get(p, 0) + count
            if c:
                counts[p] = c
                sums[p] = (sums.get(p, 0) + delta) & MASK
            else:
                counts.pop(p, None)
                sums.pop(p, None)

    def __repr__(self) -> str:
        return f"<MerkleTree items={len(self.items)} root={self.root}>"

    @property
    def root(self) -> int:
        return self.sums.get("", 0)

    def children(self, path: str) -> Dict[str, int]:
        """Hashes of the non-empty children of ``path`` (len 0..2), keyed by child hex char."""
        out = {}
        for c in "0123456789abcdef":
            p = path + c
            if p in self.counts:
                out[c] = self.sums[p]
        return out

    def exists(self, path: str) -> bool:
        return path in self.counts


class _MapPart:
    __slots__ = ("records", "tree")

    def __init__(self) -> None:
        self.records: Dict[str, Record] = {}
        self.tree: Optional[MerkleTree] = None


class Store:
    """All maps of one node: ``parts[pid][map_name]`` holds that partition's records."""

    def __init__(self) -> None:
        self.parts: List[Dict[str, _MapPart]] = [{} for _ in range(PARTITION_COUNT)]
        self.history: Optional[Dict[Tuple[str, str], List[Tuple[Tuple[int, int, str], Any, bool, bool]]]] = None

    def keep_history(self) -> None:
        """Record every write :meth:`apply` sees from now on, in ``history`` (see the module docstring)."""
        if self.history is None:
            self.history = {}

    # -- writes

    def apply(self, pid: int, map_name: str, key: str, ts: Tuple[int, int, str], value: Any,
              ttl: Optional[int], live: bool) -> Any:
        """LWW-merge one record; the previous record (or ``None``) if it won, else ``NO_CHANGE``."""
        maps = self.parts[pid]
        mp = maps.get(map_name)
        if mp is None:
            mp = maps[map_name] = _MapPart()
        records = mp.records
        old = records.get(key)
        if self.history is not None:
            self.history.setdefault((map_name, key), []).append((ts, value, live, old is None or old[0] < ts))
        if old is not None and old[0] >= ts:
            return NO_CHANGE
        records[key] = (ts, value, ttl, live)
        tree = mp.tree
        if tree is not None and (live or (old is not None and old[3])):
            tree.update(key, ts if live else None)
        return old

    def apply_writes(self, writes: Iterable[Sequence[Any]]) -> None:
        """Merge replicated or snapshotted writes (no events); :meth:`apply` inlined for speed."""
        parts = self.parts
        for pid, map_name, key, millis, counter, node_id, value, ttl, live in writes:
            maps = parts[pid]
            mp = maps.get(map_name)
            if mp is None:
                mp = maps[map_name] = _MapPart()
            records = mp.records
            ts = (millis, counter, node_id)
            old = records.get(key)
            if old is not None and old[0] >= ts:
                continue
            records[key] = (ts, value, ttl, live)
            if mp.tree is not None and (live or (old is not None and old[3])):
                mp.tree.update(key, ts if live else None)

    # -- reads

    def get(self, pid: int, map_name: str, key: str) -> Optional[Record]:
        mp = self.parts[pid].get(map_name)
        return None if mp is None else mp.records.get(key)

    def live_items(self, map_name: str, pids: Any) -> Iterator[Tuple[str, Record]]:
        """Every live (key, record) of ``map_name`` in the given partitions."""
        parts = self.parts
        for pid in pids:
            mp = parts[pid].get(map_name)
            if mp is not None:
                for key, rec in mp.records.items():
                    if rec[3]:
                        yield key, rec

    def has_map(self, map_name: str) -> bool:
        return any(map_name in maps for maps in self.parts)

    def tree(self, pid: int, map_name: str) -> Optional[MerkleTree]:
        """The Merkle tree of one (map, partition), built on first use; ``None`` if no such map."""
        mp = self.parts[pid].get(map_name)
        if mp is None:
            return None
        if mp.tree is None:
            tree = MerkleTree()
            for key, rec in mp.records.items():
                if rec[3]:
                    tree.update(key, rec[0])
            mp.tree = tree
        return mp.tree

    def leaf_records(self, pid: int, map_name: str, leaf: str) -> List[Tuple[str, Record]]:
        tree = self.tree(pid, map_name)
        if tree is None:
            return []
        records = self.parts[pid][map_name].records
        return [(k, records[k]) for k in sorted(tree.leaves.get(leaf, ()))]

    # -- whole partitions (migration)

    def snapshot(self, pid: int) -> List[Write]:
        """Every record of the partition, tombstones included, as writes."""
        out = []
        for map_name, mp in self.parts[pid].items():
            for key, (ts, value, ttl, live) in mp.records.items():
                out.append(Write(pid, map_name, key, ts[0], ts[1], ts[2], value, ttl, live))
        return out

    def count(self, pid: Optional[int] = None) -> int:
        """Live records in one partition (or all)."""
        pids = range(PARTITION_COUNT) if pid is None else (pid,)
        return sum(1 for p in pids for mp in self.parts[p].values() for r in mp.records.values() if r[3])

    def __repr__(self) -> str:
        maps = {m for maps in self.parts for m in maps}
        return f"<Store maps={len(maps)}>"
