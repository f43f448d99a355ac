"""A Locust user whose ``client`` is a TopGunClient, with every call reported to Locust's statistics.

Install the extra (``pip install topgun[locust]``) and write a locustfile::

    from locust import task
    from topgun.contrib.locust import TopGunUser

    class Writer(TopGunUser):
        @task
        def write(self):
            self.client.map("users").set(f"user:{self.user_index}", {"name": "Ada"})

    # locust -f locustfile.py --headless -u 50 -r 50 -t 30s --host ws://127.0.0.1:8080

Each map call (``set``, ``get``, ``remove``, ``put_all``, ``query``) and ``ping`` fires Locust's
``request`` event with ``request_type`` the method name, ``name`` the map name (or an explicit
``name=``), the call's latency in ms, and the error if it raised. A failed call is reported
and then returns ``None`` (``put_all`` returns 0), as Locust's own clients do; set
``raise_errors = True`` on the user class to let errors propagate instead.

``host`` is one ``ws://`` URL (single-server mode), or several separated by commas, or set
``cluster = True``: then the client runs in cluster mode with those URLs as seeds. By default
all users of one Locust process share one TopGunClient (``shared_client = True``), as an
application would; its writes from many users are batched into OP_BATCH frames. Set
``shared_client = False`` for one client (and connection) per user. ``client_options`` is
passed to TopGunClient (``write_concern``, ``request_timeout``, ...).

This module imports ``locust``, which monkey-patches the process with gevent on import:
import it only in locustfiles, never in code that runs unpatched.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, ClassVar, Dict, Iterable, Mapping, Optional, Tuple, Union

from locust import User, events

from ..client import TopGunClient
from ..clock import GeventClock
from ..config import ClusterConfig

log = logging.getLogger(__name__)

__all__ = ["TopGunUser", "LocustMap", "LocustTopGunClient", "REQUEST_TYPES"]

REQUEST_TYPES = ("set", "get", "remove", "put_all", "query", "ping")

_clock = GeventClock()
_shared: Dict[Tuple[Any, ...], TopGunClient] = {}
_user_ids = itertools.count()


class LocustTopGunClient:
    """Wraps a TopGunClient: ``map(name)`` gives a :class:`LocustMap`; ``raw`` is the client itself."""

    def __init__(self, client: TopGunClient, fire: Callable[..., None], raise_errors: bool = False) -> None:
        self.raw = client
        self._fire = fire
        self._raise = raise_errors

    def map(self, name: str) -> "LocustMap":
        return LocustMap(self.raw.map(name), self)

    def ping(self, *, name: str = "ping") -> Optional[float]:
        return self._measure("ping", name, self.raw.ping, 0)

    def _measure(self, request_type: str, name: str, call: Callable[[], Any], length: int,
                 failed_value: Any = None) -> Any:
        start = _clock.monotonic()
        try:
            result = call()
        except Exception as exc:
            self._fire(request_type=request_type, name=name, response_time=(_clock.monotonic() - start) * 1000.0,
                       response_length=length, exception=exc, context={})
            if self._raise:
                raise
            return failed_value
        self._fire(request_type=request_type, name=name, response_time=(_clock.monotonic() - start) * 1000.0,
                   response_length=length, exception=None, context={})
        return result

    def __repr__(self) -> str:
        return f"<LocustTopGunClient {self.raw!r}>"


class LocustMap:
    """The map operations of :class:`topgun.maps.MapHandle`, each one timed and reported."""

    def __init__(self, handle: Any, owner: LocustTopGunClient) -> None:
        self.handle = handle
        self._owner = owner
        self.name = handle.name

    def set(self, key: str, value: Any, *, name: Optional[str] = None, **kw: Any) -> None:
        self._owner._measure("set", name or self.name, lambda: self.handle.set(key, value, **kw), 1)

    put = set

    def get(self, key: str, default: Any = None, *, name: Optional[str] = None, **kw: Any) -> Any:
        return self._owner._measure("get", name or self.name, lambda: self.handle.get(key, default, **kw), 1,
                                    failed_value=default)

    def remove(self, key: str, *, name: Optional[str] = None, **kw: Any) -> None:
        self._owner._measure("remove", name or self.name, lambda: self.handle.remove(key, **kw), 1)

    delete = remove

    def put_all(self, items: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], *, name: Optional[str] = None,
                **kw: Any) -> int:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        return self._owner._measure("put_all", name or self.name, lambda: self.handle.put_all(pairs, **kw),
                                    len(pairs), failed_value=0)  # type: ignore[no-any-return]

    def query(self, *, name: Optional[str] = None, **kw: Any) -> Any:
        return self._owner._measure("query", name or self.name, lambda: self.handle.query(**kw), 1, failed_value=[])

    def __repr__(self) -> str:
        return f"<LocustMap {self.name}>"


class TopGunUser(User):
    """A Locust user with ``self.client``: a :class:`LocustTopGunClient` over a TopGunClient.

    Class attributes: ``cluster`` (seeds mode), ``shared_client`` (one client per process),
    ``client_options`` (TopGunClient keywords), ``raise_errors``. ``self.user_index`` numbers
    the users of this process from 0, handy for giving each its own keys.
    """

    abstract = True
    cluster: ClassVar[bool] = False
    shared_client: ClassVar[bool] = True
    raise_errors: ClassVar[bool] = False
    client_options: ClassVar[Dict[str, Any]] = {}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise ValueError("TopGunUser needs a host: --host ws://127.0.0.1:8080 (or seeds, comma-separated)")
        self.user_index = next(_user_ids)
        self._own_client: Optional[TopGunClient] = None
        raw = self._shared_client() if self.shared_client else self._new_client()
        if not self.shared_client:
            self._own_client = raw
        self.client = LocustTopGunClient(raw, environment.events.request.fire, self.raise_errors)

    def _new_client(self) -> TopGunClient:
        urls = [u.strip() for u in str(self.host).split(",") if u.strip()]
        options = dict(self.client_options)
        if self.cluster or len(urls) > 1:
            return TopGunClient(cluster=ClusterConfig(seeds=urls), **options)
        return TopGunClient(urls[0], **options)

    def _shared_client(self) -> TopGunClient:
        key = (self.host, self.cluster, tuple(sorted(self.client_options.items())))
        client = _shared.get(key)
        if client is None or client.closed:
            client = _shared[key] = self._new_client()
        return client

    def on_stop(self) -> None:
        if self._own_client is not None:
            self._own_client.close()


@events.quitting.add_listener
def _close_shared_clients(environment: Any, **kw: Any) -> None:
    for client in list(_shared.values()):
        client.close()
    _shared.clear()
