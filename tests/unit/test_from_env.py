"""TopGunClient.from_env: explicit arguments, then TOPGUN_SEEDS, then TOPGUN_URL, then the default."""
from __future__ import annotations

import pytest

import topgun

A, B = "ws://127.0.0.1:9001/ws", "ws://127.0.0.1:9002/ws"


@pytest.fixture
def make(monkeypatch):
    for name in ("TOPGUN_SEEDS", "TOPGUN_URL", "TOPGUN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    made = []

    def build(**kw):
        client = topgun.TopGunClient.from_env(wait_connected=False, thread_mode="loop", **kw)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def test_seeds_from_the_environment_mean_cluster_mode(make, monkeypatch):
    monkeypatch.setenv("TOPGUN_SEEDS", f"{A}, {B}")
    monkeypatch.setenv("TOPGUN_URL", "ws://ignored:1/ws")
    monkeypatch.setenv("TOPGUN_TOKEN", "jwt")
    config = make().config
    assert config.cluster.seeds == (A, B) and config.url is None and config.token == "jwt"


def test_url_from_the_environment_or_the_default(make, monkeypatch):
    assert make().config.url == "ws://127.0.0.1:8080/ws"
    monkeypatch.setenv("TOPGUN_URL", A)
    assert make().config.url == A


def test_explicit_arguments_win(make, monkeypatch):
    monkeypatch.setenv("TOPGUN_SEEDS", A)
    assert make(url=B).config.url == B                          # an explicit url ignores TOPGUN_SEEDS
    assert make(url=B, cluster=True).config.cluster.seeds == (B,)
    assert make(seeds=[B]).config.cluster.seeds == (B,)
    with pytest.raises(topgun.ConfigurationError):
        make(url="http://not-websocket")
