"""The WSGI app of a node on gevent-websocket: ``/ws`` and ``/`` for clients, ``/cluster`` for peers.

gevent-websocket performs the HTTP upgrade; the socket is then handed to a
:class:`~topgun.server.frames.FrameSocket` and run by one handler loop (the greenlet the
server spawned for the connection, in the node's group). Plain HTTP gets ``GET /health``
(``{"status":"ok", ...}``) and 404 otherwise; so does an upgrade to any other path.

The first HTTP request on a socket (for a WebSocket, the upgrade request) must have all its
headers in within ``upgrade_timeout`` seconds of the TCP accept, or the socket is closed:
partial headers never hold a socket. (Later requests on a kept-alive plain HTTP socket are not
timed; clients use ``/health`` once.)

What it is given: where to listen, the node's greenlet group, ``serve_client(fs)`` and
``serve_peer(fs)`` (run one upgraded socket until it closes) and ``health()`` (the JSON body).

Not here: anything about the messages on those sockets.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional

import gevent
from gevent import socket as gsocket
from gevent.pool import Pool
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.server import WebSocketServer

from .frames import MAX_CLIENT_FRAME, MAX_PEER_FRAME, FrameSocket, OutboundBudget, direct_reader

__all__ = ["make_server"]

log = logging.getLogger(__name__)


UPGRADE_TIMEOUT_S = 10.0
_WEBSOCKET_PATHS = ("/ws", "/", "/cluster")


class _QuietHandler(WebSocketHandler):
    """gevent-websocket's handler, with no access log and a deadline on the request headers."""

    answered = False        # the request line and headers are in

    def read_request(self, raw_requestline: Any) -> Any:
        result = super().read_request(raw_requestline)
        self.answered = True
        return result

    def handle(self) -> None:
        # A loop timer, not a greenlet: it costs nothing per connection once the request is in.
        timer = gevent.get_hub().loop.timer(self.server.upgrade_timeout)
        timer.start(self._overdue)
        try:
            super().handle()
        finally:
            timer.close()

    def _overdue(self) -> None:
        # Runs in the hub: only non-blocking calls. The handler's read then sees EOF and ends.
        sock = getattr(self, "socket", None)
        if not self.answered and sock is not None:
            log.debug("closing %s: no complete HTTP request in %.1f s", self.client_address,
                      self.server.upgrade_timeout)
            try:
                sock.shutdown(gsocket.SHUT_RDWR)
            except OSError:
                pass

    def upgrade_connection(self) -> Any:
        # An upgrade to any other path is answered 404, before the upgrade, as the TopGun
        # 2.2.0 server does: a client then learns its path is wrong instead of seeing a
        # WebSocket that opens and closes at once.
        if self.environ.get("PATH_INFO", "") not in _WEBSOCKET_PATHS:
            self.start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the TopGun WebSocket is at /ws\n"]
        return super().upgrade_connection()

    def log_request(self) -> None:  # no access log for a dev server
        pass


Serve = Callable[[FrameSocket], None]


def make_server(name: str, host: str, port: int, group: Pool, *, serve_client: Serve, serve_peer: Serve,
                health: Callable[[], Dict[str, Any]], upgrade_timeout: float = UPGRADE_TIMEOUT_S,
                client_budget: Optional[OutboundBudget] = None,
                ssl_context: Optional[Any] = None) -> WebSocketServer:
    """A not-yet-started server on ``host:port`` whose greenlets all go into ``group``.

    ``client_budget``: the budget every client socket's queued bytes count against.
    ``ssl_context``: serve ``wss://`` with it (see ``tls.py``).
    """
    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ws = environ.get("wsgi.websocket")
        path = environ.get("PATH_INFO", "")
        if ws is None:
            if path == "/health":
                body = json.dumps(health()).encode()
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
        fs = FrameSocket(direct_reader(handler.rfile, sock), sock, spawn=group.spawn,
                         max_size=MAX_PEER_FRAME if peer else MAX_CLIENT_FRAME, name=f"{name}{path}",
                         budget=None if peer else client_budget)
        # We own the socket from here on: stop gevent-websocket from writing its own close frame.
        ws.closed = True
        try:
            if peer:
                serve_peer(fs)
            elif path in ("/", "/ws"):
                serve_client(fs)
        finally:
            fs.close(flush=True)
            fs._writer.join(timeout=1.0)
        return []

    tls: Dict[str, Any] = {} if ssl_context is None else {"ssl_context": ssl_context}
    server = WebSocketServer((host, port), app, handler_class=_QuietHandler,
                             spawn=group, log=None, error_log=_ErrorLog(), **tls)
    server.upgrade_timeout = upgrade_timeout
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
