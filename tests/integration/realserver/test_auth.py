"""JWT mode of the real server: good tokens, token providers, and every way a token can be bad.

A bad or missing token must surface as topgun.AuthError from the constructor, promptly: the
server answers AUTH_FAIL at once (or the client knows it has no token), so nothing is left to wait for.
"""
from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

import pytest
from realserver_helpers import MakeClient

import topgun
from topgun.testing.jwt import make_hs256_token
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

SECRET = "realserver-test-secret"
CONNECT_TIMEOUT = 1.5
MARGIN = 1.0


@pytest.fixture
def jwt_server(topgun_real_server_factory: Callable[..., RealServer]) -> RealServer:
    return topgun_real_server_factory(jwt_secret=SECRET)


def test_a_good_token_works(jwt_server: RealServer, make_client: MakeClient) -> None:
    client = make_client(jwt_server.url, token=make_hs256_token(SECRET, sub="alice", roles=["admin"]))
    notes = client.map("notes")
    notes.set("n1", {"text": "hi"})
    assert notes.get("n1") == {"text": "hi"}
    assert client.ping() < 1.0
    conn = client.runtime.provider.any_connection()
    assert conn.authenticated and conn.user_id == "alice"


def test_a_token_provider_is_called_for_each_connection(jwt_server: RealServer, make_client: MakeClient) -> None:
    calls: List[float] = []

    def provider() -> str:
        calls.append(time.monotonic())
        return make_hs256_token(SECRET, sub=f"user-{len(calls)}")

    client = make_client(jwt_server.url, token=provider)
    client.map("notes").set("n1", 1)
    assert client.map("notes").get("n1") == 1
    assert len(calls) == 1
    assert client.runtime.provider.any_connection().user_id == "user-1"


def test_a_token_within_the_servers_leeway_is_accepted(jwt_server: RealServer, make_client: MakeClient) -> None:
    client = make_client(jwt_server.url, token=make_hs256_token(SECRET, sub="late", exp_in=-30))  # 60 s leeway
    client.map("notes").set("n1", 1)
    assert client.map("notes").get("n1") == 1
    conn = client.runtime.provider.any_connection()
    assert conn.authenticated and conn.user_id == "late"


BAD_TOKENS = {
    "garbage": "not-a-jwt",
    "wrong secret": make_hs256_token("some-other-secret"),
    "expired": make_hs256_token(SECRET, exp_in=-600),
    "no exp": make_hs256_token(SECRET, exp_in=None),
    "numeric sub": make_hs256_token(SECRET, sub=42),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_a_bad_token_raises_auth_error_without_hanging(jwt_server: RealServer, token: str) -> None:
    assert_auth_error(jwt_server.url, token, CONNECT_TIMEOUT + MARGIN)


@pytest.mark.parametrize("token", [None, lambda: None, lambda: ""], ids=["none", "provider-none", "provider-empty"])
def test_no_token_against_a_jwt_server_raises_auth_error(jwt_server: RealServer, token: Any) -> None:
    assert_auth_error(jwt_server.url, token, CONNECT_TIMEOUT + MARGIN)


@pytest.mark.parametrize("token", [BAD_TOKENS["wrong secret"], None], ids=["bad-token", "no-token"])
def test_auth_failure_is_reported_at_once(jwt_server: RealServer, token: Optional[str]) -> None:
    # The server's AUTH_FAIL comes back within milliseconds; with the default connect_timeout
    # of 5 s the constructor should not take anywhere near that long.
    assert_auth_error(jwt_server.url, token, 1.0, connect_timeout=5.0)


def test_a_no_auth_client_still_works_against_a_no_auth_server(topgun_real_server: RealServer,
                                                              make_client: MakeClient) -> None:
    # A token is harmless when the server needs none: the client never sends AUTH then.
    client = make_client(topgun_real_server.url, token=make_hs256_token(SECRET))
    client.map("notes").set("n1", 1)
    assert client.runtime.provider.any_connection().user_id is None


def assert_auth_error(url: str, token: Any, within: float, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    start = time.monotonic()
    with pytest.raises(topgun.AuthError):
        client = topgun.TopGunClient(url, token=token, connect_timeout=connect_timeout)
        client.close()
    elapsed = time.monotonic() - start
    assert elapsed < within, f"AuthError took {elapsed:.2f}s"
