"""``ttl=`` is refused (issue 13, item 3): neither server expires entries, so accepting it would lie.

The real TopGun 2.2.0 server keeps ``ttlMs`` but still returns the entry after it passed (WIRE.md
4.2; checked again for this change: ``ttl=0.5`` read back 2 s later), and the dev cluster does
the same. So ``set``/``set_async`` raise before anything is queued or sent.
"""
from __future__ import annotations

import pytest

import topgun

pytestmark = pytest.mark.integration


@pytest.fixture
def client(topgun_cluster_factory, topgun_url_client_factory):
    node = topgun_cluster_factory(1)
    return topgun_url_client_factory(node.urls[0], thread_mode="direct")


@pytest.mark.parametrize("call", ["set", "set_async"])
def test_ttl_raises_a_configuration_error_that_says_why(client, call) -> None:
    cache = client.map("cache")
    with pytest.raises(topgun.ConfigurationError, match=r"ttl=1 is not supported: .*expires entries"):
        getattr(cache, call)("t", "x", ttl=1)
    assert cache.get("t") is None                   # nothing was written
    done = getattr(cache, call)("t", "x")           # without ttl the same write goes through
    if call == "set_async":
        done.get(timeout=5.0)
    assert cache.get("t") == "x"
