from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Iterator, List

import pytest

# An installed topgun registers the plugin itself (pytest11 entry point); registering it twice
# is an error, so only a plain source checkout (not pip-installed) loads it from here.
if not any(ep.value == "topgun.testing.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["topgun.testing.plugin"]


@pytest.fixture
def raw() -> Iterator[Callable[[str], Any]]:
    """``raw(url) -> RawClient`` (msgpack frames over a WebSocket, no client logic); closed after."""
    from topgun.server.rawclient import RawClient
    made: List[Any] = []

    def connect(url: str) -> Any:
        client = RawClient(url)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
