"""Fixtures for the tests against the real topgun-server 2.2.0 (servers come from topgun.testing.plugin)."""
from __future__ import annotations

import pytest
from realserver_helpers import MakeClient


@pytest.fixture
def make_client(topgun_url_client_factory: MakeClient) -> MakeClient:
    """``make_client(url, **kw)``: a connected TopGunClient, closed after the test."""
    return topgun_url_client_factory
