"""RequestRunner: one request (a read, a query, a map request) on the right connection, retried until its deadline.

``call(fn, key=..., timeout=...)`` runs ``fn(conn, remaining_seconds)`` on the connection the
provider picks for ``key`` (any connection without a key), and looks the connection up again on
every attempt, so a retry follows the newest routing. Retries are the provider's
``retrying(deadline)`` (:func:`topgun.retry.retrying` in both providers): retryable errors are
tried again, with back-off that ends early when routing changes, until the deadline. A
deadline that passes without a usable answer raises ``OperationTimeout``; so does a transport
error on the last attempt (the caller asked for an answer by then, not for a connection). Either
way the last connection error is named in the message and chained (``__cause__``; a token
callable's own exception, if that was it), as the write engine does for writes. Each call is
counted and timed through ``metrics=`` (:mod:`topgun.metrics`) with its ``op``.

Not in here: writes (``engine.py``: they are queued, batched and tracked per ack, never run
as requests), the retry policy (``topgun.retry``), choosing connections (the provider).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from ..clock import Clock
from ..errors import ClientClosed, TransportError, timed_out
from ..metrics import Metrics
from ..protocol import messages as m
from ..transport.connection import Connection
from .provider import ConnectionProvider

log = logging.getLogger(__name__)

__all__ = ["RequestRunner"]


class RequestRunner:
    """Runs requests over a provider's connections with failover retries."""

    def __init__(self, provider: ConnectionProvider, *, clock: Clock, request_timeout: float = 10.0,
                 metrics: Optional[Metrics] = None) -> None:
        self.provider = provider
        self.metrics = metrics
        self.clock = clock
        self.request_timeout = request_timeout
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Refuse new requests (ClientClosed); requests under way end with their connections."""
        self._closed = True

    def call(self, fn: Callable[[Connection, float], Any], *, key: Optional[str] = None,
             timeout: Optional[float] = None, op: str = "request") -> Any:
        """Run ``fn(conn, remaining_seconds)`` on the right connection, retrying until the deadline.

        Args:
            fn: one attempt; raises a retryable TopGunError to be tried again.
            key: route to this key's owner (None: any connection).
            timeout: seconds (default: ``request_timeout``).
            op: what the request is, for metrics (``get``, ``query``, a message type).

        Returns:
            What ``fn`` returned.

        Raises:
            ClientClosed: the runner is closed.
            OperationTimeout: the deadline passed without a usable answer.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        timeout = self.request_timeout if timeout is None else timeout
        deadline = self.clock.monotonic() + timeout
        provider = self.provider

        def attempt() -> Any:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:  # the last back-off ran into the deadline: say what kept us waiting
                raise timed_out(f"no answer within {timeout:.3g}s", self._cause())
            conn = provider.connection_for_key(key) if key is not None else provider.any_connection()
            return fn(conn, remaining)

        metrics = self.metrics
        if metrics is None:
            return self._run(attempt, deadline, timeout)
        start = self.clock.monotonic()
        outcome = "ok"
        try:
            return self._run(attempt, deadline, timeout)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            metrics.observe("topgun.request.duration", self.clock.monotonic() - start, op=op)
            metrics.count("topgun.requests", 1, op=op, outcome=outcome)

    def _run(self, attempt: Callable[[], Any], deadline: float, timeout: float) -> Any:
        try:
            return self.provider.retrying(deadline)(attempt)
        except TransportError as exc:
            raise timed_out(f"no answer within {timeout:.3g}s", self._cause() or exc)

    def _cause(self) -> Optional[BaseException]:
        # The same rule as the write engine's: the provider's last error, while nothing is open.
        return None if self.provider.open_connections() else self.provider.last_error

    def request(self, msg: m.Message, *, key: Optional[str] = None, timeout: Optional[float] = None) -> m.Message:
        """Send ``msg`` and return its reply (see :meth:`call`)."""
        return self.call(lambda conn, remaining: conn.request(msg, remaining), key=key,  # type: ignore[no-any-return]
                         timeout=timeout, op=msg.TYPE)

    def __repr__(self) -> str:
        return f"<RequestRunner {'closed' if self._closed else 'open'} timeout={self.request_timeout:.3g}s>"
