"""Failures that end quickly and say why (issue 13, item 5).

- A refused port ends the constructor after ``REFUSED_ATTEMPTS`` quick tries (about 0.1 s),
  not at ``connect_timeout``, with ``ConnectionLost`` chaining the ``ConnectionRefusedError``;
  in cluster mode every seed is tried at once before any back-off.
- With ``wait_connected=False``, reads and writes that time out name the last connection
  error and chain it, in the same words.
- A wrong path (the server answers 404 to the upgrade) names ``/ws``; the dev server now
  answers 404 as the real server does.
- A refused token says which of "not a JWT", "no exp", "expired" or "signature" it is, from
  the token itself, since neither server gives a reason by default.

The refused port is a socket bound to 127.0.0.1 but not listening, held for the whole test, so
nothing else can take it.
"""
from __future__ import annotations

import re
import socket
import time
from typing import Any, Callable, Iterator, List

import pytest

import topgun
from topgun.testing.jwt import make_hs256_token

pytestmark = pytest.mark.integration

SECRET = "fail-fast-secret"
LONG = 5.0  # the default connect_timeout: a refused port must not wait it out


@pytest.fixture
def refused_url() -> Iterator[Callable[[], str]]:
    """``refused_url()``: a ws:// URL whose port refuses connections (bound, not listening)."""
    held: List[socket.socket] = []

    def make() -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
        return f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"

    yield make
    for sock in held:
        sock.close()


def _refused_within(make: Callable[[], Any], within: float) -> BaseException:
    start = time.monotonic()
    with pytest.raises(topgun.ConnectionLost) as caught:
        make().close()
    elapsed = time.monotonic() - start
    assert elapsed < within, f"a refused port took {elapsed:.2f}s to fail"
    return caught.value


@pytest.mark.parametrize("thread_mode", ["direct", "loop"])
def test_a_refused_port_fails_at_once_with_the_cause(refused_url: Callable[[], str], thread_mode: str) -> None:
    url = refused_url()
    error = _refused_within(lambda: topgun.TopGunClient(url, connect_timeout=LONG, thread_mode=thread_mode),
                            LONG / 2)
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert "connection refused (is the server running and listening on port" in str(error)
    assert url in str(error)


def test_refused_seeds_are_all_tried_at_once_and_named(refused_url: Callable[[], str]) -> None:
    seeds = [refused_url(), refused_url(), refused_url()]
    error = _refused_within(lambda: topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=seeds),
                                                        connect_timeout=LONG), LONG / 2)
    assert str(error).startswith("no seed accepted a connection")
    for seed in seeds:
        assert seed in str(error)
    assert isinstance(error.__cause__.__cause__, ConnectionRefusedError)  # type: ignore[union-attr]


def test_a_dead_first_seed_costs_no_back_off(refused_url: Callable[[], str], topgun_cluster_factory: Any,
                                             topgun_client_factory: Any) -> None:
    live = topgun_cluster_factory(1).urls[0]
    slow = topgun.ReconnectPolicy(initial_s=4.0, max_s=4.0, jitter=0.0)  # one back-off would cost 4 s
    start = time.monotonic()
    client = topgun_client_factory([refused_url(), live], connect_timeout=LONG * 2, reconnect=slow)
    elapsed = time.monotonic() - start
    assert client.connected
    assert elapsed < 2.0, f"the second seed was reached after {elapsed:.2f}s"


def test_a_server_that_comes_up_later_is_still_reached_without_wait_connected(
        topgun_url_client_factory: Any) -> None:
    # Failing fast is for the constructor's wait only: reconnecting still never gives up.
    from topgun.server.node import Node
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    client = topgun_url_client_factory(f"ws://127.0.0.1:{port}/ws", wait_connected=False, thread_mode="direct")
    with pytest.raises(topgun.OperationTimeout):
        client.map("m").get("k", timeout=0.3)  # refused many times over by now
    sock.close()
    node = Node("n1", port=port).start()
    try:
        client.map("m").set("k", 1, timeout=10.0)
        assert client.map("m").get("k") == 1
    finally:
        client.close()
        node.stop()


