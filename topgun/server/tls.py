"""TLS for the dev server, so users' own tests can exercise ``wss://`` without a proxy.

``server_context(certfile, keyfile)`` is the listening side: a ``gevent.ssl`` context (its
``wrap_socket`` must return gevent's cooperative socket) for ``gevent.pywsgi``'s ``ssl_context=``.
A TLS node announces ``wss://`` in its URL, its partition maps and its CLUSTER_HELLO, so its
peers dial it with :func:`wrap_peer`, which encrypts the node-to-node link but does not verify
the peer's certificate: the ``/cluster`` endpoint authenticates no one anyway (see
``topgun.server``'s "not a production server"), and verifying would make every test pass a CA
to every node. The client side verifies as always.

Not in here: client certificates, certificate reloading, ALPN, anything for production.
"""
from __future__ import annotations

import ssl
from typing import Any, Optional

from gevent import ssl as gssl

__all__ = ["server_context", "wrap_peer"]

_peer_context: Optional[ssl.SSLContext] = None


def server_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """A server-side context with ``certfile`` (PEM chain) and ``keyfile`` (default: in certfile).

    Raises:
        OSError, ssl.SSLError: a file is missing or is not a matching certificate and key.
    """
    context = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def wrap_peer(sock: Any, host: str) -> Any:
    """Wrap a connected socket for a ``wss://`` peer link and finish the handshake."""
    global _peer_context
    if _peer_context is None:
        context = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False      # see the module docstring: links are unauthenticated
        context.verify_mode = ssl.CERT_NONE
        _peer_context = context
    return _peer_context.wrap_socket(sock, server_hostname=host)
