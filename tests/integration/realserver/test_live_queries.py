"""Live queries against the real server: a second client sees the first one's writes.

WIRE.md section 7: the writer's own connection gets no updates, so every test has a writer and a
separate watcher. Absence of a delivery is shown against a control subscription that does get the
same write (so the server has fanned it out), never by sleeping.
"""
from __future__ import annotations

from typing import Any, Dict, List

import gevent
import pytest
from realserver_helpers import MakeClient, wait_until

from topgun import P
from topgun.errors import OperationTimeout
from topgun.protocol import messages as m
from topgun.queries import Change
from topgun.testing.realserver import RealServer

pytestmark = pytest.mark.realserver

WAIT = 5.0

PEOPLE: Dict[str, Dict[str, Any]] = {
    "p0": {"name": "Ann", "age": 30, "team": "red"},
    "p1": {"name": "Bob", "age": 17, "team": "blue"},
    "p2": {"name": "Cid", "age": 45, "team": "red"},
    "p3": {"name": "Alf", "age": 22, "team": "blue"},
}


@pytest.fixture
def url(topgun_real_server: RealServer) -> str:
    return topgun_real_server.url


def seeded(make_client: MakeClient, url: str, map_name: str = "people") -> Any:
    people = make_client(url).map(map_name)
    people.put_all(PEOPLE)
    return people


