"""set / get / remove / put_all round trips against the real topgun-server 2.2.0."""
from __future__ import annotations

import time
from typing import Any

import pytest
from realserver_helpers import MakeClient

from topgun.errors import ConfigurationError
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

QUICK = 1.0  # a point read is one round trip (~1 ms on loopback); this is a generous ceiling


def test_set_then_get(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    users = make_client(topgun_real_server.url).map("users")
    users.set("u1", {"name": "Ada", "age": 36})
    assert users.get("u1") == {"name": "Ada", "age": 36}
    users.set("u1", {"name": "Ada", "age": 37})
    assert users.get("u1") == {"name": "Ada", "age": 37}


@pytest.mark.parametrize("value", [
    "text", 42, -7, 3.5, True, None, [1, "two", [3]], b"\x00\xffbytes", {"nested": {"list": [1, 2], "s": "x"}},
    "caf\u00e9 \U0001f600", 2 ** 62,
], ids=repr)
def test_values_round_trip(topgun_real_server: RealServer, make_client: MakeClient, value: Any) -> None:
    values = make_client(topgun_real_server.url).map("values")
    values.set("k", value)
    assert values.get("k", default="<missing>") == value


def test_get_of_a_missing_key_returns_the_default_quickly(topgun_real_server: RealServer,
                                                          make_client: MakeClient) -> None:
    client = make_client(topgun_real_server.url, request_timeout=5.0)
    users = client.map("users")
    users.set("present", 1)  # the map exists, the key does not
    for key, map_name in (("absent", "users"), ("absent", "no-such-map"), ("", "users"), ("\U0001f600", "users")):
        start = time.monotonic()
        assert client.map(map_name).get(key) is None
        assert client.map(map_name).get(key, default="dflt") == "dflt"
        assert time.monotonic() - start < QUICK, f"get({key!r}) on {map_name} waited for a timeout"
    assert "absent" not in users and "present" in users


def test_get_after_remove_returns_none(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    users = make_client(topgun_real_server.url, request_timeout=5.0).map("users")
    users.set("gone", "v")
    users.set("neighbour", "w")
    users.remove("gone")
    start = time.monotonic()
    assert users.get("gone") is None
    assert users.get("gone", default=0) == 0
    assert time.monotonic() - start < QUICK
    assert users.get("neighbour") == "w"
    # The last key of its leaf: the server then answers with an empty bucket list.
    users.remove("neighbour")
    assert users.get("neighbour") is None
    users.set("gone", "back")
    assert users.get("gone") == "back"


def test_a_second_client_reads_the_first_ones_writes(topgun_real_server: RealServer,
                                                    make_client: MakeClient) -> None:
    writer = make_client(topgun_real_server.url).map("shared")
    reader = make_client(topgun_real_server.url).map("shared")
    writer.set("a", 1)
    writer.set_async("b", 2).get(timeout=5.0)
    writer.remove_async("a").get(timeout=5.0)
    assert reader.get("a") is None
    assert reader.get("b") == 2
    assert reader.entries() == {"b": 2}


def test_bad_keys_and_values_are_refused_before_sending(topgun_real_server: RealServer,
                                                        make_client: MakeClient) -> None:
    client = make_client(topgun_real_server.url)
    users = client.map("users")
    with pytest.raises(ConfigurationError):
        users.set(42, "v")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        users.set("k", object())
    assert client.pending_writes == 0


def test_ten_thousand_writes_through_op_batch(topgun_real_server: RealServer, make_client: MakeClient) -> None:
    client = make_client(topgun_real_server.url, request_timeout=60.0)
    big = client.map("big")
    items = {f"key-{i:05d}": {"i": i, "tag": "x" * (i % 7)} for i in range(10_000)}
    assert big.put_all(items) == 10_000
    stats = client.runtime.engine.stats
    assert stats["acked"] >= 10_000
    assert stats["batches"] < 10_000 / 10  # batched, not one op per frame
    assert client.pending_writes == 0
    assert big.entries(timeout=30.0) == items
    reader = make_client(topgun_real_server.url).map("big")
    assert reader.get("key-09999") == {"i": 9999, "tag": "x" * (9999 % 7)}
    assert len(reader) == 10_000
