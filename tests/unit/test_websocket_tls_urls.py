"""wss:// URLs in the transport: default port 443, Host header, and a bad ssl_context refused before any IO."""
from __future__ import annotations

from typing import Any

import pytest

from topgun.errors import ConfigurationError
from topgun.transport.websocket import WebSocketTransport, _parse_url


class NoSockets:
    def create_connection(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("no connection may be attempted")


@pytest.mark.parametrize("url, expected", [
    ("wss://db.example.com/ws", (True, "db.example.com", 443, "db.example.com", "/ws")),
    ("wss://db.example.com:9443", (True, "db.example.com", 9443, "db.example.com:9443", "/")),
    ("ws://db.example.com/ws", (False, "db.example.com", 80, "db.example.com", "/ws")),
    ("wss://[::1]:9443/ws", (True, "::1", 9443, "[::1]:9443", "/ws")),
])
def test_wss_urls_parse_with_the_tls_default_port(url: str, expected: tuple) -> None:
    assert _parse_url(url) == expected


def test_a_bad_ssl_context_is_a_configuration_error_before_any_io() -> None:
    with pytest.raises(ConfigurationError, match="ssl_context"):
        WebSocketTransport.connect("wss://h/ws", 1.0, socket_module=NoSockets(),
                                   ssl_context="/etc/ssl/ca.pem")  # type: ignore[arg-type]
