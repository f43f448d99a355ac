"""Full-text search on the dev server: SEARCH / SEARCH_RESP, SEARCH_SUB / SEARCH_UPDATE / SEARCH_UNSUB.

Like 2.2.0 (probed; see ``topgun.search``), search is **node-local**: a node searches the LWW
records of the partitions it owns, and a live search hears the writes this node applies as
owner. A cluster client asks every node and merges. Scoring is BM25 (k1 1.2, b 0.75, idf
``ln(1 + (N - n + 0.5) / (n + 0.5))``) over every string inside a value, lower-cased and split
on anything that is not a letter or digit (tantivy's default analyzer, no stemming), so scores
match the real server's on the same data. Query syntax: words are OR-ed; ``AND`` between words,
``+word`` and ``"a phrase"`` make words required (a phrase's word order is not checked),
``-word`` excludes. ``limit`` (default 10) and ``minScore`` apply; ``boost`` is ignored.
``matchedTerms`` are the query's words, the same for every hit, as on the server.

Differences: results carry the stored ``value`` (2.2.0 sends nil); a search is a scan of the
node's records (fine for development sizes, not for millions of documents); subscriptions end
with their connection and their ids are per connection; a live search is not told about
OR-map writes (a one-shot search does find OR-map keys, as on 2.2.0).

What it is given: the node's id, its live table (what it owns), its store, and
``interest_changed`` (so the writer publishes writes of maps with live searches).

Not here: applying writes (``writes.py``), LWW live queries (``subscriptions.py``).
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from topgun.protocol import codec

from .ormaps import entries_of
from .store import Store, Write
from .table import LiveTable
from .writes import BadFrame

if TYPE_CHECKING:
    from .connection import ClientConnection

__all__ = ["Search", "tokens", "parse_query"]

K1, B = 1.2, 0.75
DEFAULT_LIMIT = 10
_WORD = re.compile(r"[^\W_]+")
_QUERY_PART = re.compile(r'[+-]?"[^"]*"|\S+')


def tokens(text: str) -> List[str]:
    """Lower-cased runs of letters and digits, as tantivy's default tokenizer (tokens over 40 dropped)."""
    return [t.lower() for t in _WORD.findall(text) if len(t) <= 40]


def _strings(value: Any, out: List[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)


def doc_tokens(value: Any) -> List[str]:
    parts: List[str] = []
    _strings(value, parts)
    return tokens(" ".join(parts))


def parse_query(text: str) -> Tuple[List[str], List[str], List[str]]:
    """(should, must, must_not) terms of a query."""
    should: List[str] = []
    must: List[str] = []
    must_not: List[str] = []
    parts = _QUERY_PART.findall(text)
    for i, part in enumerate(parts):
        if part in ("AND", "OR"):
            continue
        sign = part[0] if part[0] in "+-" and len(part) > 1 else ""
        body = part[1:] if sign else part
        words = tokens(body.strip('"'))
        joined = (i > 0 and parts[i - 1] == "AND") or (i + 1 < len(parts) and parts[i + 1] == "AND")
        if sign == "-":
            must_not.extend(words)
        elif sign == "+" or joined or (body.startswith('"') and len(words) > 1):
            must.extend(words)
        else:
            should.extend(words)
    return should, must, must_not


def matched_terms(text: str) -> List[str]:
    """The query's words as 2.2.0 reports them: split on whitespace, trimmed, lower-cased."""
    out = []
    for word in text.split():
        start, end = 0, len(word)
        while start < end and not word[start].isalnum():
            start += 1
        while end > start and not word[end - 1].isalnum():
            end -= 1
        if start < end:
            out.append(word[start:end].lower())
    return out


class _Corpus:
    """BM25 statistics of one node's share of a map."""

    def __init__(self, docs: Dict[str, Tuple[Any, List[str]]]) -> None:
        self.docs = docs
        self.n = len(docs)
        self.avgdl = (sum(len(toks) for _, toks in docs.values()) / self.n) if self.n else 0.0
        self.df: Dict[str, int] = {}
        for _, toks in docs.values():
            for t in set(toks):
                self.df[t] = self.df.get(t, 0) + 1

    def score(self, key: str, query: Tuple[List[str], List[str], List[str]]) -> Optional[float]:
        doc = self.docs.get(key)
        if doc is None:
            return None
        should, must, must_not = query
        toks = doc[1]
        present = set(toks)
        if any(t in present for t in must_not) or not all(t in present for t in must):
            return None
        terms = set(should) | set(must)
        if not terms & present:
            return None
        dl = len(toks)
        total = 0.0
        for t in terms & present:
            n = self.df.get(t, 0)
            idf = math.log(1 + (self.n - n + 0.5) / (n + 0.5))
            tf = toks.count(t)
            total += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / self.avgdl))
        return total


class _Sub:
    __slots__ = ("conn", "sub_id", "map_name", "text", "query", "limit", "min_score", "current")

    def __init__(self, conn: "ClientConnection", sub_id: str, map_name: str, text: str,
                 options: Dict[str, Any]) -> None:
        self.conn, self.sub_id, self.map_name, self.text = conn, sub_id, map_name, text
        self.query = parse_query(text)
        self.limit = int(options.get("limit") or DEFAULT_LIMIT)
        self.min_score = float(options.get("minScore") or 0.0)
        self.current: Dict[str, float] = {}


