"""TopGunClient(url=..., retry=RetryPolicy(...)): the policy reaches the single-server provider and is obeyed.

The client talks to a memory_pair server that answers PING; the test then makes every routing
lookup fail with ConnectionLost (retryable) and counts how often a request tries.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, List

import gevent
import pytest

from topgun import ClientConfig, ClusterConfig, RetryPolicy, TopGunClient
from topgun.errors import ConfigurationError, ConnectionLost, OperationTimeout
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(20)

URL = "ws://127.0.0.1:1/ws"  # never dialled: the transport factory below answers instead
FAST = dict(backoff_s=0.001, max_backoff_s=0.002)


def _serve(transport: MemoryTransport) -> None:
    while True:
        data = transport.recv()
        if data is None:
            return
        msg = codec.decode(data)
        if isinstance(msg, m.Ping):
            transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))


@pytest.fixture
def make_client() -> Iterator[Any]:
    clients: List[TopGunClient] = []
    servers: List[gevent.Greenlet] = []

    def factory(url: str, timeout: float) -> MemoryTransport:
        client_end, server_end = memory_pair()
        servers.append(gevent.spawn(_serve, server_end))
        return client_end

    def make(**options: Any) -> TopGunClient:
        client = TopGunClient(URL, transport_factory=factory, ping_interval=None, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    gevent.killall(servers, timeout=1.0)


def _offline(client: TopGunClient) -> List[int]:
    """Make every routing lookup of ``client`` fail as if the server were gone; returns the call log."""
    calls: List[int] = []

    def lost(*args: Any) -> Any:
        calls.append(1)
        raise ConnectionLost("test: not connected")

    provider: Any = client.runtime.provider
    provider.any_connection = lost
    provider.connection_for_key = lost
    return calls


def test_max_attempts_of_the_client_retry_policy_bounds_a_request(make_client: Any) -> None:
    client = make_client(retry=RetryPolicy(max_attempts=3, **FAST))
    assert client.ping(timeout=5.0) >= 0.0  # connected and answering
    calls = _offline(client)
    with pytest.raises(OperationTimeout):
        client.ping(timeout=5.0)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OperationTimeout):
        client.map("m").get("k", timeout=5.0)
    assert len(calls) == 3


def test_the_policy_deadline_ends_retrying_before_the_calls_own_timeout(make_client: Any) -> None:
    # Ignoring the policy, this request would retry until its own 5 s timeout.
    client = make_client(retry=RetryPolicy(max_attempts=10_000, deadline_s=0.3, backoff_s=0.01, max_backoff_s=0.02))
    calls = _offline(client)
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        client.ping(timeout=5.0)
    assert time.monotonic() - start < 2.5
    assert len(calls) > 1  # it did retry, just not past the policy's deadline


def test_the_policy_is_the_one_given_or_the_default() -> None:
    policy = RetryPolicy(max_attempts=7)
    assert ClientConfig(url=URL, retry=policy).effective_retry is policy
    assert ClientConfig(url=URL).effective_retry == RetryPolicy()
    assert ClientConfig(cluster=ClusterConfig(seeds=[URL], retry=policy)).effective_retry is policy
    assert ClientConfig(cluster=ClusterConfig(seeds=[URL]), retry=policy).effective_retry is policy
    with pytest.raises(ConfigurationError, match="not both"):
        ClientConfig(cluster=ClusterConfig(seeds=[URL], retry=policy), retry=RetryPolicy(max_attempts=2))
