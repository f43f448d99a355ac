"""MapHandle: the operations on one named map. Builds wire ops; the engine does the IO.

Writes are last-writer-wins records stamped with the client's HLC. ``set`` returns once the
server acknowledged the write; ``set_async`` returns an ``AsyncResult`` at once. Keys must
be ``str`` and values must be msgpack-encodable (dict, list, str, bytes, int, float, bool,
None); anything else raises ``ConfigurationError`` before it is queued.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import gevent
from gevent.event import AsyncResult

from . import threads
from .errors import ConfigurationError, LocalProtocolError
from .protocol import codec
from .protocol import messages as m
from .queries import Change, Subscription, build_query
from .sync.reads import MISSING, point_read

if TYPE_CHECKING:
    from .client import TopGunClient

__all__ = ["MapHandle"]

_MAX_VALUE_BYTES = codec.MAX_FRAME_BYTES - 4096
_YIELD_EVERY = 500  # put_all lets other greenlets run after this many entries (no hub held > 0.1 s)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ConfigurationError(f"map keys must be str, got {type(key).__name__}: {key!r}")
    return key


def _check_value(value: Any) -> None:
    try:
        size = len(codec.encode_wire(value))
    except LocalProtocolError as exc:
        raise ConfigurationError(f"value cannot be stored: {exc}") from None
    if size > _MAX_VALUE_BYTES:
        raise ConfigurationError(f"value is {size} bytes encoded; the limit is {_MAX_VALUE_BYTES}")


class MapHandle:
    """A named map. Obtain it with ``client.map(name)``."""

    def __init__(self, client: "TopGunClient", name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"map names must be non-empty str, got {name!r}")
        self._client = client
        self.name = name

    @property
    def _engine(self) -> Any:  # looked up per call: a forked child replaces the client's engine
        return self._client._engine

    # ------------------------------------------------------------------ writes

    def _put_op(self, key: str, value: Any, ttl: Optional[float]) -> Dict[str, Any]:
        _check_key(key)
        _check_value(value)
        record: Dict[str, Any] = {"value": value, "timestamp": self._client._hlc.now().to_wire()}
        if ttl is not None:
            if ttl <= 0:
                raise ConfigurationError(f"ttl must be positive seconds, got {ttl!r}")
            record["ttlMs"] = int(ttl * 1000)
        return {"mapName": self.name, "key": key, "opType": "PUT", "record": record}

    def _remove_op(self, key: str) -> Dict[str, Any]:
        _check_key(key)
        return {"mapName": self.name, "key": key, "opType": "REMOVE",
                "record": {"value": None, "timestamp": self._client._hlc.now().to_wire()}}

    @threads.blocking()
    def set(self, key: str, value: Any, *, ttl: Optional[float] = None, timeout: Optional[float] = None) -> None:
        """Store ``value`` under ``key`` and wait for the server's acknowledgement.

        Raises:
            ConfigurationError: bad key or value.
            OperationTimeout: not acknowledged within ``timeout`` (default: request_timeout).
        """
        self._engine.wait([self._engine.submit(self._put_op(key, value, ttl), timeout)])

    put = set

    @threads.blocking()
    def set_async(self, key: str, value: Any, *, ttl: Optional[float] = None,
                  timeout: Optional[float] = None) -> AsyncResult:
        """Queue a write; the returned AsyncResult completes on acknowledgement."""
        return self._engine.submit(self._put_op(key, value, ttl), timeout).result

    @threads.blocking()
    def remove(self, key: str, *, timeout: Optional[float] = None) -> None:
        """Delete ``key`` and wait for the acknowledgement."""
        self._engine.wait([self._engine.submit(self._remove_op(key), timeout)])

    delete = remove

    @threads.blocking()
    def remove_async(self, key: str, *, timeout: Optional[float] = None) -> AsyncResult:
        return self._engine.submit(self._remove_op(key), timeout).result

    @threads.blocking()
    def put_all(self, items: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], *,
                timeout: Optional[float] = None) -> int:
        """Write many entries (sent as OP_BATCH frames); returns how many were acknowledged."""
        pairs = items.items() if isinstance(items, Mapping) else items
        ops = []
        for k, v in pairs:  # every value is checked before any is queued
            ops.append(self._put_op(k, v, None))
            if len(ops) % _YIELD_EVERY == 0:
                gevent.sleep(0)  # encoding 10,000 values takes longer than the hub may be held
        writes = []
        for i in range(0, len(ops), _YIELD_EVERY):
            writes += self._engine.submit_many(ops[i:i + _YIELD_EVERY], timeout)
            gevent.sleep(0)  # and the flusher starts sending the first batches meanwhile
        self._engine.wait(writes)
        return len(writes)

    # ------------------------------------------------------------------ reads

    @threads.blocking()
    def get(self, key: str, default: Any = None, *, timeout: Optional[float] = None) -> Any:
        """The value the server holds for ``key``, or ``default``."""
        _check_key(key)
        value = self._engine.call(lambda conn, remaining: point_read(conn, self.name, key, remaining),
                                  key=key, timeout=timeout)
        return default if value is MISSING else value

    def __contains__(self, key: str) -> bool:
        return self.get(key, MISSING) is not MISSING

    @threads.blocking()
    def query(self, *, where: Optional[Dict[str, Any]] = None, predicate: Optional[Dict[str, Any]] = None,
              sort: Optional[Dict[str, str]] = None, limit: Optional[int] = None,
              fields: Optional[List[str]] = None, timeout: Optional[float] = None) -> List[Tuple[str, Any]]:
        """A one-shot query: (key, value) pairs in the server's order."""
        return self._client._query_once(self.name, build_query(where, predicate, sort, limit), fields, timeout)

    @threads.blocking()
    def entries(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Every entry of the map, as a dict."""
        return dict(self.query(timeout=timeout))

    def items(self) -> List[Tuple[str, Any]]:
        return list(self.entries().items())

    def keys(self) -> List[str]:
        return list(self.entries())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.entries())

    # ------------------------------------------------------------------ live

    @threads.blocking()
    def subscribe(self, on_change: Optional[Callable[[Change], None]] = None, *,
                  where: Optional[Dict[str, Any]] = None, predicate: Optional[Dict[str, Any]] = None,
                  sort: Optional[Dict[str, str]] = None, limit: Optional[int] = None,
                  fields: Optional[List[str]] = None, timeout: Optional[float] = None) -> Subscription:
        """A live query over this map. Other clients' writes arrive as :class:`Change` objects.

        With ``on_change`` they are passed to it (on the client's reader greenlet: keep it
        quick); without, iterate the subscription or call ``.get(timeout)``. ``.results``
        holds the current matching entries. Close it with ``.close()`` or a ``with`` block.
        """
        query = build_query(where, predicate, sort, limit)
        return self._client._subscribe(self.name, query, fields, on_change, timeout)

    watch = subscribe

    def __repr__(self) -> str:
        return f"<MapHandle {self.name}>"
