"""Live-query evaluation: ``where``, the ``predicate`` tree, ``sort`` (first key), ``limit``, ``fields``.

Semantics follow the 2.2.0 server (WIRE.md section 7): ``where`` is exact equality on top-level
fields of map values; ``predicate`` takes precedence over ``where``; attributes name fields
inside the value (``_key`` is not the record key); non-map values never match a field test;
an empty query matches every value. Booleans never equal numbers (Rust's value types differ).

Not here: subscriptions and delivery (``subscriptions.py``), and ``cursor``/``groupBy``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = ["Query", "QueryError", "MAX_RESULTS"]

MAX_RESULTS = 10_000
_MISSING = object()
Match = Callable[[Any], bool]


class QueryError(ValueError):
    """The query object cannot be evaluated (bad operator or shape)."""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _cmp(a: Any, b: Any) -> Optional[int]:
    if (_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str)):
        return (a > b) - (a < b)
    return None


def _like(pattern: str) -> "re.Pattern[str]":
    # SQL LIKE as 2.2.0 does it: % any run, _ one character, case-insensitive.
    parts = {"%": ".*", "_": "."}
    return re.compile("".join(parts.get(ch) or re.escape(ch) for ch in pattern), re.DOTALL | re.IGNORECASE)


def _field(attr: str) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        if not isinstance(value, dict):
            return _MISSING
        return value.get(attr, _MISSING)
    return get


def compile_predicate(node: Any) -> Match:
    """Turn a PredicateNode dict into ``match(value) -> bool``.

    Raises:
        QueryError: unknown ``op`` or a malformed node.
    """
    if not isinstance(node, dict) or not isinstance(node.get("op"), str):
        raise QueryError("predicate node must be a map with a string 'op'")
    op = node["op"]
    if op in ("and", "or", "not"):
        children = [compile_predicate(c) for c in node.get("children") or ()]
        if op == "and":
            return lambda v: all(c(v) for c in children)
        if op == "or":
            return lambda v: any(c(v) for c in children)
        if not children:
            raise QueryError("'not' needs one child")
        first = children[0]
        return lambda v: not first(v)
    attr = node.get("attribute")
    if not isinstance(attr, str):
        raise QueryError(f"'{op}' needs a string 'attribute'")
    get = _field(attr)
    want = node.get("value")

    def on_map(test: Callable[[Any], bool]) -> Match:
        def match(value: Any) -> bool:
            if not isinstance(value, dict):
                return False
            return test(value.get(attr, _MISSING))
        return match

    if op == "eq":
        return on_map(lambda x: x is not _MISSING and _eq(x, want))
    if op == "neq":
        return on_map(lambda x: x is not _MISSING and not _eq(x, want))
    if op in ("gt", "gte", "lt", "lte"):
        ok = {"gt": (1,), "gte": (0, 1), "lt": (-1,), "lte": (-1, 0)}[op]
        return on_map(lambda x: _cmp(x, want) in ok)
    if op == "between":
        lo, hi = _bounds(want)
        return on_map(lambda x: _cmp(x, lo) in (0, 1) and _cmp(x, hi) in (-1, 0))
    if op == "like":
        rx = _like(str(want))
        return on_map(lambda x: isinstance(x, str) and rx.fullmatch(x) is not None)
    if op == "regex":
        try:
            rx2 = re.compile(str(want))
        except re.error as exc:
            raise QueryError(f"bad regex: {exc}") from exc
        return on_map(lambda x: isinstance(x, str) and rx2.search(x) is not None)
    if op == "in":
        options = list(want) if isinstance(want, (list, tuple)) else []
        return on_map(lambda x: x is not _MISSING and any(_eq(x, o) for o in options))
    if op == "isNull":  # 2.2.0: a missing field, a null, and a value that is not a map all count
        return lambda v: get(v) in (_MISSING, None)
    if op == "isNotNull":
        return lambda v: isinstance(v, dict) and get(v) not in (_MISSING, None)
    if op in ("containsAll", "containsAny"):
        wanted = list(want) if isinstance(want, (list, tuple)) else [want]
        combine = all if op == "containsAll" else any
        return on_map(lambda x: isinstance(x, list) and combine(any(_eq(i, w) for i in x) for w in wanted))
    if op == "startsWith":
        return on_map(lambda x: isinstance(x, str) and isinstance(want, str) and x.startswith(want))
    if op == "endsWith":
        return on_map(lambda x: isinstance(x, str) and isinstance(want, str) and x.endswith(want))
    raise QueryError(f"unknown predicate op {op!r}")


def _bounds(want: Any) -> Tuple[Any, Any]:
    # Only [low, high] (inclusive); any other shape matches nothing, as on 2.2.0.
    if isinstance(want, (list, tuple)) and len(want) == 2:
        return want[0], want[1]
    return _MISSING, _MISSING


def _sort_key(attr: str) -> Callable[[Tuple[str, Any]], Tuple[int, Any]]:
    def key(item: Tuple[str, Any]) -> Tuple[int, Any]:
        v = item[1].get(attr, _MISSING) if isinstance(item[1], dict) else _MISSING
        if _num(v):
            return (0, v)
        if isinstance(v, str):
            return (1, v)
        if isinstance(v, bool):
            return (2, v)
        return (3, 0) if v is None else (4, 0)  # null before missing; both last in ascending order
    return key


class Query:
    """A compiled QUERY_SUB: ``match(value)``, ``project(value)`` and ``run(items)``.

    Raises:
        QueryError: from the constructor, when the query cannot be compiled.
    """

    def __init__(self, query: Any, fields: Optional[Sequence[str]] = None) -> None:
        if query is None:
            query = {}
        if not isinstance(query, dict):
            raise QueryError("query must be a map")
        self.raw = query
        predicate = query.get("predicate")
        where = query.get("where")
        if predicate is not None:
            self.match: Match = compile_predicate(predicate)
        elif where:
            if not isinstance(where, dict):
                raise QueryError("'where' must be a map")
            items = list(where.items())
            self.match = lambda v: isinstance(v, dict) and all(
                k in v and _eq(v[k], w) for k, w in items)
        else:
            self.match = lambda v: True
        sort = query.get("sort")
        self.sort: Optional[Tuple[str, bool]] = None
        if isinstance(sort, dict) and sort:
            attr, direction = next(iter(sort.items()))
            self.sort = (str(attr), str(direction).lower() == "desc")
        limit = query.get("limit")
        self.limit = int(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None
        self.fields = list(fields) if fields else None

    def project(self, value: Any) -> Any:
        if self.fields is None or not isinstance(value, dict):
            return value
        return {f: value[f] for f in self.fields if f in value}

    def run(self, items: List[Tuple[str, Any, Any]]) -> Tuple[List[Tuple[str, Any, Any]], bool]:
        """Filter, sort and limit ``(key, value, ts)`` items; returns (results, has_more)."""
        match = self.match
        hits = [it for it in items if match(it[1])]
        if self.sort is not None:
            attr, desc = self.sort
            key = _sort_key(attr)
            hits.sort(key=lambda it: key((it[0], it[1])), reverse=desc)
        has_more = False
        if self.limit is not None:
            hits = hits[:self.limit]
        elif len(hits) > MAX_RESULTS:
            hits, has_more = hits[:MAX_RESULTS], True
        return hits, has_more

    def __repr__(self) -> str:
        return f"<Query {self.raw!r} fields={self.fields}>"
