"""Requests the real server never answers end with OperationTimeout by their deadline."""
from __future__ import annotations

import time

import pytest
from realserver_helpers import MakeClient

from topgun.errors import OperationTimeout
from topgun.protocol import messages as m
from topgun.queries import query_once
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

MARGIN = 0.5  # generous: a timed-out request should end within milliseconds of its deadline


@pytest.mark.parametrize("path", ["abcd", "015/1d3f", "zzz"], ids=["too-deep", "routed-too-deep", "not-hex"])
def test_a_merkle_request_the_server_ignores_times_out(topgun_real_server: RealServer, make_client: MakeClient,
                                                       path: str) -> None:
    client = make_client(topgun_real_server.url)
    client.map("orders").set("o1", 1)  # the map exists; only the path is wrong
    timeout = 0.5
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        client.runtime.requests.request(m.MerkleReqBucket("orders", path), timeout=timeout)
    elapsed = time.monotonic() - start
    assert timeout * 0.9 <= elapsed < timeout + MARGIN
    # The connection is still fine afterwards, and nothing is left waiting.
    assert client.map("orders").get("o1") == 1
    assert client.runtime.provider.any_connection().pending_count == 0


def test_a_query_the_server_drops_times_out(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    # groupBy sends the standalone server down a path that never replies (WIRE.md 7.1).
    client = make_client(topgun_real_server.url)
    timeout = 0.5
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        query_once(client.runtime.requests, "orders", {"groupBy": ["x"]}, None, timeout)
    assert time.monotonic() - start < timeout + MARGIN


def test_the_default_request_timeout_applies(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    client = make_client(topgun_real_server.url, request_timeout=0.4)
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        client.runtime.requests.request(m.MerkleReqBucket("orders", "abcd"))
    assert 0.4 * 0.9 <= time.monotonic() - start < 0.4 + MARGIN
