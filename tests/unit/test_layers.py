"""The layer rules of STYLE.md section 1, checked by walking every module's ``ast``.

- protocol never imports sockets, clocks, greenlets or the layers above it;
- transport never imports the engine, the cluster or anything above them;
- the engine and the cluster never import the handles, the runtime or the client;
- nothing below ``client.py`` imports it (``testing``, ``cli``, ``loadtest``, ``contrib`` and the
  package's own lazy ``__init__`` may);
- the dev server imports only ``protocol``, ``clock``, ``config`` and ``errors`` of the rest of topgun;
- no import cycle among topgun's modules, counting imports made only for type checking
  (``if TYPE_CHECKING:``) and imports inside functions: one test for the client side, one for
  the server;
- no module but ``client.py`` touches a private attribute of ``TopGunClient``.

Imports are found anywhere in a module, so one hidden in a function body, a relative import
(``from ..transport import x``) or ``__import__("time")`` is caught as well. Each checker has
"catches" and "allows" cases, so a checker that cannot fail would show.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import pytest

import topgun.protocol

PROTOCOL_DIR = Path(topgun.protocol.__file__).resolve().parent
PACKAGE = "topgun.protocol"
FORBIDDEN = ("gevent", "socket", "time", "topgun.transport", "topgun.cluster")


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imported_modules(source: str, package: str = PACKAGE) -> Iterator[Tuple[int, str]]:
    """Every module name the source imports, absolute, with its line number."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            yield node.lineno, base
            for alias in node.names:  # "from topgun import transport" imports topgun.transport
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def violations(source: str, package: str = PACKAGE) -> List[str]:
    bad = []
    for lineno, name in imported_modules(source, package):
        for forbidden in FORBIDDEN:
            if name == forbidden or name.startswith(forbidden + "."):
                bad.append(f"line {lineno}: imports {name}")
    return bad


MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def test_the_protocol_package_is_found() -> None:
    assert {"messages.py", "codec.py", "hashing.py", "hlc.py", "correlate.py"} <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_protocol_module_imports_no_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source", [
    "import gevent",
    "import gevent.socket",
    "from gevent import sleep",
    "import socket",
    "import time as _t",
    "from time import monotonic",
    "from topgun.transport import connection",
    "from topgun import transport",
    "from ..transport.websocket import WebSocketTransport",
    "from .. import cluster",
    "from ..cluster.router import PartitionRouter",
    "def f():\n    import gevent.event\n",
    "mod = __import__('time')",
    "import importlib\nimportlib.import_module('socket')",
])
def test_the_checker_catches(source: str) -> None:
    assert violations(source), source


@pytest.mark.parametrize("source", [
    "import msgpack",
    "import struct, dataclasses, typing",
    "from ..errors import RemoteProtocolError",
    "from . import messages",
    "from .hlc import Timestamp",
    "import timeit",            # a prefix of a name is not the module
    "import socketserver_like",
])
def test_the_checker_allows(source: str) -> None:
    assert violations(source) == []


# -- the whole package: every module, its imports, the layer rules ---------------------------------

TOPGUN_DIR = PROTOCOL_DIR.parent
REPO_ROOT = TOPGUN_DIR.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


ALL_MODULES = {module_name(p): p for p in sorted(TOPGUN_DIR.rglob("*.py"))}


def _known(name: str, known: Iterable[str]) -> Optional[str]:
    """The longest prefix of ``name`` that is a known module (``a.b.Thing`` -> ``a.b``)."""
    known = set(known)
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def import_edges(source: str, package: str, known: Iterable[str]) -> Set[str]:
    """The known modules ``source`` imports, anywhere in it (TYPE_CHECKING blocks and functions too).

    ``from pkg import sub`` counts as importing ``pkg.sub`` only when ``sub`` is a module: by then
    the package itself is being initialised already, so that is no edge to ``pkg``.
    """
    known = set(known)
    out: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            names = subs if len(subs) == len(node.names) else subs + [base]
        for name in names:
            target = _known(name, known)
            if target is not None:
                out.add(target)
    return out


