"""Announced endpoints -> URLs to dial: endpoint_map (dict or callable) and the seeds' scheme."""
from __future__ import annotations

import logging
import ssl
from typing import Any, Dict

import pytest

from topgun.cluster.endpoints import EndpointResolver
from topgun.config import ClientConfig, ClusterConfig
from topgun.errors import ConfigurationError

PLAIN_SEED = "ws://10.0.0.1:8080/ws"
TLS_SEED = "wss://db.example.com/ws"


def resolver(seeds: Any = (PLAIN_SEED,), endpoint_map: Any = None) -> EndpointResolver:
    return EndpointResolver(ClusterConfig(seeds=seeds, endpoint_map=endpoint_map))


def test_without_a_map_plain_seeds_dial_what_nodes_announce() -> None:
    assert resolver().resolve("n1", "ws://10.0.0.5:8080") == "ws://10.0.0.5:8080"
    assert resolver().resolve("n1", "wss://n1.example.com/ws") == "wss://n1.example.com/ws"


def test_tls_seeds_never_fall_back_to_plain_text() -> None:
    r = resolver(seeds=[TLS_SEED])
    assert r.resolve("n1", "ws://n1.internal:8080") == "wss://n1.internal:8080"
    assert r.resolve("n1", "ws://n1.internal:8080/ws") == "wss://n1.internal:8080/ws"
    assert r.resolve("n1", "wss://n1.example.com:9443/ws") == "wss://n1.example.com:9443/ws"


def test_a_scheme_less_endpoint_gets_the_seeds_scheme() -> None:
    assert resolver(seeds=[TLS_SEED]).resolve("n1", "n1.example.com:443") == "wss://n1.example.com:443"
    assert resolver().resolve("n1", "10.0.0.5:8080") == "ws://10.0.0.5:8080"


@pytest.mark.parametrize("key", ["n2", "ws://10.0.0.6:8080", "10.0.0.6:8080"])
def test_a_dict_maps_by_node_id_announced_url_or_host_port(key: str) -> None:
    r = resolver(seeds=[TLS_SEED], endpoint_map={key: "wss://n2.example.com:9443/ws"})
    assert r.resolve("n2", "ws://10.0.0.6:8080") == "wss://n2.example.com:9443/ws"
    # Nodes the dict does not name fall back to the seeds' scheme.
    assert r.resolve("n3", "ws://10.0.0.7:8080") == "wss://10.0.0.7:8080"


def test_the_node_id_wins_over_the_announced_url() -> None:
    r = resolver(endpoint_map={"ws://10.0.0.6:8080": "wss://by-url/ws", "n2": "wss://by-id/ws"})
    assert r.resolve("n2", "ws://10.0.0.6:8080") == "wss://by-id/ws"


def test_a_callable_sees_node_id_and_announced_endpoint() -> None:
    seen: Dict[str, str] = {}

    def to_proxy(node_id: str, announced: str) -> str:
        seen[node_id] = announced
        return f"wss://{node_id}.example.com/ws"

    r = resolver(endpoint_map=to_proxy)
    assert r.resolve_all({"n1": "ws://10.0.0.5:8080", "n2": "ws://10.0.0.6:8080"}) == {
        "n1": "wss://n1.example.com/ws", "n2": "wss://n2.example.com/ws"}
    assert seen == {"n1": "ws://10.0.0.5:8080", "n2": "ws://10.0.0.6:8080"}


def test_a_callable_returning_junk_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    r = resolver(seeds=[TLS_SEED], endpoint_map=lambda node_id, announced: "http://nope")
    with caplog.at_level(logging.ERROR, logger="topgun.cluster.endpoints"):
        assert r.resolve("n1", "ws://10.0.0.5:8080") == "wss://10.0.0.5:8080"
    assert "endpoint_map" in caplog.text


@pytest.mark.parametrize("bad", [{"n1": "http://x"}, {"": "wss://x/ws"}, {"n1": 5}, 42, "wss://x/ws"])
def test_bad_endpoint_maps_are_configuration_errors(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="endpoint_map"):
        ClusterConfig(seeds=[TLS_SEED], endpoint_map=bad)


def test_ssl_context_must_be_an_ssl_context() -> None:
    ctx = ssl.create_default_context()
    assert ClientConfig(url=TLS_SEED, ssl_context=ctx).ssl_context is ctx
    with pytest.raises(ConfigurationError, match="ssl_context"):
        ClientConfig(url=TLS_SEED, ssl_context="/etc/ssl/ca.pem")  # type: ignore[arg-type]


def test_repr_says_what_kind_of_map_and_scheme() -> None:
    assert repr(resolver(seeds=[TLS_SEED], endpoint_map={"n1": "wss://a/ws"})) == \
        "<EndpointResolver map=dict(1) seeds=wss>"
    assert repr(resolver()) == "<EndpointResolver map=none seeds=ws>"
