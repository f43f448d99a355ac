"""Server-side observations on an EmbeddedCluster: which node received which op from a client."""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, DefaultDict, Dict, List, Optional, Tuple

Arrival = Tuple[str, str, Any, int]   # (map name, key, value, arrival number) of one op from a client
_arrival_numbers = itertools.count()


def record_arrivals(nodes: Any,
                    into: Optional[DefaultDict[str, List[Arrival]]] = None) -> DefaultDict[str, List[Arrival]]:
    """Record, per node id, every op that node received from a client (server-side view).

    Wraps each node's ``_write`` (the dev server's single entry for CLIENT_OP and OP_BATCH).
    """
    arrivals: DefaultDict[str, List[Arrival]] = into if into is not None else defaultdict(list)
    for node in nodes:
        original = node._write

        def _write(conn: Any, ops: Any, batch_wc: Any, last_id: Any, _node: Any = node, _orig: Any = original) -> Any:
            for op in ops:
                if isinstance(op, dict):
                    arrivals[_node.node_id].append(
                        (op.get("mapName"), op.get("key"), (op.get("record") or {}).get("value"),
                         next(_arrival_numbers)))
            return _orig(conn, ops, batch_wc, last_id)

        node._write = _write
    return arrivals


def where_arrived(arrivals: Dict[str, List[Arrival]], map_name: str) -> DefaultDict[str, set]:
    """key -> set of node ids that received it from a client."""
    out: DefaultDict[str, set] = defaultdict(set)
    for node_id, ops in arrivals.items():
        for mp, key, _value, _n in ops:
            if mp == map_name:
                out[key].add(node_id)
    return out


def arrival_order(arrivals: Dict[str, List[Arrival]], map_name: str, key: str) -> List[Any]:
    """Values of ``key`` in the order the cluster received them, across all nodes."""
    ops = sorted((n, value) for node_ops in arrivals.values() for mp, k, value, n in node_ops
                 if mp == map_name and k == key)
    return [value for _n, value in ops]
