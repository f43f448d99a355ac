"""``topgun server --host 0.0.0.0`` announces a URL a client can dial (issue 13, item 6).

A node listening on every interface used to put ``ws://0.0.0.0:PORT/ws`` in its READY line,
its partition maps and its peer links. Nothing is started here (tests listen on 127.0.0.1 only):
the announced URL is what ``Node.url`` gives before ``start()``.
"""
from __future__ import annotations

import socket

import pytest

from topgun.server import node as node_module
from topgun.server.node import Node, announced_host


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_wildcard_is_announced_as_the_hostname_when_it_resolves(monkeypatch: pytest.MonkeyPatch,
                                                                   wildcard: str) -> None:
    monkeypatch.setattr(node_module.socket, "gethostname", lambda: "devbox")
    monkeypatch.setattr(node_module.socket, "getaddrinfo", lambda name, port: [("ok",)])
    assert announced_host(wildcard) == "devbox"
    assert Node("n1", host=wildcard).url == "ws://devbox:0/ws"


def test_a_hostname_that_does_not_resolve_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def unresolvable(name: str, port: object) -> None:
        raise socket.gaierror("no such name")

    monkeypatch.setattr(node_module.socket, "gethostname", lambda: "nowhere.invalid")
    monkeypatch.setattr(node_module.socket, "getaddrinfo", unresolvable)
    assert Node("n1", host="0.0.0.0").url == "ws://127.0.0.1:0/ws"


def test_this_machine_announces_something_dialable() -> None:
    host = announced_host("0.0.0.0")
    assert host not in ("0.0.0.0", "::", "")
    socket.getaddrinfo(host, None)  # resolves here


@pytest.mark.parametrize("host, url", [("127.0.0.1", "ws://127.0.0.1:0/ws"), ("::1", "ws://[::1]:0/ws"),
                                       ("localhost", "ws://localhost:0/ws")])
def test_other_addresses_are_announced_as_they_are(host: str, url: str) -> None:
    assert Node("n1", host=host).url == url
