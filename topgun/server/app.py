"""The WSGI app of a node on gevent-websocket: ``/ws`` and ``/`` for clients, ``/cluster`` for peers.

gevent-websocket performs the HTTP upgrade; the socket is then handed to a
:class:`~topgun.server.frames.FrameSocket` and run by one handler loop (the greenlet the
server spawned for the connection, in ``node.group``). Plain HTTP gets ``GET /health``
(``{"status":"ok"}``) and 404 otherwise.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List

from gevent import socket as gsocket
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.server import WebSocketServer

from .frames import MAX_CLIENT_FRAME, MAX_PEER_FRAME, FrameSocket

if TYPE_CHECKING:
    from .node import Node

__all__ = ["make_server"]

log = logging.getLogger(__name__)


class _QuietHandler(WebSocketHandler):
    def log_request(self) -> None:  # no access log for a dev server
        pass


def make_server(node: "Node") -> WebSocketServer:
    """A not-yet-started server for ``node`` on ``node.host:node.requested_port``."""
    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ws = environ.get("wsgi.websocket")
        path = environ.get("PATH_INFO", "")
        if ws is None:
            if path == "/health":
                body = json.dumps({"status": "ok", "nodeId": node.node_id,
                                   "mapVersion": node.table.version if node.table else 0}).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [body]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        handler = ws.handler
        sock = handler.socket
        try:
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        except OSError:
            pass
        peer = path == "/cluster"
        fs = FrameSocket(handler.rfile.read, sock, spawn=node.group.spawn,
                         max_size=MAX_PEER_FRAME if peer else MAX_CLIENT_FRAME,
                         name=f"{node.node_id}{path}")
        # We own the socket from here on: stop gevent-websocket from writing its own close frame.
        ws.closed = True
        try:
            if peer:
                node.membership.serve_incoming(fs)
            elif path in ("/", "/ws"):
                node.serve_client(fs)
        finally:
            fs.close(flush=True)
            fs._writer.join(timeout=1.0)
        return []

    tls: Dict[str, Any] = {}
    if node.certfile:
        from .tls import server_context
        tls["ssl_context"] = server_context(node.certfile, node.keyfile)
    server = WebSocketServer((node.host, node.requested_port), app, handler_class=_QuietHandler,
                             spawn=node.group, log=None, error_log=_ErrorLog(), **tls)
    return server


class _ErrorLog:
    """pywsgi's error log, sent to logging at DEBUG (clients that vanish are not errors here)."""

    def write(self, text: str) -> None:
        log.debug("wsgi: %s", text.rstrip())

    def writelines(self, lines: List[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass
