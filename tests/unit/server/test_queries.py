"""Query evaluation (the subset probed against 2.2.0 is in the conformance tests)."""
from __future__ import annotations

import pytest

from topgun.server.queries import Query, QueryError


def keys(query, items, fields=None):
    return [k for k, _v, _ts in Query(query, fields).run([(k, v, (0, 0, "n")) for k, v in items])[0]]


ITEMS = [("a", {"n": 3, "s": "x"}), ("b", {"n": 1, "s": "y"}), ("c", {"n": 2}), ("d", "scalar"), ("e", {"n": None})]


def test_empty_query_matches_everything_including_scalars():
    assert keys({}, ITEMS) == ["a", "b", "c", "d", "e"]


def test_booleans_never_equal_numbers():
    assert keys({"where": {"f": 1}}, [("t", {"f": True}), ("one", {"f": 1})]) == ["one"]


def test_sort_puts_null_then_missing_last_and_limit_applies_after():
    assert keys({"sort": {"n": "asc"}}, ITEMS) == ["b", "c", "a", "e", "d"]
    assert keys({"sort": {"n": "desc"}, "limit": 2}, ITEMS) == ["d", "e"]


def test_projection():
    q = Query({}, ["s"])
    assert q.project({"n": 1, "s": "x"}) == {"s": "x"} and q.project("scalar") == "scalar"


@pytest.mark.parametrize("bad", [[], {"predicate": {"op": "nope", "attribute": "a"}},
                                 {"predicate": {"op": "eq"}}, {"predicate": {"op": "regex", "attribute": "a",
                                                                             "value": "("}}])
def test_bad_queries_raise(bad):
    with pytest.raises(QueryError):
        Query(bad)
