"""Fixtures for tests on a real multi-node TopGun 2.2.0 cluster (``topgun_real_cluster_factory``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "integration" / "cluster"))   # steadyload.py
sys.path.insert(0, str(Path(__file__).parents[1] / "cluster"))                 # chaosload.py


@pytest.fixture
def node_entries(topgun_url_client_factory: Callable[..., Any]) -> Callable[[str, str], Dict[str, Any]]:
    """``node_entries(url, map_name)``: the map as one node holds it, read from that node alone.

    2.2.0 keeps data on the node that received it (WIRE.md 10.6), so this shows where each write went.
    """
    def read(url: str, map_name: str) -> Dict[str, Any]:
        return topgun_url_client_factory(url).map(map_name).entries(timeout=10.0)

    return read
