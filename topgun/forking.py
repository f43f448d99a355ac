"""Clients across ``os.fork()`` (gunicorn ``--preload``, multiprocessing) and interpreter exit.

The contract: a client created before a fork keeps working in the parent, untouched. In the
child it shares nothing with the parent: at the fork (``os.register_at_fork(after_in_child=)``)
every socket it inherited is detached (the file descriptor is closed in the child only; the
parent's connection and its TCP stream are not affected, and no frame is ever sent on it),
its greenlets, engine and subscriptions are dropped, and the next call in the child starts a
fresh home and connects again, lazily. Subscriptions do not survive a fork (the parent keeps
them); open new ones in the child.

What happens to the inherited machinery depends on where it lived:

- On a loop thread (``thread_mode="loop"``): that thread does not exist in the child, so
  nothing can run its greenlets. They are kept referenced for ever (``_BURIED``), because
  collecting a suspended greenlet throws GreenletExit into it, and its ``finally`` blocks were
  written for a live connection.
- On the forking thread's own hub (``"direct"``): that hub lives on in the child, so a reaper
  greenlet is spawned at the fork; it closes the old engine (which fails the copied pending
  writes with ClientClosed) and kills its greenlets. The sockets are already detached, so
  nothing it does can reach the parent's streams.

The hook itself neither blocks nor switches greenlets: it runs inside ``os.fork()``, before
gevent has reinitialised its loop. If the process is not monkey-patched (so gevent's own fork
wrapper did not run) and the forking thread has a hub, the hook calls ``gevent.reinit()``.

At interpreter exit, loop-mode clients still open are closed (briefly), so their servers see a
clean WebSocket close rather than a reset.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, List

import gevent
from gevent import monkey
from gevent import socket as gsocket
from gevent._hub_local import get_hub_if_exists

from . import threads

if TYPE_CHECKING:
    from .client import TopGunClient

log = logging.getLogger(__name__)

__all__ = ["SocketTracker", "track", "forks_seen"]

# The real close(2): gevent (26+) patches os.close to defer through the hub's loop, which must
# not run inside a fork hook and may never run again for a loop thread's hub.
_close_fd: Any = monkey.get_original("os", "close")

_clients: "weakref.WeakSet[TopGunClient]" = weakref.WeakSet()
_BURIED: List[Any] = []
_installed = False
_install_lock = threading.Lock()
forks_seen = 0  # how many forks this process is a child of (for tests and logs)


class SocketTracker:
    """A ``socket_module`` for ``WebSocketTransport.connect`` that remembers the sockets it made."""

    def __init__(self) -> None:
        self._sockets: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def create_connection(self, address: Any, timeout: Any = None, source_address: Any = None) -> Any:
        sock = gsocket.create_connection(address, timeout, source_address)
        self._sockets.add(sock)
        return sock

    def adopt(self, sock: Any) -> None:
        """Remember a socket that replaced one of ours (a TLS socket wraps and detaches it)."""
        self._sockets.add(sock)

    def sever(self) -> List[int]:
        """Detach every open socket (the objects become unusable) and return their descriptors."""
        fds = []
        for sock in list(self._sockets):
            try:
                if sock.fileno() >= 0:
                    fds.append(sock.detach())
            except OSError:
                pass
        self._sockets = weakref.WeakSet()
        return fds

    def __len__(self) -> int:
        return sum(1 for s in list(self._sockets) if s.fileno() >= 0)


def track(client: "TopGunClient") -> None:
    """Reset ``client`` in forked children and close it at exit (installs the hooks once)."""
    global _installed
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            atexit.register(_close_at_exit)
            _installed = True
    _clients.add(client)


def _after_fork_in_child() -> None:
    global _install_lock, forks_seen
    _install_lock = threading.Lock()  # it was held by the forking thread; a fresh one is free
    forks_seen += 1
    forking_hub = get_hub_if_exists()
    for client in list(_clients):
        try:
            _reset_in_child(client, forking_hub)
        except Exception:  # never let one client break the fork of the whole process
            log.exception("resetting %r after fork failed", client)
    if forking_hub is not None and not monkey.is_module_patched("os"):
        gevent.reinit()


def _reset_in_child(client: "TopGunClient", forking_hub: Any) -> None:
    client._start_lock = threads.allocate_lock()  # the forking thread may have held it
    if client._closed or client._start_pending:
        return
    home, engine, group = client._home, client._engine, client._group
    subs = list(client._subs.values())
    client._subs = {}
    for sub in subs:
        sub.closed = True  # the parent keeps its subscriptions; these copies never deliver
    client._start_pending = True
    _BURIED.append((home, engine, group, client.cluster, subs))
    home_here = home is not None and home.mode == "direct" and home.hub is forking_hub
    if home_here:
        # Spawned before the sockets are detached, so the reaper runs before any reader
        # greenlet wakes up to a cancelled socket.
        _BURIED.append(gevent.spawn(_reap, engine, group))
    elif home is not None:
        home.abandon()
    # Closed now, with the real close(2): libev drops watchers whose descriptor went away
    # (EBADF when it re-arms them after the fork) and wakes their greenlets, which then fail
    # on the detached socket objects without reading a byte.
    _close_all(client._sockets.sever())


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        try:
            _close_fd(fd)
        except OSError:
            pass


def _reap(engine: Any, group: Any) -> None:
    try:
        group.kill(timeout=1.0)
        engine.close(timeout=1.0)
    except Exception:
        log.debug("closing the engine inherited from the parent failed", exc_info=True)


def _close_at_exit() -> None:
    for client in list(_clients):
        home = getattr(client, "_home", None)
        if home is not None and home.mode == "loop" and not client._closed and not client._start_pending:
            try:
                client.close()
            except Exception:
                log.debug("closing %r at exit failed", client, exc_info=True)
