"""API conventions of the client that need no server (issue 13, item 6).

Every client here is made with ``wait_connected=False`` in loop mode, so it defers its start to
first use: no thread, no socket. A misspelt keyword names ``TopGunClient`` and the closest
option; ``config=`` is accepted and combines with keywords; ``from_url`` reads common options
from the query string; a bad per-call ``timeout=`` is a ConfigurationError before anything runs.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, List

import pytest

import topgun
from topgun import ClientConfig, ClusterConfig, ConfigurationError, TopGunClient

URL = "ws://127.0.0.1:9/ws"  # never dialled: these clients never start


@pytest.fixture
def deferred() -> Iterator[Any]:
    """``deferred(*args, **kw)``: a TopGunClient that has not started (closed after the test)."""
    made: List[TopGunClient] = []

    def make(*args: Any, **kw: Any) -> TopGunClient:
        kw.setdefault("wait_connected", False)
        kw.setdefault("thread_mode", "loop")
        client = TopGunClient(*args, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.parametrize("typo, suggestion", [
    ("request_timout", "request_timeout"), ("conect_timeout", "connect_timeout"),
    ("write_concer", "write_concern"), ("on_conected", "on_connected"),
])
def test_a_misspelt_keyword_names_the_client_and_the_closest_option(typo: str, suggestion: str) -> None:
    with pytest.raises(TypeError) as caught:
        TopGunClient(URL, **{typo: 1})
    message = str(caught.value)
    assert message.startswith(f"TopGunClient() got an unexpected keyword argument '{typo}'")
    assert f"did you mean '{suggestion}'?" in message
    assert "ClientConfig" not in message and "__init__" not in message


def test_a_keyword_like_nothing_gets_no_suggestion() -> None:
    with pytest.raises(TypeError, match=r"^TopGunClient\(\) got an unexpected keyword argument 'zzzzqqq'$"):
        TopGunClient(URL, zzzzqqq=1)


def test_from_env_options_go_through_the_same_check() -> None:
    with pytest.raises(TypeError, match="did you mean 'batch_size'"):
        TopGunClient.from_env(url=URL, batch_sise=10)


def test_config_is_passable(deferred: Any) -> None:
    config = topgun.ClientConfig(url=URL, request_timeout=3.0, batch_size=7)  # exported, and passable
    client = deferred(config=config)
    assert client.config == config and client.request_timeout == 3.0


def test_keywords_override_the_config(deferred: Any) -> None:
    config = ClientConfig(url=URL, request_timeout=3.0, batch_size=7)
    client = deferred(config=config, request_timeout=1.5)
    assert client.config.request_timeout == 1.5
    assert client.config.batch_size == 7                # the rest comes from the config
    assert config.request_timeout == 3.0                # the caller's config is untouched (frozen)


def test_a_keyword_endpoint_replaces_the_configs_endpoint(deferred: Any) -> None:
    config = ClientConfig(url=URL, batch_size=7)
    cluster = ClusterConfig(seeds=["ws://127.0.0.1:10/ws"])
    client = deferred(config=config, cluster=cluster)
    assert client.config.cluster == cluster and client.config.url is None and client.config.batch_size == 7
    back = deferred(config=client.config, url=URL)
    assert back.config.url == URL and back.config.cluster is None


def test_a_bad_value_over_a_config_is_still_checked() -> None:
    with pytest.raises(ConfigurationError, match="request_timeout"):
        TopGunClient(config=ClientConfig(url=URL), request_timeout=-1, wait_connected=False, thread_mode="loop")


def test_config_must_be_a_client_config() -> None:
    with pytest.raises(ConfigurationError, match="config= must be a topgun.ClientConfig"):
        TopGunClient(config={"url": URL})  # type: ignore[arg-type]


def test_from_url_reads_common_options_from_the_query_string(deferred: Any) -> None:
    client = TopGunClient.from_url(f"{URL}?request_timeout=2.5&connect_timeout=0.5&write_concern=applied",
                                   wait_connected=False, thread_mode="loop")
    try:
        assert client.config.url == URL                  # the query string is not sent to the server
        assert (client.config.request_timeout, client.config.connect_timeout) == (2.5, 0.5)
        assert client.config.write_concern == "APPLIED"
    finally:
        client.close()


def test_from_url_keywords_win_over_the_query_string() -> None:
    client = TopGunClient.from_url(f"{URL}?request_timeout=2.5", request_timeout=4.0,
                                   wait_connected=False, thread_mode="loop")
    try:
        assert client.config.request_timeout == 4.0
    finally:
        client.close()


def test_from_url_cluster_flag_uses_cluster_mode() -> None:
    client = TopGunClient.from_url(f"{URL}?cluster=1", wait_connected=False, thread_mode="loop")
    try:
        assert client.config.cluster is not None and client.config.cluster.seeds == (URL,)
    finally:
        client.close()


@pytest.mark.parametrize("url, match", [
    (f"{URL}?request_timout=1", "unknown query parameter 'request_timout'; did you mean 'request_timeout'"),
    (f"{URL}?request_timeout=soon", "is not a number of seconds"),
    (f"{URL}?request_timeout=1&request_timeout=2", "given twice"),
    (f"{URL}?cluster=maybe", "is not 1/0/true/false"),
    ("http://127.0.0.1:8080/ws", "HTTP URL; TopGun speaks WebSocket: ws://127.0.0.1:8080/ws"),
    ("127.0.0.1:8080", "ws://"),
])
def test_from_url_refuses_what_it_cannot_use(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TopGunClient.from_url(url, wait_connected=False, thread_mode="loop")


@pytest.mark.parametrize("timeout", [-1, 0, 0.0, math.nan, math.inf, True, "5"], ids=repr)
@pytest.mark.parametrize("call", ["get", "set", "remove", "query", "subscribe", "ping"])
def test_a_bad_per_call_timeout_is_a_configuration_error(deferred: Any, call: str, timeout: Any) -> None:
    client = deferred(URL)
    target = client if call == "ping" else client.map("m")
    args = {"get": ("k",), "set": ("k", 1), "remove": ("k",)}.get(call, ())
    with pytest.raises(ConfigurationError, match="timeout must be a positive, finite number"):
        getattr(target, call)(*args, timeout=timeout)
    assert repr(client).endswith("not started>")  # refused before anything ran: nothing was started
