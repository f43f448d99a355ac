"""Fixtures for cluster system tests: real server processes (SIGKILL) and cluster-mode clients."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import topgun

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "integration" / "cluster"))   # steadyload.py


@pytest.fixture
def proc_cluster(topgun_process_cluster_factory: Callable[..., Any]) -> Callable[..., Any]:
    """``start(nodes) -> ProcessCluster``: the plugin's ``topgun_process_cluster_factory``."""
    return topgun_process_cluster_factory

@pytest.fixture
def cluster_client(topgun_client_factory: Callable[..., topgun.TopGunClient]) -> Callable[..., topgun.TopGunClient]:
    return topgun_client_factory