def test_callback_receives_another_clients_writes(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    got: List[Change] = []
    sub = make_client(url).map("people").subscribe(got.append)
    assert sub.results == PEOPLE
    writer.set("p4", {"name": "Dee", "age": 28, "team": "red"})
    writer.set("p0", {"name": "Ann", "age": 31, "team": "red"})
    writer.remove("p1")
    wait_until(lambda: len(got) >= 3, WAIT, "three changes")
    assert got == [Change("p4", {"name": "Dee", "age": 28, "team": "red"}, "ENTER"),
                   Change("p0", {"name": "Ann", "age": 31, "team": "red"}, "UPDATE"),
                   Change("p1", None, "LEAVE")]
    assert sub.results["p0"]["age"] == 31 and "p1" not in sub.results and "p4" in sub.results
    sub.close()


def test_iterating_a_subscription(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    with make_client(url).map("people").subscribe() as sub:
        writer.set("p5", {"name": "Eve", "age": 50, "team": "blue"})
        writer.set("p6", {"name": "Fay", "age": 60, "team": "blue"})
        seen = []
        with gevent.Timeout(WAIT, AssertionError("no changes arrived")):
            for change in sub:
                seen.append(change.key)
                if len(seen) == 2:
                    break
        assert seen == ["p5", "p6"]
        writer.set("p7", {"name": "Gus", "age": 70, "team": "red"})
        assert sub.get(timeout=WAIT) == Change("p7", {"name": "Gus", "age": 70, "team": "red"}, "ENTER")
        with pytest.raises(OperationTimeout):
            sub.get(timeout=0.05)  # nothing else is queued
    assert sub.closed


def test_where_is_exact_equality(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    watcher = make_client(url).map("people")
    red = watcher.subscribe(where={"team": "red"})
    control = watcher.subscribe()
    assert set(red.results) == {"p0", "p2"}
    assert sorted(k for k, _ in watcher.query(where={"team": "blue"})) == ["p1", "p3"]
    writer.set("b1", {"name": "Blu", "age": 1, "team": "blue"})
    writer.set("r1", {"name": "Red", "age": 2, "team": "red"})
    assert red.get(timeout=WAIT).key == "r1"           # the blue write, made first, never arrived
    wait_until(lambda: "r1" in control.results, WAIT, "control saw r1")
    assert "b1" in control.results and "b1" not in red.results
    # Leaving the filter is a LEAVE with no value.
    writer.set("p0", {"name": "Ann", "age": 30, "team": "blue"})
    assert red.get(timeout=WAIT) == Change("p0", None, "LEAVE")
    red.close(), control.close()


def test_predicates_built_with_p(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    watcher = make_client(url).map("people")
    adults_a = watcher.subscribe(predicate=P.and_(P.gte("age", 18), P.like("name", "A%")))
    assert set(adults_a.results) == {"p0", "p3"}
    assert sorted(k for k, _ in watcher.query(predicate=P.or_(P.lt("age", 18), P.eq("name", "Cid")))) == ["p1", "p2"]
    assert sorted(k for k, _ in watcher.query(predicate=P.not_(P.eq("team", "red")))) == ["p1", "p3"]
    assert sorted(k for k, _ in watcher.query(predicate=P.between("age", 20, 40))) == ["p0", "p3"]
    assert sorted(k for k, _ in watcher.query(predicate=P.in_("name", ["Bob", "Cid"]))) == ["p1", "p2"]
    writer.set("x1", {"name": "Abe", "age": 12})    # too young
    writer.set("x2", {"name": "Zed", "age": 40})    # wrong name
    writer.set("x3", {"name": "Amy", "age": 40})    # matches
    assert adults_a.get(timeout=WAIT) == Change("x3", {"name": "Amy", "age": 40}, "ENTER")
    adults_a.close()


def test_sort_and_limit(url: str, make_client: MakeClient) -> None:
    seeded(make_client, url)
    watcher = make_client(url).map("people")
    assert [k for k, _ in watcher.query(sort={"age": "desc"})] == ["p2", "p0", "p3", "p1"]
    assert [k for k, _ in watcher.query(sort={"age": "asc"}, limit=2)] == ["p1", "p3"]
    with watcher.subscribe(predicate=P.gte("age", 18), sort={"age": "desc"}, limit=2) as sub:
        assert list(sub.results) == ["p2", "p0"]


def test_fields_projection(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    watcher = make_client(url).map("people")
    assert dict(watcher.query(where={"team": "red"}, fields=["name"])) == {"p0": {"name": "Ann"},
                                                                          "p2": {"name": "Cid"}}
    with watcher.subscribe(fields=["name", "age"]) as sub:
        assert sub.results["p1"] == {"name": "Bob", "age": 17}
        writer.set("p9", {"name": "Ivy", "age": 9, "team": "red", "secret": "s"})
        assert sub.get(timeout=WAIT) == Change("p9", {"name": "Ivy", "age": 9}, "ENTER")


def test_close_unsubscribes_on_the_server(url: str, make_client: MakeClient) -> None:
    writer = seeded(make_client, url)
    watcher_client = make_client(url)
    watcher = watcher_client.map("people")
    frames: List[m.QueryUpdate] = []
    queries = watcher_client.runtime.queries
    forward = queries.on_message

    def spy(conn: Any, msg: m.Message) -> None:  # every pushed frame, before the client filters it
        if isinstance(msg, m.QueryUpdate):
            frames.append(msg)
        if forward is not None:
            forward(conn, msg)

    queries.on_message = spy  # type: ignore[method-assign]
    sub = watcher.subscribe()
    control = watcher.subscribe()
    assert server_knows(watcher_client, sub.query_id)

    sub.close()
    # The server runs a connection's frames concurrently, so a probe sent right after the
    # QUERY_UNSUB may overtake it: ask until the server has forgotten the query.
    wait_until(lambda: not server_knows(watcher_client, sub.query_id, timeout=0.2), WAIT,
               "the server dropped the closed query")
    writer.set("late1", {"name": "Late"})
    writer.set("late2", {"name": "Later"})
    wait_until(lambda: {"late1", "late2"} <= set(control.results), WAIT, "control saw both writes")
    assert [f.key for f in frames if f.query_id == control.query_id] == ["late1", "late2"]
    assert [f for f in frames if f.query_id == sub.query_id] == []
    with pytest.raises(OperationTimeout):
        sub.get(timeout=0.01)
    control.close()


def server_knows(client: Any, query_id: str, timeout: float = WAIT) -> bool:
    """QUERY_SYNC_INIT is answered for a live queryId and ignored for an unknown one (WIRE.md 7.5)."""
    def ask(conn: Any, remaining: float) -> m.Message:
        return conn.request(m.QuerySyncInit(query_id), remaining, key=("sync_root", "people"))
    try:
        client.runtime.requests.call(ask, timeout=timeout)
    except OperationTimeout:
        return False
    return True