class Search:
    """One node's full-text search over the partitions it owns, and its live searches."""

    def __init__(self, node_id: str, tables: LiveTable, store: Store, *,
                 interest_changed: Callable[[], None]) -> None:
        self.node_id = node_id
        self.tables = tables
        self.store = store
        self.interest_changed = interest_changed
        self.subs: Dict[Tuple[int, str], _Sub] = {}
        self.maps: Set[str] = set()   # maps with live searches; read by the subscriptions' interest

    def corpus(self, map_name: str) -> _Corpus:
        owners, me = self.tables.current.owners, self.node_id
        pids = [pid for pid, owner in enumerate(owners) if owner == me]
        docs = {k: (rec[1], doc_tokens(rec[1])) for k, rec in self.store.live_items(map_name, pids)}
        for key, entry in entries_of(self.store, map_name, pids).items():   # OR-map keys: all their values
            if entry["records"] and key not in docs:
                values = [r["value"] for r in entry["records"]]
                docs[key] = (values, doc_tokens(values))
        return _Corpus(docs)

    def run(self, map_name: str, text: str, options: Dict[str, Any]) -> List[Dict[str, Any]]:
        corpus = self.corpus(map_name)
        query = parse_query(text)
        limit = int(options.get("limit") or DEFAULT_LIMIT)
        min_score = float(options.get("minScore") or 0.0)
        terms = matched_terms(text)
        scored = []
        for key in corpus.docs:
            score = corpus.score(key, query)
            if score is not None and score >= min_score:
                scored.append((score, key))
        scored.sort(key=lambda sk: (-sk[0], sk[1]))
        return [{"key": k, "value": corpus.docs[k][0], "score": s, "matchedTerms": terms} for s, k in scored[:limit]]

    # -- client requests

    @staticmethod
    def _payload(d: Dict[str, Any], id_field: str) -> Tuple[str, str, str, Dict[str, Any]]:
        p = d.get("payload")
        if not isinstance(p, dict):
            raise BadFrame(f"{d.get('type')} needs a payload")
        rid, map_name, text, options = p.get(id_field), p.get("mapName"), p.get("query"), p.get("options") or {}
        if type(rid) is not str or type(map_name) is not str or type(text) is not str or type(options) is not dict:
            raise BadFrame(f"{d.get('type')} needs string {id_field}, mapName and query (options a map)")
        for name in ("limit", "minScore"):
            if options.get(name) is not None and type(options[name]) not in (int, float):
                raise BadFrame(f"options.{name} must be a number")
        return rid, map_name, text, options

    def on_search(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        rid, map_name, text, options = self._payload(d, "requestId")
        results = self.run(map_name, text, options)
        conn.send_wire({"type": "SEARCH_RESP", "payload": {"requestId": rid, "results": results,
                                                           "totalCount": len(results)}})

    def on_search_sub(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        sid, map_name, text, options = self._payload(d, "subscriptionId")
        sub = _Sub(conn, sid, map_name, text, options)
        results = self.run(map_name, text, options)
        sub.current = {r["key"]: r["score"] for r in results}
        self.subs[(conn.cid, sid)] = sub
        self._maps_changed()
        conn.send_wire({"type": "SEARCH_RESP", "payload": {"requestId": sid, "results": results,
                                                           "totalCount": len(results)}})

    def on_search_unsub(self, conn: "ClientConnection", d: Dict[str, Any]) -> None:
        p = d.get("payload")
        sid = p.get("subscriptionId") if isinstance(p, dict) else None
        if type(sid) is not str:
            raise BadFrame("SEARCH_UNSUB needs a string subscriptionId")
        if self.subs.pop((conn.cid, sid), None) is not None:
            self._maps_changed()

    def drop_connection(self, conn: "ClientConnection") -> None:
        gone = [k for k in self.subs if k[0] == conn.cid]
        for k in gone:
            del self.subs[k]
        if gone:
            self._maps_changed()

    def _maps_changed(self) -> None:
        self.maps.clear()
        self.maps.update(sub.map_name for sub in self.subs.values())
        self.interest_changed()

    # -- writes this node applied as owner

    def on_applied(self, changed: List[Tuple[Write, Any]]) -> None:
        """Re-score the written keys for every live search on their map (SEARCH_UPDATE)."""
        keys_by_map: Dict[str, List[str]] = {}
        for w, _old in changed:
            if w.map in self.maps:
                keys_by_map.setdefault(w.map, []).append(w.key)
        for map_name, keys in keys_by_map.items():
            corpus = self.corpus(map_name)
            for sub in [s for s in self.subs.values() if s.map_name == map_name]:
                terms = matched_terms(sub.text)
                for key in dict.fromkeys(keys):
                    score = corpus.score(key, sub.query)
                    if score is not None and score >= sub.min_score:
                        kind = "UPDATE" if key in sub.current else "ENTER"
                        sub.current[key] = score
                        self._send(sub, key, kind, score, terms, corpus.docs[key][0])
                    elif sub.current.pop(key, None) is not None:
                        self._send(sub, key, "LEAVE", 0.0, [], None)

    @staticmethod
    def _send(sub: _Sub, key: str, kind: str, score: float, terms: List[str], value: Any) -> None:
        if not sub.conn.closed:
            sub.conn.send_event(codec.encode_wire({"type": "SEARCH_UPDATE", "payload": {
                "subscriptionId": sub.sub_id, "key": key, "value": value, "score": score,
                "matchedTerms": terms, "changeType": kind}}))

    def __repr__(self) -> str:
        return f"<Search {self.node_id} live={len(self.subs)}>"