@pytest.mark.parametrize("call", ["get", "set", "query"])
def test_timeouts_without_a_connection_name_and_chain_the_last_error(
        refused_url: Callable[[], str], topgun_url_client_factory: Any, call: str) -> None:
    client = topgun_url_client_factory(refused_url(), wait_connected=False, thread_mode="direct")
    m = client.map("m")
    do = {"get": lambda: m.get("k", timeout=0.5), "set": lambda: m.set("k", 1, timeout=0.5),
          "query": lambda: m.query(timeout=0.5)}[call]
    with pytest.raises(topgun.OperationTimeout) as caught:
        do()
    message = str(caught.value)
    assert "(last error: ConnectionLost: cannot connect to" in message and "connection refused" in message
    assert isinstance(caught.value.__cause__, topgun.ConnectionLost)
    assert isinstance(caught.value.__cause__.__cause__, ConnectionRefusedError)


def test_a_wrong_path_on_the_dev_server_names_ws(topgun_cluster_factory: Any) -> None:
    url = topgun_cluster_factory(1).urls[0].replace("/ws", "/api")
    with pytest.raises(topgun.ConnectionLost) as caught:
        topgun.TopGunClient(url, connect_timeout=LONG, thread_mode="direct").close()
    assert "404" in str(caught.value) and "is the path /ws?" in str(caught.value)
    assert url.replace("/api", "/ws") in str(caught.value)


@pytest.mark.realserver
def test_a_wrong_path_on_the_real_server_names_ws(topgun_real_server: Any) -> None:
    url = topgun_real_server.url.replace("/ws", "/v1/ws")
    with pytest.raises(topgun.ConnectionLost, match=r"HTTP 404: is the path /ws\? .*try ws://127\.0\.0\.1:\d+/ws"):
        topgun.TopGunClient(url, connect_timeout=LONG, thread_mode="direct").close()


BAD_TOKENS = {
    "not_jwt": ("not-a-jwt", r"the token is not a JWT"),
    "no_exp": (make_hs256_token(SECRET, exp_in=None), "the token has no exp claim"),
    # made at import: by the time a test runs it may be well over 600 s past its exp
    "expired": (make_hs256_token(SECRET, exp_in=-600), r"the token expired \d{3,}s ago"),
    "signature": (make_hs256_token("another-secret"), "the signature is the likely cause"),
    "no_sub": (make_hs256_token(SECRET, sub=42), "sub claim is missing or not a string"),  # type: ignore[arg-type]
}


def _auth_error(url: str, token: str) -> topgun.AuthError:
    with pytest.raises(topgun.AuthError) as caught:
        topgun.TopGunClient(url, token=token, connect_timeout=LONG, thread_mode="direct").close()
    return caught.value


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_refused_tokens_get_distinct_messages_from_the_dev_server(topgun_cluster_factory: Any, kind: str) -> None:
    url = topgun_cluster_factory(1, jwt_secret=SECRET).urls[0]
    token, words = BAD_TOKENS[kind]
    error = _auth_error(url, token)
    assert re.search(words, str(error)) and "the server said only 'Authentication failed'" in str(error)
    assert error.details == {"reason": kind, "server": "Authentication failed"}


@pytest.mark.realserver
def test_refused_tokens_get_distinct_messages_from_the_real_server(topgun_real_server_factory: Any) -> None:
    url = topgun_real_server_factory(jwt_secret=SECRET).url
    messages = set()
    for kind, (token, words) in BAD_TOKENS.items():
        error = _auth_error(url, token)
        assert re.search(words, str(error)), kind
        messages.add(str(error))
    assert len(messages) == len(BAD_TOKENS)


@pytest.mark.realserver
def test_the_real_servers_own_reason_is_passed_on_when_it_gives_one(topgun_real_server_factory: Any) -> None:
    server = topgun_real_server_factory(jwt_secret=SECRET, extra_env={"INSECURE_FORWARD_AUTH_ERRORS": "1"})
    error = _auth_error(server.url, BAD_TOKENS["expired"][0])
    assert str(error) == "authentication failed: ExpiredSignature"
    assert error.details["reason"] == "server"

