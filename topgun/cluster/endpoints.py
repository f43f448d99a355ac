"""Which URL to dial for a node the partition map announces.

A TopGun node announces ``endpoints.websocket`` as it sees itself (``ws://<--host>:<port>``,
WIRE.md 10.2). Behind a TLS proxy that is not where a client can reach it, so
:class:`EndpointResolver` turns each announced endpoint into the URL to dial, in this order:

1. ``ClusterConfig.endpoint_map`` as a callable: ``endpoint_map(node_id, announced)`` returns
   the URL (a result that is not a ws:// or wss:// URL is logged and ignored).
2. ``endpoint_map`` as a dict, looked up by node id, then by the announced string as given,
   then by its ``host:port``: ``{"ws://10.0.0.5:8080": "wss://n1.example.com/ws"}``.
3. The scheme of the seeds: when any seed is ``wss://``, an announced ``ws://`` endpoint is
   dialled as ``wss://`` on the same host, port and path (never fall back to plain text after
   the user asked for TLS), and a scheme-less ``host:port`` gets the seeds' scheme.

Not in here: validating the map, connecting, or deciding which nodes to connect to.
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Set
from urllib.parse import urlsplit

from ..config import ClusterConfig, check_url
from ..errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["EndpointResolver"]


class EndpointResolver:
    """Maps announced node endpoints to dialable URLs, as ``ClusterConfig`` says."""

    def __init__(self, config: ClusterConfig) -> None:
        self._map = config.endpoint_map
        self._tls = any(urlsplit(s).scheme == "wss" for s in config.seeds)
        self._warned: Set[str] = set()

    def resolve(self, node_id: str, announced: str) -> str:
        """The URL to dial for ``node_id``, which the map lists at ``announced``."""
        mapped = self._mapped(node_id, announced)
        if mapped is not None:
            return mapped
        scheme, sep, rest = announced.partition("://")
        if not sep:  # plain host:port (a proxy's view of the node): the seeds' scheme
            return f"{'wss' if self._tls else 'ws'}://{announced}"
        if self._tls and scheme == "ws":
            upgraded = f"wss://{rest}"
            if announced not in self._warned:
                self._warned.add(announced)
                log.info("node %s announces %s; dialling %s because the seeds use TLS "
                         "(map it with ClusterConfig(endpoint_map=...) if a proxy listens elsewhere)",
                         node_id, announced, upgraded)
            return upgraded
        return announced

    def resolve_all(self, wanted: Mapping[str, str]) -> Dict[str, str]:
        """``{node_id: announced}`` -> ``{node_id: url to dial}``."""
        return {node_id: self.resolve(node_id, url) for node_id, url in wanted.items()}

    def __repr__(self) -> str:
        kind = "none" if self._map is None else "callable" if callable(self._map) else f"dict({len(self._map)})"
        return f"<EndpointResolver map={kind} seeds={'wss' if self._tls else 'ws'}>"

    def _mapped(self, node_id: str, announced: str) -> Optional[str]:
        table = self._map
        if table is None:
            return None
        if callable(table):
            url = table(node_id, announced)
            try:
                return check_url(url, f"endpoint_map({node_id!r}, {announced!r})")
            except ConfigurationError as exc:
                log.error("%s; using the announced endpoint", exc)
                return None
        for key in (node_id, announced, _host_port(announced)):
            if key and key in table:
                return table[key]
        return None


def _host_port(announced: str) -> str:
    parts = urlsplit(announced if "://" in announced else f"//{announced}")
    try:
        port = parts.port
    except ValueError:
        return ""
    if not parts.hostname or port is None:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"
