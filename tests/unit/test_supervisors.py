"""No exception type ends a reconnect loop (issue 13, item 1), in either mode, and a token callable's
exception reaches the caller as the cause of the error it finally sees.

The client talks to an in-memory server (PING -> PONG; in JWT mode AUTH_REQUIRED first, and
AUTH_ACK or AUTH_FAIL for the token). The transport factory or the token callable raise what a
test says, on the attempts it says; the supervisors (single server: the provider's loop; cluster
mode: seed discovery and the pool's per-node loop) must log it at WARNING, back off and try again.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, List, Optional, Set

import gevent
import pytest

from topgun import AuthError, ClusterConfig, ConnectTimeout, OperationTimeout, ReconnectPolicy, TopGunClient
from topgun.errors import TokenProviderError
from topgun.protocol import codec
from topgun.protocol import messages as m
from topgun.retry import AUTH_ATTEMPTS
from topgun.transport.memory import MemoryTransport, memory_pair

pytestmark = pytest.mark.timeout(30)

URL = "ws://127.0.0.1:1/ws"   # never dialled: the transport factory answers instead
FAST = ReconnectPolicy(initial_s=0.01, max_s=0.05)
MODES = ["url", "cluster"]


class VaultDown(Exception):
    """What a user's token callable raises (not a topgun error)."""


class FakeServer:
    """Memory-pair servers; ``fail_on`` holds the attempt numbers (1-based) whose transport raises."""

    def __init__(self, *, jwt: bool = False, good_tokens: Optional[Set[str]] = None) -> None:
        self.jwt = jwt
        self.good = good_tokens if good_tokens is not None else {"good"}
        self.attempts = 0
        self.fail_on: Set[int] = set()
        self.error: Callable[[], BaseException] = lambda: ZeroDivisionError("a bug in a transport")
        self.greenlets: List[gevent.Greenlet] = []
        self.ends: List[MemoryTransport] = []

    def factory(self, url: str, timeout: float) -> MemoryTransport:
        self.attempts += 1
        if self.attempts in self.fail_on:
            raise self.error()
        client_end, server_end = memory_pair()
        self.ends.append(server_end)
        self.greenlets.append(gevent.spawn(self._serve, server_end))
        return client_end

    def drop_all(self) -> None:
        """Close every server end: the client sees its connections lost."""
        for end in self.ends:
            end.close()

    def _serve(self, transport: MemoryTransport) -> None:
        authed = not self.jwt
        if self.jwt:
            transport.send(codec.encode(m.AuthRequired()))
        while True:
            data = transport.recv()
            if data is None:
                return
            msg = codec.decode(data)
            if isinstance(msg, m.Auth):
                if msg.token in self.good:
                    authed = True
                    transport.send(codec.encode(m.AuthAck(user_id="u")))
                else:
                    transport.send(codec.encode(m.AuthFail(error="Authentication failed")))
                    transport.close()
                    return
            elif isinstance(msg, m.Ping) and authed:
                transport.send(codec.encode(m.Pong(msg.timestamp, server_time=msg.timestamp)))


@pytest.fixture
def make() -> Iterator[Callable[..., TopGunClient]]:
    clients: List[TopGunClient] = []
    servers: List[FakeServer] = []

    def make(server: FakeServer, mode: str, **kw: Any) -> TopGunClient:
        servers.append(server)
        target: Any = dict(url=URL) if mode == "url" else dict(cluster=ClusterConfig(seeds=[URL]))
        kw.setdefault("connect_timeout", 3.0)
        client = TopGunClient(**target, transport_factory=server.factory, ping_interval=None, reconnect=FAST, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for server in servers:
        gevent.killall(server.greenlets, timeout=1.0)


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout, AssertionError(f"not reached within {timeout}s")):
        while not check():
            gevent.sleep(0.01)


def warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()
            or r.levelno >= logging.WARNING and r.exc_info and text in repr(r.exc_info[1])]


