"""Configuration: bad values raise ConfigurationError at construction, before any IO."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest

import topgun
from topgun.config import ClientConfig, ClusterConfig, ReconnectPolicy, RetryPolicy, check_url
from topgun.errors import ConfigurationError, TopGunError

URL = "ws://127.0.0.1:8080/ws"


def test_configuration_error_is_a_topgun_error_and_a_value_error() -> None:
    assert issubclass(ConfigurationError, TopGunError)
    assert issubclass(ConfigurationError, ValueError)
    assert ConfigurationError.retryable is False


@pytest.mark.parametrize("seeds", [[], (), ""])
def test_cluster_needs_seeds(seeds: Any) -> None:
    with pytest.raises(ConfigurationError, match="seed"):
        ClusterConfig(seeds=seeds)


def test_cluster_with_no_arguments_has_no_seeds() -> None:
    with pytest.raises(ConfigurationError):
        ClusterConfig()


@pytest.mark.parametrize("url", [
    "", None, 42, b"ws://127.0.0.1:8080", "127.0.0.1:8080", "http://127.0.0.1:8080", "tcp://h:1",
    "ws://", "ws://:8080/ws", "ws://host:notaport/ws", "ws://host:99999/ws",
])
def test_bad_urls(url: Any) -> None:
    with pytest.raises(ConfigurationError):
        check_url(url)
    with pytest.raises(ConfigurationError):
        ClientConfig(url=url)
    with pytest.raises(ConfigurationError):
        ClusterConfig(seeds=[URL, url])


@pytest.mark.parametrize("url", [URL, "ws://localhost:8080", "wss://example.com/ws", "ws://[::1]:8080/ws"])
def test_good_urls(url: str) -> None:
    assert check_url(url) == url
    assert ClientConfig(url=url).url == url


def test_a_single_seed_string_is_accepted() -> None:
    assert ClusterConfig(seeds=URL).seeds == (URL,)


BAD_CLIENT_VALUES = [
    ("batch_size", 0), ("batch_size", -5), ("batch_size", 2.5), ("batch_size", "10"),
    ("max_in_flight", 0), ("max_in_flight", -1),
    ("request_timeout", 0), ("request_timeout", -1.0), ("request_timeout", "5"), ("request_timeout", True),
    ("connect_timeout", 0), ("connect_timeout", -0.1),
    ("retry", {"max_attempts": 1}),
    ("write_concern", "ALL"), ("write_concern", "applied"), ("write_concern", ""),
    ("token", 123), ("token", b"bytes"),
]


@pytest.mark.parametrize("name,value", BAD_CLIENT_VALUES)
def test_bad_client_values(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name if name != "token" else "token"):
        ClientConfig(url=URL, **{name: value})


@pytest.mark.parametrize("name,value", [("batch_size", True), ("max_in_flight", True),
                                         ("request_timeout", float("nan"))])
def test_bools_and_nan_are_not_counts_or_timeouts(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig(url=URL, **{name: value})


@pytest.mark.parametrize("kwargs", [
    {"connections_per_node": 0}, {"connections_per_node": -2}, {"connections_per_node": True},
    {"connections_per_node": 1.5}, {"partition_map_refresh_interval": 0},
])
def test_bad_cluster_values(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ClusterConfig(seeds=[URL], **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": -1}, {"max_attempts": 1.5}, {"max_attempts": True},
    {"backoff_s": 0}, {"max_backoff_s": -1}, {"deadline_s": 0},
])
def test_bad_retry_policy(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"initial_s": 0}, {"max_s": -1}, {"multiplier": 0.5}, {"jitter": -0.1}, {"jitter": 1.5},
])
def test_bad_reconnect_policy(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ReconnectPolicy(**kwargs)


def test_exactly_one_of_url_and_cluster() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        ClientConfig(url=URL, cluster=ClusterConfig(seeds=[URL]))
    with pytest.raises(ConfigurationError, match="exactly one"):
        ClientConfig()
    with pytest.raises(ConfigurationError):
        ClientConfig(cluster={"seeds": [URL]})  # type: ignore[arg-type]


def test_write_concern_defaults_by_mode() -> None:
    assert ClientConfig(url=URL).effective_write_concern == "APPLIED"
    assert ClientConfig(cluster=ClusterConfig(seeds=[URL])).effective_write_concern == "REPLICATED"
    assert ClientConfig(url=URL, write_concern="MEMORY").effective_write_concern == "MEMORY"


def test_configs_are_frozen_and_replace_validates_again() -> None:
    cfg = ClientConfig(url=URL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 10  # type: ignore[misc]
    assert dataclasses.replace(cfg, batch_size=10).batch_size == 10
    with pytest.raises(ConfigurationError):
        dataclasses.replace(cfg, batch_size=0)


def test_the_client_constructor_validates_before_connecting() -> None:
    # Nothing listens on these URLs: the error must come from validation, not from a connect attempt.
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient("http://127.0.0.1:1/ws")
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient(URL, cluster=ClusterConfig(seeds=[URL]))
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient()
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient(URL, write_concern="SOMETIMES")
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient(URL, batch_size=0)
    with pytest.raises(ConfigurationError):
        topgun.TopGunClient(URL, request_timeout=-1)


def test_a_misspelt_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        topgun.TopGunClient(URL, batchsize=10)
    with pytest.raises(TypeError):
        ClientConfig(url=URL, timeout=3.0)  # type: ignore[call-arg]
