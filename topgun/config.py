"""Frozen configuration objects.

Keyword arguments of :class:`topgun.TopGunClient` map onto these, so a misspelt option is a
``TypeError`` and a bad value a :class:`~topgun.errors.ConfigurationError`. Make variants
with ``dataclasses.replace``.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .protocol.fastpath import WRITE_CONCERNS
from .storage import parse_storage

__all__ = ["RetryPolicy", "ReconnectPolicy", "ClusterConfig", "ClientConfig", "check_url", "check_timeout",
           "WRITE_CONCERNS"]

TokenSource = Union[None, str, Callable[[], Optional[str]]]
# Announced endpoint -> URL to dial: a dict keyed by node id, announced URL or "host:port",
# or a callable(node_id, announced) -> URL. See topgun.cluster.endpoints.
EndpointMap = Union[None, Mapping[str, str], Callable[[str, str], str]]


def check_url(url: object, what: str = "url") -> str:
    """Validate a ws:// or wss:// URL and return it unchanged."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{what} must be a non-empty ws:// URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigurationError(f"{what} must look like ws://host:port[/ws], got {url!r}")
    try:
        parts.port
    except ValueError:
        raise ConfigurationError(f"{what} has a bad port: {url!r}") from None
    return url


def _positive(name: str, value: float) -> None:
    # NaN compares false with everything, so "value <= 0" alone would let it through.
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or value != value
            or value <= 0 or value == float("inf")):
        raise ConfigurationError(f"{name} must be a positive, finite number, got {value!r}")


def check_timeout(timeout: object, what: str = "timeout") -> None:
    """A per-call ``timeout=``: None (the default) or a positive, finite number of seconds.

    Raises:
        ConfigurationError: 0, a negative number, NaN, infinity, a bool or a str.
    """
    if timeout is not None:
        _positive(what, timeout)  # type: ignore[arg-type]


def _count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How failover retries one operation."""

    max_attempts: int = 50
    backoff_s: float = 0.02
    max_backoff_s: float = 0.5
    deadline_s: float = 10.0

    def __post_init__(self) -> None:
        _count("max_attempts", self.max_attempts)
        for name in ("backoff_s", "max_backoff_s", "deadline_s"):
            _positive(name, getattr(self, name))


@dataclass(frozen=True)
class ReconnectPolicy:
    """Jittered exponential back-off between reconnect attempts; never gives up."""

    initial_s: float = 0.05
    max_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        _positive("initial_s", self.initial_s)
        _positive("max_s", self.max_s)
        if self.multiplier < 1.0:
            raise ConfigurationError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"jitter must be within 0..1, got {self.jitter!r}")


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster mode: where to start and how to route."""

    seeds: Sequence[str] = ()
    connections_per_node: int = 2
    smart_routing: bool = True
    partition_map_refresh_interval: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_map_nodes: int = 1000  # a partition map listing more nodes is refused
    endpoint_map: EndpointMap = None

    def __post_init__(self) -> None:
        seeds = self.seeds
        if isinstance(seeds, str):
            seeds = [seeds]
        seeds = tuple(seeds)
        if not seeds:
            raise ConfigurationError("ClusterConfig needs at least one seed URL")
        for s in seeds:
            check_url(s, "seed")
        object.__setattr__(self, "seeds", seeds)
        _count("connections_per_node", self.connections_per_node)
        _count("max_map_nodes", self.max_map_nodes)
        _positive("partition_map_refresh_interval", self.partition_map_refresh_interval)
        if isinstance(self.endpoint_map, Mapping):
            for announced, url in self.endpoint_map.items():
                if not isinstance(announced, str) or not announced:
                    raise ConfigurationError(f"endpoint_map keys must be non-empty strings, got {announced!r}")
                check_url(url, f"endpoint_map[{announced!r}]")
            object.__setattr__(self, "endpoint_map", dict(self.endpoint_map))
        elif self.endpoint_map is not None and not callable(self.endpoint_map):
            raise ConfigurationError("endpoint_map= must be a dict, a callable(node_id, announced) -> url, or None")


@dataclass(frozen=True)
class ClientConfig:
    """Everything a TopGunClient needs, in either mode."""

    url: Optional[str] = None
    cluster: Optional[ClusterConfig] = None
    token: TokenSource = None
    request_timeout: float = 10.0
    connect_timeout: float = 5.0
    write_concern: Optional[str] = None  # None: APPLIED for one server, REPLICATED for a cluster
    batch_size: int = 500
    max_in_flight: int = 2000
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    # None: the cluster's ClusterConfig.retry in cluster mode, RetryPolicy() for one server
    retry: Optional[RetryPolicy] = None
    node_id: Optional[str] = None
    ssl_context: Optional[ssl.SSLContext] = None  # for wss://; None: verify with the system trust store
    # None/"memory": nothing survives the process; a path, "sqlite:///path" or SQLiteStorage(): a durable outbox
    storage: Any = None
    metrics: Optional[Any] = None  # a topgun.metrics.Metrics sink (count/observe/gauge); None: nothing measured

    def __post_init__(self) -> None:
        if (self.url is None) == (self.cluster is None):
            raise ConfigurationError("give exactly one of url= or cluster=")
        if self.url is not None:
            check_url(self.url)
        if self.cluster is not None and not isinstance(self.cluster, ClusterConfig):
            raise ConfigurationError("cluster= must be a topgun.ClusterConfig")
        _positive("request_timeout", self.request_timeout)
        _positive("connect_timeout", self.connect_timeout)
        if self.retry is not None:
            if not isinstance(self.retry, RetryPolicy):
                raise ConfigurationError("retry= must be a topgun.RetryPolicy")
            if self.cluster is not None and self.cluster.retry not in (RetryPolicy(), self.retry):
                raise ConfigurationError("give the retry policy once: retry= or ClusterConfig(retry=), not both")
        if self.write_concern is not None and self.write_concern not in WRITE_CONCERNS:
            raise ConfigurationError(
                f"write_concern must be one of {', '.join(WRITE_CONCERNS)}, got {self.write_concern!r}")
        for name in ("batch_size", "max_in_flight"):
            _count(name, getattr(self, name))
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise ConfigurationError(f"ssl_context= must be an ssl.SSLContext, got {type(self.ssl_context).__name__}")
        if self.metrics is not None and not all(callable(getattr(self.metrics, name, None))
                                                for name in ("count", "observe", "gauge")):
            raise ConfigurationError("metrics= must have count(), observe() and gauge() methods "
                                     "(see topgun.metrics.Metrics), got " + type(self.metrics).__name__)
        if not (self.token is None or isinstance(self.token, str) or callable(self.token)):
            raise ConfigurationError("token= must be a str, a callable returning one, or None")
        object.__setattr__(self, "storage", parse_storage(self.storage))

    def __repr__(self) -> str:
        # Never the token itself: configs end up in logs, tracebacks and bug reports.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token" and value is not None:
                shown.append("token=<callable>" if callable(value) else "token='<redacted>'")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"ClientConfig({', '.join(shown)})"

    @property
    def effective_write_concern(self) -> str:
        if self.write_concern is not None:
            return self.write_concern
        return "REPLICATED" if self.cluster is not None else "APPLIED"

    @property
    def effective_retry(self) -> RetryPolicy:
        """The failover policy of requests, in either mode."""
        if self.retry is not None:
            return self.retry
        return self.cluster.retry if self.cluster is not None else RetryPolicy()

    @property
    def endpoints(self) -> Tuple[str, ...]:
        return (self.url,) if self.url else tuple(self.cluster.seeds)  # type: ignore[union-attr]