@pytest.mark.parametrize("mode", MODES)
def test_a_foreign_exception_from_connecting_is_backed_off_not_fatal(mode: str, make: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    server.fail_on = {1, 2}   # the first two connects raise something that is not a TopGunError
    with caplog.at_level(logging.WARNING, logger="topgun"):
        client = make(server, mode)
    assert client.ping() < 1.0
    assert server.attempts >= 3
    assert warnings_naming(caplog, "ZeroDivisionError"), "the unexpected error was not logged at WARNING"


def test_the_cluster_pool_survives_a_foreign_exception_after_discovery(make: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    client = make(server, "cluster")
    before = server.attempts
    server.fail_on = {before + 1, before + 2, before + 3}
    with caplog.at_level(logging.WARNING, logger="topgun"):
        server.drop_all()
        wait_for(lambda: server.attempts >= before + 4 and client.connected)
    assert client.ping() < 1.0
    assert warnings_naming(caplog, "ZeroDivisionError")


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_token_callable_at_construction_is_retried_then_chained(mode: str, make: Any) -> None:
    calls: List[int] = []

    def token() -> str:
        calls.append(1)
        raise VaultDown("vault unreachable")

    with pytest.raises(AuthError) as info:
        make(FakeServer(jwt=True), mode, token=token, connect_timeout=1.0)
    error = info.value
    assert isinstance(error, TokenProviderError)
    assert isinstance(error.__cause__, VaultDown)
    assert "VaultDown: vault unreachable" in str(error) and "token" in str(error)
    assert len(calls) >= 3, "the token callable was not asked again with back-off"


@pytest.mark.parametrize("mode", MODES)
def test_a_token_callable_that_recovers_during_construction_connects(mode: str, make: Any) -> None:
    calls: List[int] = []

    def token() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise VaultDown("not yet")
        return "good"

    client = make(FakeServer(jwt=True), mode, token=token)
    assert client.ping() < 1.0
    assert len(calls) >= 3


@pytest.mark.parametrize("mode", MODES)
def test_a_token_callable_that_starts_raising_does_not_end_reconnection(mode: str, make: Any) -> None:
    broken = [False]
    calls: List[int] = []

    def token() -> str:
        calls.append(1)
        if broken[0]:
            raise VaultDown("vault unreachable")
        return "good"

    server = FakeServer(jwt=True)
    client = make(server, mode, token=token)
    broken[0] = True
    server.drop_all()
    wait_for(lambda: not client.connected)
    with pytest.raises(OperationTimeout) as read:
        client.ping(timeout=0.5)
    assert isinstance(read.value.__cause__, VaultDown)
    n = len(calls)
    wait_for(lambda: len(calls) >= n + 3)        # still asking, with back-off
    broken[0] = False
    wait_for(lambda: client.connected)
    assert client.ping() < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_writes_that_time_out_behind_a_raising_token_callable_name_its_exception(mode: str, make: Any) -> None:
    broken = [False]

    def token() -> str:
        if broken[0]:
            raise VaultDown("vault unreachable")
        return "good"

    server = FakeServer(jwt=True)
    client = make(server, mode, token=token)
    broken[0] = True
    server.drop_all()
    wait_for(lambda: not client.connected)
    with pytest.raises(OperationTimeout) as info:
        client.map("m").set("k", 1, timeout=0.5)
    assert isinstance(info.value.__cause__, VaultDown)
    assert "VaultDown" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_refused_tokens_from_a_callable_are_asked_for_again_before_any_caller_hears(mode: str, make: Any) -> None:
    tokens = iter(["stale"] * (AUTH_ATTEMPTS - 1) + ["good"] * 1000)
    client = make(FakeServer(jwt=True), mode, token=lambda: next(tokens))
    assert client.ping() < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_a_callable_whose_tokens_keep_being_refused_raises_auth_error(mode: str, make: Any) -> None:
    calls: List[int] = []

    def token() -> str:
        calls.append(1)
        return "stale"

    with pytest.raises(AuthError) as info:
        make(FakeServer(jwt=True), mode, token=token, connect_timeout=3.0)
    assert not isinstance(info.value, TokenProviderError)
    assert len(calls) >= AUTH_ATTEMPTS


@pytest.mark.parametrize("mode", MODES)
def test_once_tokens_keep_being_refused_requests_fail_with_auth_error_at_once(mode: str, make: Any) -> None:
    good = {"good"}
    server = FakeServer(jwt=True, good_tokens=good)
    client = make(server, mode, token=lambda: "good")
    good.clear()                     # the server now refuses the token (say, its key was rotated)
    server.drop_all()
    wait_for(lambda: not client.connected)
    provider = client.runtime.provider
    if mode == "url":
        wait_for(lambda: isinstance(client.runtime.last_error, AuthError) and provider.refusals.persistent)
    else:                            # every node of the map refused it, as often as it takes
        wait_for(lambda: provider._refused_everywhere() is not None)
    with pytest.raises(AuthError):
        client.ping(timeout=2.0)
    with pytest.raises(AuthError):
        client.map("m").set("k", 1, timeout=0.3)


def test_a_fixed_token_refused_once_is_reported_at_once(make: Any) -> None:
    with pytest.raises(AuthError):
        make(FakeServer(jwt=True), "url", token="stale", connect_timeout=3.0)


def test_connect_timeout_chains_a_foreign_cause(make: Any) -> None:
    server = FakeServer()
    server.fail_on = set(range(1, 10_000))
    server.error = lambda: KeyError("boom")
    with pytest.raises(ConnectTimeout) as info:
        make(server, "url", connect_timeout=0.3)
    assert isinstance(info.value.__cause__, KeyError)


def test_failures_in_a_row_warn_at_the_threshold_then_each_time_they_double() -> None:
    from topgun.retry import WARN_AFTER, warn_now
    warned = [n for n in range(1, 100) if warn_now(n)]
    assert warned == [WARN_AFTER, 2 * WARN_AFTER, 4 * WARN_AFTER, 8 * WARN_AFTER, 16 * WARN_AFTER]
