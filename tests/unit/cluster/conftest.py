"""Fixtures for the cluster unit tests: the in-memory FakeCluster and a clock that yields."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List

import gevent
import pytest

from topgun.clock import FakeClock

sys.path.insert(0, str(Path(__file__).parent))
from fakecluster import FakeCluster  # noqa: E402


class YieldingFakeClock(FakeClock):
    """FakeClock whose sleep also yields, so a background loop on it cannot starve the hub."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: List[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)
        gevent.sleep(0.001)


@pytest.fixture
def fake_clock() -> YieldingFakeClock:
    return YieldingFakeClock()


@pytest.fixture
def fake_cluster() -> Iterator[Callable[..., FakeCluster]]:
    made: List[FakeCluster] = []

    def make(nodes: Any = ("a", "b", "c"), **kw: Any) -> FakeCluster:
        fc = FakeCluster(list(nodes), **kw)
        made.append(fc)
        return fc

    yield make
    for fc in made:
        fc.close()
