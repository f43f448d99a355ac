"""Full-text search through the client, against the real 2.2.0 server and the embedded dev server alike."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from ormap_search_support import any_server_url_fixture, drain, eventually  # noqa: F401  (fixture)

from topgun import ConfigurationError, OperationTimeout, TopGunClient

pytestmark = pytest.mark.integration

DOCS = {"d1": {"title": "Rust in action", "body": "systems programming"},
        "d2": {"title": "Python tricks", "body": "a rust-free zone"},
        "d3": {"title": "Gardening", "tags": ["Rust", "fungus"]},
        "d4": "plain rust string",
        "d5": {"n": 5}}


@pytest.fixture
def two_clients(any_server_url: str, topgun_url_client_factory: Callable[..., TopGunClient]) -> Any:
    return topgun_url_client_factory(any_server_url), topgun_url_client_factory(any_server_url)


def _write_docs(client: TopGunClient) -> None:
    client.map("docs").put_all(DOCS)


def test_a_search_finds_what_was_written(two_clients: Any) -> None:
    writer, reader = two_clients
    _write_docs(writer)
    # 2.2.0 indexes just after the ack (about 15 ms), so a search straight after a write may miss it.
    hits = eventually(lambda: (lambda h: h if len(h) == 4 else None)(reader.map("docs").search("rust")),
                      what="4 hits")
    assert {h.key for h in hits} == {"d1", "d2", "d3", "d4"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.matched_terms == ["rust"] and h.score > 0 for h in hits)
    assert {h.key: h.value for h in hits} == {k: DOCS[k] for k in ("d1", "d2", "d3", "d4")}  # fetched if omitted


def test_limit_min_score_and_required_words(two_clients: Any) -> None:
    writer, reader = two_clients
    _write_docs(writer)
    docs = reader.map("docs")
    eventually(lambda: len(docs.search("rust")) == 4, what="indexed")
    assert len(docs.search("rust", limit=2)) == 2
    every = docs.search("rust")
    cut = (every[0].score + every[-1].score) / 2
    stronger = {h.key for h in every if h.score >= cut}
    assert 0 < len(stronger) < len(every)
    assert {h.key for h in docs.search("rust", min_score=cut)} == stronger
    assert [h.key for h in docs.search("rust AND systems")] == ["d1"]
    assert [h.key for h in docs.search("rust programming", limit=1)] == ["d1"]
    assert docs.search("nothing-like-this") == []
    assert reader.map("no-such-map").search("rust") == []


def test_same_scores_on_both_servers(two_clients: Any) -> None:
    # Figures of the real 2.2.0 server (BM25 over three short documents); the dev server's must match.
    writer, reader = two_clients
    writer.map("scored").put_all({"d1": {"t": "alpha beta"}, "d2": {"t": "alpha gamma"}, "d3": "alpha"})
    hits = eventually(lambda: (lambda h: h if len(h) == 3 else None)(reader.map("scored").search("alpha")),
                      what="indexed")
    scores = {h.key: round(h.score, 4) for h in hits}
    assert scores == {"d3": 0.1597, "d1": 0.1234, "d2": 0.1234}


def test_values_of_or_map_keys_are_searched(two_clients: Any) -> None:
    writer, reader = two_clients
    writer.ormap("mixed").add("k", "delta tag")
    writer.ormap("mixed").add("k", "epsilon")
    hits = eventually(lambda: reader.map("mixed").search("delta"), what="OR-map value indexed")
    assert [(h.key, sorted(h.value)) for h in hits] == [("k", ["delta tag", "epsilon"])]


def test_live_search_reports_enter_update_leave(two_clients: Any) -> None:
    writer, reader = two_clients
    docs = writer.map("docs")
    docs.set("seed", "zebra crossing")
    eventually(lambda: reader.map("docs").search("zebra"), what="indexed")
    with reader.map("docs").search_subscribe("zebra") as live:
        assert set(live.results) == {"seed"}
        docs.set("z1", "a zebra")
        docs.set("z2", {"text": "zebra zebra zebra"})
        eventually(lambda: set(live.results) == {"seed", "z1", "z2"}, what="ENTERs")
        docs.set("z1", "a horse")
        docs.remove("z2")
        eventually(lambda: set(live.results) == {"seed"}, what="LEAVEs")
        changes = drain(live)
    kinds = {(c.key, c.kind) for c in changes}
    assert {("z1", "ENTER"), ("z2", "ENTER"), ("z1", "LEAVE"), ("z2", "LEAVE")} <= kinds


def test_bad_search_arguments_are_refused_locally(two_clients: Any) -> None:
    _, reader = two_clients
    for kwargs in ({"text": ""}, {"text": "x", "limit": 0}, {"text": "x", "min_score": -1}, {"text": 5}):
        with pytest.raises(ConfigurationError):
            reader.map("docs").search(**kwargs)


def test_search_ends_by_its_deadline_when_the_server_is_gone(
        topgun_cluster_factory: Callable[..., Any], topgun_url_client_factory: Callable[..., TopGunClient]) -> None:
    cluster = topgun_cluster_factory(1)
    client = topgun_url_client_factory(cluster.urls[0])
    client.map("docs").set("d", "text")
    cluster.stop()
    start = client.clock.monotonic()
    with pytest.raises(OperationTimeout):
        client.map("docs").search("text", timeout=0.5)
    assert client.clock.monotonic() - start < 0.5 + 1.0
