"""The dev server's Merkle aggregate yields to the hub on big maps, and yielding changes no answer.

``MerkleSync.local_part`` builds one tree per partition the first time a map is synced; on a
12,000-key map that is ~0.1 s of pure Python, which blocked the hub (tests/threads/test_hub_monitor.py
caught it under tests/integration/test_put_all.py). It now calls ``clock.sleep(0)`` between
partitions once ``_SLICE_S`` has passed since its last yield, in this request or earlier ones
(a client's leaf walk is 4,096 cheap requests answered back to back). A clock that moves a little on every reading
stands in for the time the work takes, so these tests are exact, not timed.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from topgun.server import sync
from topgun.server.store import Store, key_hash, pid_of
from topgun.server.sync import MerkleSync

KEYS = [f"user:{i}" for i in range(3000)]


class BusyClock:
    """Every ``monotonic()`` reading moves time on by ``step`` (work takes time); ``sleep(0)`` is counted."""

    def __init__(self, step: float, on_sleep: Optional[Callable[[], None]] = None) -> None:
        self.t, self.step, self.sleeps, self.on_sleep = 0.0, step, 0, on_sleep

    def monotonic(self) -> float:
        self.t += self.step
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep()


def filled_store(keys: List[str], millis: int = 1_700_000_000_000) -> Store:
    store = Store()
    for i, key in enumerate(keys):
        store.apply(pid_of(key), "m", key, (millis + i, 0, "n1"), {"n": i}, None, True)
    return store


def merkle(store: Store, clock: Any) -> MerkleSync:
    # local_part uses only the store and the clock
    return MerkleSync("n1", None, store, None, now=None, gather=None, clock=clock)  # type: ignore[arg-type]


def test_a_long_aggregate_yields_between_partitions_and_gives_the_same_answer() -> None:
    pids = list(range(271))
    still = BusyClock(step=0.0)                       # time never passes: no yield
    expected = merkle(filled_store(KEYS), still).local_part("m", pids, "")
    busy = BusyClock(step=sync._SLICE_S / 2)          # a slice ends every few clock readings
    got = merkle(filled_store(KEYS), busy).local_part("m", pids, "")
    assert still.sleeps == 0
    assert busy.sleeps >= 271 // 8 // 3              # yielded all along the way, not once at the end
    assert got == expected and got["exists"] and len(got["children"]) == 16
    leaf = format(key_hash(KEYS[0]), "08x")[:3]                 # a 3-char path: leaf records
    assert merkle(filled_store(KEYS), busy).local_part("m", pids, leaf) == \
        merkle(filled_store(KEYS), still).local_part("m", pids, leaf)


def test_writes_made_while_it_yields_keep_every_tree_exact() -> None:
    store = filled_store(KEYS)
    late = iter(f"late:{i}" for i in range(1000))
    rewritten = iter(KEYS)

    def concurrent_writes() -> None:                  # what other greenlets do while the aggregate yields
        key = next(late)
        store.apply(pid_of(key), "m", key, (1_800_000_000_000, 0, "n2"), "new", None, True)
        old = next(rewritten)
        store.apply(pid_of(old), "m", old, (1_800_000_000_000, 1, "n2"), "again", None, True)

    clock = BusyClock(step=sync._SLICE_S / 2, on_sleep=concurrent_writes)
    merkle(store, clock).local_part("m", list(range(271)), "")
    assert clock.sleeps > 0
    # The trees built (and kept up to date) across the yields equal trees built from scratch now.
    rebuilt = Store()
    for pid in range(271):
        part = store.parts[pid].get("m")
        for key, rec in (part.records.items() if part is not None else ()):
            rebuilt.apply(pid, "m", key, rec[0], rec[1], rec[2], rec[3])
    still = BusyClock(step=0.0)
    assert merkle(store, still).local_part("m", list(range(271)), "") == \
        merkle(rebuilt, still).local_part("m", list(range(271)), "")


def test_many_short_requests_in_a_row_yield_too() -> None:
    clock = BusyClock(step=sync._SLICE_S / 8)        # each request is far shorter than a slice
    ms = merkle(filled_store(KEYS), clock)
    leaf = format(key_hash(KEYS[0]), "08x")[:3]
    for _ in range(100):                              # a leaf walk: one request after another, no wait between
        ms.local_part("m", list(range(4)), leaf)
    assert clock.sleeps >= 100 // 8 // 2
