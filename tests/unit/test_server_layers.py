"""Layer rules of the dev server (``topgun/server``), checked on the ``ast`` of every module.

* No import cycle among the server's modules, counting imports made only for type checking
  (``if TYPE_CHECKING:``) and imports inside functions: each component gets what it uses from
  ``node.py`` and none of them imports ``node.py`` back.
* From the rest of ``topgun`` the server imports only ``protocol``, ``clock``, ``config`` and
  ``errors``: never the client stack.
* A write travels between nodes as a nine-element msgpack array, exactly as the list form did
  before :class:`~topgun.server.store.Write` became a named tuple.

``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``; the implicit import of a parent package (``pkg/__init__``) is not an edge, since it
is always initialised before its submodules and would make every re-export look like a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import msgpack
import pytest

import topgun.server
from topgun.server.store import Store, Write

SERVER_DIR = Path(topgun.server.__file__).resolve().parent
PACKAGE = "topgun.server"
ALLOWED_OUTSIDE = ("topgun.protocol", "topgun.clock", "topgun.config", "topgun.errors")


def _module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


MODULES: Dict[str, Path] = {_module_name(p): p for p in sorted(SERVER_DIR.glob("*.py"))}


def _absolute(module: Optional[str], level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(source: str, package: str, known: Set[str]) -> Iterator[Tuple[int, str]]:
    """Every module the source imports (anywhere: top level, functions, TYPE_CHECKING blocks)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in known else base


def server_graph(modules: Dict[str, str]) -> Dict[str, Set[str]]:
    """module -> the server modules it imports, from {module name: source}."""
    known = set(modules)
    graph: Dict[str, Set[str]] = {}
    for name, source in modules.items():
        package = name if name == PACKAGE else name.rsplit(".", 1)[0]
        graph[name] = {target for _line, target in imports_of(source, package, known)
                       if target in known and target != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: Dict[str, int] = {}          # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _sources() -> Dict[str, str]:
    return {name: path.read_text(encoding="utf-8") for name, path in MODULES.items()}


def test_the_server_modules_are_found() -> None:
    assert {"topgun.server.node", "topgun.server.writes", "topgun.server.membership",
            "topgun.server.rebalance", "topgun.server.subscriptions", "topgun.server.sync"} <= set(MODULES)


def test_no_import_cycle_among_server_modules() -> None:
    assert find_cycle(server_graph(_sources())) is None


def test_no_component_imports_the_node() -> None:
    graph = server_graph(_sources())
    importers = sorted(m for m, targets in graph.items() if "topgun.server.node" in targets)
    # Only what runs nodes may import node.py: the package itself, the in-process cluster, the CLI.
    assert importers == ["topgun.server", "topgun.server.__main__", "topgun.server.cluster"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_server_imports_only_protocol_clock_config_errors_from_topgun(name: str) -> None:
    source = MODULES[name].read_text(encoding="utf-8")
    package = name if name == PACKAGE else name.rsplit(".", 1)[0]
    bad = [f"line {line}: {target}" for line, target in imports_of(source, package, set(MODULES))
           if (target == "topgun" or target.startswith("topgun."))
           and not target.startswith(PACKAGE)
           and not any(target == ok or target.startswith(ok + ".") for ok in ALLOWED_OUTSIDE)]
    assert bad == []


# -- the checker itself can fail

def test_a_type_checking_import_cycle_is_found() -> None:
    sources = {
        "topgun.server.a": "from .b import B\n",
        "topgun.server.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        "topgun.server.c": "def f():\n    from . import a\n",
    }
    assert find_cycle(server_graph(sources)) == ["topgun.server.a", "topgun.server.b", "topgun.server.a"]
    del sources["topgun.server.b"]
    assert find_cycle(server_graph(sources)) is None


def test_an_import_of_the_client_stack_is_caught() -> None:
    source = "def f():\n    from topgun.transport.websocket import WebSocketTransport\n"
    found = [t for _l, t in imports_of(source, PACKAGE, set(MODULES))]
    assert found == ["topgun.transport.websocket"]
    assert not any(found[0].startswith(ok) for ok in ALLOWED_OUTSIDE)


# -- the node-to-node shape of a write

def test_a_write_packs_exactly_like_the_nine_slot_list() -> None:
    w = Write(17, "users", "u:1", 1_700_000_000_000, 3, "client-A", {"name": "Ada"}, None, True)
    as_list = [17, "users", "u:1", 1_700_000_000_000, 3, "client-A", {"name": "Ada"}, None, True]
    assert msgpack.packb(w, use_bin_type=True) == msgpack.packb(as_list, use_bin_type=True)
    message = {"type": "CLUSTER_REPLICATE", "writes": [w, w._replace(live=False, value=None)]}
    decoded = msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)
    assert decoded["writes"][0] == as_list
    assert Write._make(decoded["writes"][1]) == w._replace(live=False, value=None)


def test_writes_received_as_arrays_merge_like_named_ones() -> None:
    sender = Store()
    sender.apply(5, "m", "k", (10, 0, "a"), "v", None, True)
    wire = msgpack.unpackb(msgpack.packb(sender.snapshot(5), use_bin_type=True), raw=False)
    receiver = Store()
    receiver.apply_writes(wire)
    assert receiver.get(5, "m", "k") == sender.get(5, "m", "k") == ((10, 0, "a"), "v", None, True)
