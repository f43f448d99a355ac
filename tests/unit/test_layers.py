"""The sans-IO rule: topgun/protocol never imports sockets, clocks, greenlets or the layers above it.

Walks the ``ast`` of every ``topgun/protocol/*.py``, so an import hidden in a function body, a
relative import (``from ..transport import x``) or ``__import__("time")`` is caught as well.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

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
