"""Fixtures for dev-server process tests (real SIGKILL).

TODO(plugin owner): ``process_cluster_factory`` belongs in topgun.testing.plugin; it lives here
until then.
"""
from __future__ import annotations

from typing import Callable

import pytest

from topgun.server.process import ProcessCluster


@pytest.fixture
def process_cluster_factory(
        topgun_process_cluster_factory: Callable[..., ProcessCluster]) -> Callable[..., ProcessCluster]:
    """``start(nodes=3, **kw) -> ProcessCluster``: the plugin's ``topgun_process_cluster_factory``."""
    return topgun_process_cluster_factory
