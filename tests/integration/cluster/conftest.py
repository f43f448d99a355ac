"""Fixtures for cluster integration tests: embedded clusters and cluster-mode clients, torn down after."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import topgun

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def embedded_cluster(topgun_cluster_factory: Callable[..., Any]) -> Callable[..., Any]:
    return topgun_cluster_factory

@pytest.fixture
def cluster_client(topgun_client_factory: Callable[..., topgun.TopGunClient]) -> Callable[..., topgun.TopGunClient]:
    return topgun_client_factory