def import_graph(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    return {name: import_edges(path.read_text(encoding="utf-8"), package_of(path), ALL_MODULES) & set(modules)
            for name, path in modules.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as ``[a, b, ..., a]``, or [] if there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue  # "from . import x" inside x's own package __init__ is not a loop
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


# Who may import what, as (modules the rule is about, forbidden imports). A rule applies to a
# module and everything under it; names are prefixes ("topgun.engine" covers topgun.engine.*).
HANDLES_AND_UP = ("topgun.maps", "topgun.queries", "topgun.runtime", "topgun.client")
RULES: List[Tuple[str, Tuple[str, ...]]] = [
    ("topgun.transport", ("topgun.engine", "topgun.cluster", "topgun.retry") + HANDLES_AND_UP),
    ("topgun.engine", HANDLES_AND_UP),
    ("topgun.cluster", HANDLES_AND_UP),
    ("topgun.storage", HANDLES_AND_UP),
    ("topgun.retry", ("topgun.transport", "topgun.engine", "topgun.cluster") + HANDLES_AND_UP),
]
# Nothing below client.py imports it; these sit above it (or are its lazy public face).
ABOVE_CLIENT = ("topgun", "topgun.client", "topgun.testing", "topgun.cli", "topgun.loadtest", "topgun.contrib")
# The dev server uses only these of the rest of topgun.
SERVER_MAY_IMPORT = ("topgun.protocol", "topgun.clock", "topgun.config", "topgun.errors", "topgun.server")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(module: str, source: str, package: str) -> List[str]:
    bad = []
    imported = list(imported_modules(source, package))
    for lineno, name in imported:
        for scope, forbidden in RULES:
            if _under(module, scope) and any(_under(name, f) for f in forbidden):
                bad.append(f"line {lineno}: {module} imports {name}")
        if _under(name, "topgun.client") and not any(module == a or (a != "topgun" and _under(module, a))
                                                     for a in ABOVE_CLIENT):
            bad.append(f"line {lineno}: {module} is below the client but imports {name}")
        if (_under(module, "topgun.server") and _under(name, "topgun") and name != "topgun"
                and not any(_under(name, a) for a in SERVER_MAY_IMPORT)):
            bad.append(f"line {lineno}: the server module {module} imports {name}")
        if _under(module, "topgun.server") and name == "topgun":
            bad.append(f"line {lineno}: the server module {module} imports the topgun package")
    return bad


def test_every_topgun_module_is_found() -> None:
    assert {"topgun.client", "topgun.retry", "topgun.runtime", "topgun.engine.engine", "topgun.engine.requests",
            "topgun.cluster.provider", "topgun.server.node", "topgun.protocol.fastpath"} <= set(ALL_MODULES)


@pytest.mark.parametrize("name", sorted(ALL_MODULES), ids=str)
def test_module_keeps_to_its_layer(name: str) -> None:
    path = ALL_MODULES[name]
    assert layer_violations(name, path.read_text(encoding="utf-8"), package_of(path)) == []


@pytest.mark.parametrize("module, source", [
    ("topgun.transport.connection", "from ..engine import engine"),
    ("topgun.transport.connection", "from ..cluster.router import PartitionRouter"),
    ("topgun.transport.websocket", "def f():\n    from topgun.engine.provider import Listeners\n"),
    ("topgun.transport.connection", "import typing\nif typing.TYPE_CHECKING:\n    from ..client import X\n"),
    ("topgun.engine.engine", "from ..maps import MapHandle"),
    ("topgun.engine.engine", "from .. import runtime"),
    ("topgun.cluster.provider", "from ..queries import Subscription"),
    ("topgun.maps", "from .client import TopGunClient"),
    ("topgun.forking", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .client import TopGunClient\n"),
    ("topgun.queries", "import topgun.client"),
    ("topgun.server.node", "from topgun.engine.writes import PendingWrite"),
    ("topgun.server.node", "from topgun.transport import websocket"),
    ("topgun.server.node", "import topgun"),
    ("topgun.retry", "from .cluster.partition_map import LivePartitionMap"),
])
def test_the_layer_checker_catches(module: str, source: str) -> None:
    package = module if module == "topgun" else module.rsplit(".", 1)[0]
    assert layer_violations(module, source, package), source


@pytest.mark.parametrize("module, source", [
    ("topgun.transport.connection", "from ..protocol import codec, correlate\nfrom ..errors import ConnectionLost"),
    ("topgun.engine.engine", "from ..retry import backoff_delays\nfrom .writes import PendingWrite"),
    ("topgun.cluster.provider", "from ..engine.provider import ProviderListener"),
    ("topgun.maps", "from .runtime import Runtime\nfrom .queries import query_once"),
    ("topgun.client", "from .maps import MapHandle"),
    ("topgun", "def __getattr__(name):\n    from .client import TopGunClient\n"),
    ("topgun.cli.kv", "from ..client import TopGunClient"),
    ("topgun.testing.plugin", "from topgun.client import TopGunClient"),
    ("topgun.server.node", "from topgun.protocol import codec\nfrom topgun.clock import Clock\n"
                           "from topgun.config import ClusterConfig\nfrom .store import Store"),
    ("topgun.server.node", "import gevent\nimport msgpack"),
    ("topgun.engine.engine", "from ..clientside import x"),  # a prefix of a name is not the module
])
def test_the_layer_checker_allows(module: str, source: str) -> None:
    package = module if module == "topgun" else module.rsplit(".", 1)[0]
    assert layer_violations(module, source, package) == []


# -- import cycles -----------------------------------------------------------------------------

CLIENT_SIDE = {n: p for n, p in ALL_MODULES.items() if not _under(n, "topgun.server")}
SERVER_SIDE = {n: p for n, p in ALL_MODULES.items() if _under(n, "topgun.server")}


def test_no_import_cycle_on_the_client_side() -> None:
    assert find_cycle(import_graph(CLIENT_SIDE)) == []


def test_no_import_cycle_in_the_server() -> None:
    assert find_cycle(import_graph(SERVER_SIDE)) == []


def _graph_of(sources: Dict[str, str]) -> Dict[str, Set[str]]:
    known = set(sources)
    return {name: import_edges(src, name.rsplit(".", 1)[0] if not name.endswith("__init__") else name, known)
            & known for name, src in sources.items()}


@pytest.mark.parametrize("sources", [
    {"p.a": "from . import b", "p.b": "from .a import X"},
    {"p.a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n", "p.b": "import p.a"},
    {"p.a": "def f():\n    from .b import g\n", "p.b": "from .c import h", "p.c": "from p import a"},
])
def test_the_cycle_finder_catches(sources: Dict[str, str]) -> None:
    cycle = find_cycle(_graph_of(sources))
    assert cycle and cycle[0] == cycle[-1], cycle


@pytest.mark.parametrize("sources", [
    {"p.a": "from . import b", "p.b": "from . import c", "p.c": "import os"},
    {"p.a": "from .b import X\nfrom .c import Y", "p.b": "from .c import Z", "p.c": ""},
    {"p.a": "import p.ab", "p.ab": "import pa", "pa": "import p.abc"},  # prefixes of names are not modules
])
def test_the_cycle_finder_allows(sources: Dict[str, str]) -> None:
    assert find_cycle(_graph_of(sources)) == []


# -- nobody reaches into TopGunClient ----------------------------------------------------------

def _members(source: str, class_name: Optional[str] = None) -> Set[str]:
    """Methods and ``self.x`` attributes of the classes in ``source`` (only ``class_name`` if given)."""
    names: Set[str] = set()
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef) or (class_name is not None and cls.name != class_name):
            continue
        for node in ast.walk(cls):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
    return names


def client_private_names(source: str) -> Set[str]:
    """Private attributes and methods of ``class TopGunClient`` in ``source`` (dunders excluded)."""
    return {n for n in _members(source, "TopGunClient")
            if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}


def _names_a_client(node: ast.expr) -> bool:
    """``client``, ``self._client``, ``raw_client``, ``self.client`` ...: the receiver says it is a client."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "client" in name.lower()


def private_touches(source: str, private: Set[str]) -> List[str]:
    """Where ``source`` reads or writes one of ``private`` on something that may be a TopGunClient.

    That is: on a receiver named like a client, or on any receiver but ``self``/``cls`` when no
    class of ``source`` has a member of that name itself (a Connection's own ``_closed`` is its
    business). ``getattr(x, "_name")`` and its kin count as well.
    """
    own = _members(source)
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in private:
            receiver = node.value
            if _names_a_client(receiver) or (node.attr not in own and not (
                    isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"))):
                bad.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
            bad.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return bad


CLIENT_PRIVATE = client_private_names(ALL_MODULES["topgun.client"].read_text(encoding="utf-8"))


def test_the_client_has_private_members_to_protect() -> None:
    assert {"_runtime", "_closed", "_start_pending", "_connect", "_reset_in_child"} <= CLIENT_PRIVATE


@pytest.mark.parametrize("name", sorted(n for n in ALL_MODULES if n != "topgun.client"), ids=str)
def test_no_module_touches_a_private_attribute_of_the_client(name: str) -> None:
    assert private_touches(ALL_MODULES[name].read_text(encoding="utf-8"), CLIENT_PRIVATE) == []


@pytest.mark.parametrize("source", [
    "def f(client):\n    return client._runtime\n",
    "class MapHandle:\n    def get(self):\n        return self._client._runtime.engine\n",
    "if client is None or client._closed:\n    pass\n",
    "home = getattr(client, '_runtime', None)",
    "client._start_pending = True",
    "client._reset_in_child(hub)",
    "class T:\n    def __init__(self):\n        self._closed = False\n"
    "def f(owner_client):\n    return owner_client._closed\n",  # a member of its own, but on a client
    "def f(owner):\n    return owner._start_pending\n",         # no class here has one: whose else?
])
def test_the_private_checker_catches(source: str) -> None:
    assert private_touches(source, CLIENT_PRIVATE), source


@pytest.mark.parametrize("source", [
    "class Engine:\n    def close(self):\n        self._closed = True\n",  # its own attribute
    "if client is None or client.closed:\n    pass\n",
    "engine = client.runtime.engine",
    "sub._registry.forget(sub)",  # a private of another class, in its own module
    "getattr(client, 'cluster', None)",
    "class Transport:\n    def __init__(self):\n        self._closed = False\n"
    "    def send(self, peer):\n        return peer._closed\n",  # another instance of its own class
])
def test_the_private_checker_allows(source: str) -> None:
    assert private_touches(source, CLIENT_PRIVATE) == []


def test_the_private_names_come_from_the_class_body() -> None:
    source = ("class TopGunClient:\n    def __init__(self):\n        self._a, self.b = 1, 2\n"
              "    def _m(self):\n        pass\n    def __repr__(self):\n        return ''\n"
              "class Other:\n    def __init__(self):\n        self._other = 1\n")
    assert client_private_names(source) == {"_a", "_m"}
