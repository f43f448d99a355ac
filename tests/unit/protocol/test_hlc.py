"""HLC: strictly increasing timestamps under a FakeClock, and the update() rules of WIRE.md 4.1."""
from __future__ import annotations

from typing import List

import pytest

from topgun.clock import FakeClock
from topgun.protocol.hlc import HLC, MAX_DRIFT_MS, Timestamp

START = 1_700_000_000_000


class SettableWall:
    """A wall clock the test sets directly, backwards included."""

    def __init__(self, ms: int = START) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_now_is_strictly_increasing_while_the_clock_stands_still() -> None:
    clock = FakeClock(START)
    hlc = HLC("py-a", now_ms=clock.now_ms)
    stamps = [hlc.now() for _ in range(1000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 1000
    assert stamps[0] == Timestamp(START, 0, "py-a")
    assert stamps[-1] == Timestamp(START, 999, "py-a")


def test_the_counter_resets_when_the_wall_clock_moves_on() -> None:
    clock = FakeClock(START)
    hlc = HLC("py-a", now_ms=clock.now_ms)
    hlc.now(), hlc.now()
    clock.sleep(0.005)
    assert hlc.now() == Timestamp(START + 5, 0, "py-a")


def test_a_clock_going_backwards_never_makes_time_go_backwards() -> None:
    wall = SettableWall()
    hlc = HLC("py-a", now_ms=wall)
    seen: List[Timestamp] = [hlc.now()]
    walls = [START]
    for step in (-1, -500, -60_000, +10, -5, 0, +70_000, -70_000):
        wall.ms += step
        walls.append(wall.ms)
        seen.append(hlc.now())
    assert all(a < b for a, b in zip(seen, seen[1:]))
    # After the jump back, the HLC keeps the highest millis it has seen and counts up from there.
    assert seen[-2] == Timestamp(max(walls), 0, "py-a")
    assert seen[-1] == Timestamp(max(walls), 1, "py-a")


def test_a_fake_clock_told_to_sleep_backwards_stands_still() -> None:
    clock = FakeClock(START)
    hlc = HLC("py-a", now_ms=clock.now_ms)
    first = hlc.now()
    clock.sleep(-3.0)
    assert clock.now_ms() == START
    assert hlc.now() == Timestamp(START, first.counter + 1, "py-a")


# ---- update(): max_millis = max(last, wall, remote.millis), then the counter rule


def make(last_millis: int, counter: int, wall: int) -> HLC:
    hlc = HLC("py-a", now_ms=SettableWall(wall))
    hlc.last_millis, hlc.counter = last_millis, counter
    return hlc


@pytest.mark.parametrize("last,counter,wall,remote,expected", [
    # remote millis is the max: take it, counter = remote + 1
    (100, 7, 90, Timestamp(200, 3, "n1"), (200, 4)),
    # local last is the max: counter = local + 1
    (300, 7, 90, Timestamp(200, 3, "n1"), (300, 8)),
    # wall is the max: counter = 0
    (100, 7, 400, Timestamp(200, 3, "n1"), (400, 0)),
    # local and remote tie at the max: counter = max(local, remote) + 1
    (200, 7, 90, Timestamp(200, 3, "n1"), (200, 8)),
    (200, 2, 90, Timestamp(200, 9, "n1"), (200, 10)),
    # all three tie: still max(local, remote) + 1
    (200, 2, 200, Timestamp(200, 9, "n1"), (200, 10)),
    # wall ties with local above remote: local + 1
    (300, 7, 300, Timestamp(200, 3, "n1"), (300, 8)),
    # wall ties with remote above local: remote + 1
    (100, 7, 200, Timestamp(200, 3, "n1"), (200, 4)),
])
def test_update_rules(last: int, counter: int, wall: int, remote: Timestamp, expected: tuple) -> None:
    hlc = make(last, counter, wall)
    hlc.update(remote)
    assert (hlc.last_millis, hlc.counter) == expected
    nxt = hlc.now()
    assert nxt > remote
    assert nxt.node_id == "py-a"


def test_after_update_now_is_after_the_remote_even_with_a_slow_wall_clock() -> None:
    clock = FakeClock(START)
    hlc = HLC("py-a", now_ms=clock.now_ms)
    remote = Timestamp(START + 30_000, 41, "n1")
    hlc.update(remote)
    assert hlc.now() > remote
    clock.sleep(1.0)
    assert hlc.now() > remote  # the wall clock is still behind: counters keep going


def test_drift_beyond_sixty_seconds_is_only_counted() -> None:
    clock = FakeClock(START)
    hlc = HLC("py-a", now_ms=clock.now_ms)
    hlc.update(Timestamp(START + MAX_DRIFT_MS, 0, "n1"))
    assert hlc.drift_warnings == 0
    far = Timestamp(START + MAX_DRIFT_MS + 1_000, 0, "n1")
    hlc.update(far)
    assert hlc.drift_warnings == 1
    assert hlc.now() > far  # not strict: the remote time is adopted anyway


def test_timestamp_order_and_string_form() -> None:
    a = Timestamp(1, 0, "b")
    assert Timestamp(0, 9, "z") < a < Timestamp(1, 1, "a") < Timestamp(2, 0, "a")
    assert Timestamp(1, 0, "a") < a  # node id breaks ties, as plain strings
    assert Timestamp(1, 0, "B") < Timestamp(1, 0, "a")  # byte order, not locale order
    assert str(Timestamp(1795659465690, 0, "n1")) == "1795659465690:0:n1"
    assert Timestamp.parse("1795659465690:0:n1") == Timestamp(1795659465690, 0, "n1")
    assert Timestamp.from_wire(a.to_wire()) == a


def test_node_ids_with_a_colon_are_refused() -> None:
    with pytest.raises(ValueError):
        HLC("bad:id", now_ms=lambda: 0)


def test_now_range_issues_what_as_many_now_calls_would_and_later_stamps_follow() -> None:
    wall = SettableWall()
    one, many = HLC("py-a", now_ms=wall), HLC("py-a", now_ms=wall)
    one.now(), many.now()
    expected = [one.now() for _ in range(500)]
    first = many.now_range(500)
    assert [Timestamp(many.last_millis, first + i, "py-a") for i in range(500)] == expected
    assert many.now() == one.now() == Timestamp(START, 501, "py-a")
    wall.ms += 1
    first = many.now_range(3)
    assert (many.last_millis, first) == (START + 1, 0)
    assert many.now() == Timestamp(START + 1, 3, "py-a")
