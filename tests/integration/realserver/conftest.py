"""Fixtures for the tests against the real topgun-server 2.2.0 (servers come from topgun.testing.plugin)."""
from __future__ import annotations

from typing import Any, Iterator, List

import pytest
from realserver_helpers import MakeClient

from topgun.client import TopGunClient


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """``make_client(url, **kw)``: a connected TopGunClient, closed after the test."""
    made: List[TopGunClient] = []

    def make(url: str, **kw: Any) -> TopGunClient:
        client = TopGunClient(url, **kw)
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        client.close()
