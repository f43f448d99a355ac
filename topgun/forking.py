"""Clients across ``os.fork()`` (gunicorn ``--preload``, multiprocessing) and interpreter exit.

The contract: a client created before a fork keeps working in the parent, untouched. In the
child it shares nothing with the parent: at the fork (``os.register_at_fork(after_in_child=)``)
every socket it inherited is detached (the file descriptor is closed in the child only; the
parent's connection and its TCP stream are not affected, and no frame is ever sent on it),
its greenlets, engine and subscriptions are dropped, and the next call in the child starts a
fresh home and connects again, lazily. Subscriptions do not survive a fork (the parent keeps
them); open new ones in the child.

This module keeps the hook registry and the helpers; what to drop is the client's business:
``track(owner, on_fork=..., at_exit=...)`` registers two callables (held weakly, as bound
methods of a live owner), and the client's ``on_fork`` drops its runtime whole with
:func:`bury`, :func:`reap` and :func:`close_fds`. What happens to the inherited machinery
depends on where it lived:

- On a loop thread (``thread_mode="loop"``): that thread does not exist in the child, so
  nothing can run its greenlets. They are kept referenced for ever (:func:`bury`), because
  collecting a suspended greenlet throws GreenletExit into it, and its ``finally`` blocks were
  written for a live connection.
- On the forking thread's own hub (``"direct"``): that hub lives on in the child, so a reaper
  greenlet is spawned at the fork (:func:`reap`); it closes the old runtime (which fails the
  copied pending writes with ClientClosed) and kills its greenlets. The sockets are already
  detached, so nothing it does can reach the parent's streams.

The hook itself neither blocks nor switches greenlets: it runs inside ``os.fork()``, before
gevent has reinitialised its loop. If the process is not monkey-patched (so gevent's own fork
wrapper did not run) and the forking thread has a hub, the hook calls ``gevent.reinit()``.

At interpreter exit, loop-mode clients still open are closed (briefly), so their servers see a
clean WebSocket close rather than a reset.

Not in here: what a client holds or how it restarts (``topgun.client``), threads (``topgun.threads``).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Callable, List, Tuple

import gevent
from gevent import monkey
from gevent import socket as gsocket
from gevent._hub_local import get_hub_if_exists

log = logging.getLogger(__name__)

__all__ = ["SocketTracker", "track", "bury", "reap", "close_fds", "forks_seen"]

# The real close(2): gevent (26+) patches os.close to defer through the hub's loop, which must
# not run inside a fork hook and may never run again for a loop thread's hub.
_close_fd: Any = monkey.get_original("os", "close")

# owner -> the functions of its two hooks (unbound: held weakly through the owner alone; a
# WeakMethod per hook would run its own weakref callback, which fails noisily ("Exception ignored
# in WeakMethod._cb") when an owner is collected during interpreter shutdown).
_Hooks = Tuple[Callable[[Any, Any], None], Callable[[Any], None]]
_hooks: "weakref.WeakKeyDictionary[Any, _Hooks]" = weakref.WeakKeyDictionary()
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


def track(owner: Any, *, on_fork: Callable[[Any], None], at_exit: Callable[[], None]) -> None:
    """Call ``on_fork(forking_hub)`` in forked children and ``at_exit()`` at interpreter exit.

    Both must be bound methods of ``owner``; they are held weakly, so tracking keeps nothing
    alive. ``on_fork`` runs inside ``os.fork()``: it must neither block nor switch greenlets.
    The hooks are installed once per process.
    """
    global _installed
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            atexit.register(_close_at_exit)
            _installed = True
    if getattr(on_fork, "__self__", None) is not owner or getattr(at_exit, "__self__", None) is not owner:
        raise TypeError("track(): on_fork and at_exit must be bound methods of owner")
    _hooks[owner] = (on_fork.__func__, at_exit.__func__)  # type: ignore[attr-defined]


def bury(*things: Any) -> None:
    """Keep ``things`` referenced for ever (greenlets that must never be collected; see above)."""
    _BURIED.append(things)


def reap(close: Callable[[], None]) -> None:
    """Run ``close()`` in a greenlet of the forking thread's hub, as soon as it runs (errors logged)."""
    def run() -> None:
        try:
            close()
        except Exception:
            log.debug("closing what was inherited from the parent failed", exc_info=True)
    _BURIED.append(gevent.spawn(run))


def close_fds(fds: List[int]) -> None:
    """Close descriptors with the real close(2).

    libev drops watchers whose descriptor went away (EBADF when it re-arms them after the fork)
    and wakes their greenlets, which then fail on the detached socket objects without reading a byte.
    """
    for fd in fds:
        try:
            _close_fd(fd)
        except OSError:
            pass


def _after_fork_in_child() -> None:
    global _install_lock, forks_seen
    _install_lock = threading.Lock()  # it was held by the forking thread; a fresh one is free
    forks_seen += 1
    forking_hub = get_hub_if_exists()
    for owner, (on_fork, _) in list(_hooks.items()):
        try:
            on_fork(owner, forking_hub)
        except Exception:  # never let one client break the fork of the whole process
            log.exception("resetting %r after fork failed", owner)
    if forking_hub is not None and not monkey.is_module_patched("os"):
        gevent.reinit()


def _close_at_exit() -> None:
    for owner, (_, at_exit) in list(_hooks.items()):
        try:
            at_exit(owner)
        except Exception:
            log.debug("closing %r at exit failed", owner, exc_info=True)
