"""OR-maps through the client, against the real 2.2.0 server and the embedded dev server alike."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from ormap_search_support import any_server_url_fixture, drain, eventually  # noqa: F401  (fixture)

from topgun import ConfigurationError, OperationTimeout, TopGunClient

pytestmark = pytest.mark.integration


@pytest.fixture
def two_clients(any_server_url: str, topgun_url_client_factory: Callable[..., TopGunClient]) -> Any:
    return topgun_url_client_factory(any_server_url), topgun_url_client_factory(any_server_url)


def test_adds_from_two_clients_both_survive(two_clients: Any) -> None:
    a, b = two_clients
    a.ormap("tags").add("post:1", "python")
    b.ormap("tags").add("post:1", "gevent")
    assert sorted(a.ormap("tags").get("post:1")) == ["gevent", "python"]
    assert sorted(b.ormap("tags").get("post:1")) == ["gevent", "python"]


def test_removing_one_value_keeps_the_others(two_clients: Any) -> None:
    # On 2.2.0 the OR_REMOVE wipes the whole key; the client puts the survivors back.
    a, b = two_clients
    for value in ("python", "crdt"):
        a.ormap("tags").add("post:1", value)
    b.ormap("tags").add("post:1", {"lang": "rust"})
    assert b.ormap("tags").remove("post:1", "python") == 1
    assert sorted(map(str, a.ormap("tags").get("post:1"))) == ["crdt", "{'lang': 'rust'}"]
    assert b.ormap("tags").remove("post:1", "absent") == 0
    assert a.ormap("tags").remove("post:1", {"lang": "rust"}) == 1
    assert a.ormap("tags").get("post:1") == ["crdt"]
    assert a.ormap("tags").remove("post:1", "crdt") == 1
    assert a.ormap("tags").get("post:1") == []


def test_a_value_added_twice_is_removed_with_one_call(two_clients: Any) -> None:
    a, b = two_clients
    a.ormap("tags").add("k", "x")
    b.ormap("tags").add("k", "x")
    a.ormap("tags").add("k", "y")
    assert sorted(a.ormap("tags").get("k")) == ["x", "x", "y"]
    assert a.ormap("tags").remove("k", "x") == 2
    assert b.ormap("tags").get("k") == ["y"]


def test_entries_and_records(two_clients: Any) -> None:
    a, b = two_clients
    assert a.ormap("empty").entries() == {}
    for i in range(30):
        (a if i % 2 else b).ormap("tags").add(f"k{i}", i)
    a.ormap("tags").add("k0", "zero")
    entries = b.ormap("tags").entries()
    assert set(entries) == {f"k{i}" for i in range(30)}
    assert sorted(map(str, entries["k0"])) == ["0", "zero"]
    a.ormap("tags").remove("k1", 1)
    assert "k1" not in a.ormap("tags").entries()   # a key without values is left out
    records = a.ormap("tags").records("k0")
    assert len({r.tag for r in records}) == 2 and all(r.timestamp is not None for r in records)


def test_subscription_sees_other_clients_adds_and_removes(two_clients: Any) -> None:
    a, b = two_clients
    a.ormap("tags").add("post:1", "old")
    with b.ormap("tags").subscribe() as sub:
        assert sub.results == {"post:1": ["old"]}
        a.ormap("tags").add("post:1", "python")
        a.ormap("tags").add("post:1", "crdt")
        eventually(lambda: sorted(sub.results.get("post:1", [])) == ["crdt", "old", "python"], what="adds seen")
        a.ormap("tags").remove("post:1", "python")
        eventually(lambda: sorted(sub.results.get("post:1", [])) == ["crdt", "old"], what="remove seen")
        changes = drain(sub)
    python = [c.kind for c in changes if c.value == "python"]
    assert python[0] == "ADD" and python[-1] == "REMOVE"


def test_bad_arguments_are_refused_locally(two_clients: Any) -> None:
    a, _ = two_clients
    with pytest.raises(ConfigurationError):
        a.ormap("tags").add(5, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        a.ormap("tags").add("k", object())
    with pytest.raises(ConfigurationError):
        a.ormap("")


def test_calls_end_by_their_deadline_when_the_server_is_gone(
        topgun_cluster_factory: Callable[..., Any], topgun_url_client_factory: Callable[..., TopGunClient]) -> None:
    cluster = topgun_cluster_factory(1)
    client = topgun_url_client_factory(cluster.urls[0])
    handle = client.ormap("tags")
    handle.add("k", 1)
    cluster.stop()   # nothing answers any more; the client keeps trying to reconnect
    for call in (lambda: handle.add("k", 2, timeout=0.5), lambda: handle.get("k", timeout=0.5),
                 lambda: handle.remove("k", 1, timeout=0.5), lambda: handle.entries(timeout=0.5)):
        start = client.clock.monotonic()
        with pytest.raises(OperationTimeout):
            call()
        assert client.clock.monotonic() - start < 0.5 + 1.0
