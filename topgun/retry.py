"""Retrying: back-off delays, the deadline stop, a versioned event, and the one ``retrying()``.

- :func:`backoff_delays` yields the jittered exponential delays between reconnect attempts
  (a :class:`~topgun.config.ReconnectPolicy`); the single-server provider, the seed discovery
  and the connection pool all use it.
- :class:`StopAt` is a tenacity stop at an absolute ``clock.monotonic()`` deadline, measured on
  the injected clock (tenacity's ``stop_after_delay`` reads its own, which a FakeClock cannot move).
- :class:`VersionedEvent` is "a version plus an Event swapped on change": ``bump()`` wakes every
  waiter of ``wait_for_change(since, timeout)``. It is the routing version of both providers and
  the change signal of :class:`~topgun.cluster.partition_map.LivePartitionMap`.
- :class:`AuthRefusals` counts refused tokens in a row, to decide when callers are told
  (``AuthError``) instead of kept waiting: at once for a fixed token, after ``AUTH_ATTEMPTS``
  refusals for a ``token=`` callable (which is asked again on each attempt).
- :func:`retrying` builds the retry policy (:class:`Retry`) for one operation, the same for both
  providers: the first attempt runs bare (no tenacity on the path of a call that succeeds);
  after a failure a tenacity ``Retrying`` takes over: retry errors with ``retryable``, back off with full jitter
  (``wait_random_exponential``) but wake the moment the routing view changes, ask for a fresh
  view first when the error has ``stale_routing``, stop at the deadline or after
  ``policy.max_attempts`` and re-raise the last real error (never ``tenacity.RetryError``).
  Each retried attempt is logged at DEBUG; the ``WARN_AFTER``-th of one operation at WARNING.

Not in here: choosing connections (the providers and the router), fetching partition maps (the
caller's ``request_refresh``), deciding what is retryable (the errors carry their flags).
"""
from __future__ import annotations

import logging
import random
from typing import Callable, Iterator, List, Optional, Protocol, TypeVar

from gevent.event import Event
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any, wait_random_exponential
from tenacity.stop import stop_base

from .clock import Clock
from .config import ReconnectPolicy, RetryPolicy

log = logging.getLogger(__name__)

__all__ = ["backoff_delays", "StopAt", "VersionedEvent", "Versioned", "Retry", "retrying", "AuthRefusals",
           "AUTH_ATTEMPTS", "WARN_AFTER", "warn_now"]

T = TypeVar("T")

#: Refused tokens in a row from a ``token=`` callable before callers get ``AuthError``.
AUTH_ATTEMPTS = 3
#: Failed attempts in a row (of one request, or of reconnecting) after which they log at WARNING.
WARN_AFTER = 5


def warn_now(failures: int) -> bool:
    """Whether the ``failures``-th failure in a row logs at WARNING: the ``WARN_AFTER``-th, then
    each time the count doubles (5, 10, 20, 40, ...), so an outage that lasts does not flood the log."""
    rounds, rest = divmod(failures, WARN_AFTER)
    return rest == 0 and rounds > 0 and rounds & (rounds - 1) == 0


def backoff_delays(policy: ReconnectPolicy, rng: Callable[[], float] = random.random) -> Iterator[float]:
    """Endless jittered exponential delays: initial, x multiplier, capped at max_s."""
    delay = policy.initial_s
    while True:
        yield delay * (1.0 - policy.jitter * rng())
        delay = min(policy.max_s, delay * policy.multiplier)


class StopAt(stop_base):
    """Tenacity stop: once ``clock`` reaches ``deadline`` (``stop_after_delay`` reads its own clock)."""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock, self.deadline = clock, deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock.monotonic() >= self.deadline


class Versioned(Protocol):
    """Anything routing depends on that says when it changed: a version and a way to wait for a new one."""

    @property
    def version(self) -> int: ...

    def wait_for_change(self, since: int, timeout: float) -> bool: ...


class VersionedEvent:
    """A version counter with an event to wait on; ``bump()`` wakes every waiter."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = Event()

    def bump(self) -> int:
        """Count one change and wake the waiters; returns the new version."""
        self.version += 1
        # A fresh Event per change: waiters of the old one wake, later waiters wait for the next.
        changed, self._changed = self._changed, Event()
        changed.set()
        return self.version

    def wait_for_change(self, since: int, timeout: float) -> bool:
        """Return True once ``version`` is not ``since`` (at once if it already is), False after ``timeout``."""
        if self.version != since:
            return True
        self._changed.wait(max(0.0, timeout))
        return self.version != since

    def __repr__(self) -> str:
        return f"<VersionedEvent v{self.version}>"


class AuthRefusals:
    """Refused tokens in a row, and whether callers should now be told (``persistent``).

    Args:
        limit: refusals in a row that make it persistent: 1 for a fixed token (it cannot
            change), ``AUTH_ATTEMPTS`` for a callable (a new token may be accepted).
    """

    def __init__(self, limit: int = 1) -> None:
        self.limit = max(1, limit)
        self.count = 0

    @staticmethod
    def for_token(token: object) -> "AuthRefusals":
        return AuthRefusals(AUTH_ATTEMPTS if callable(token) else 1)

    def refused(self) -> bool:
        """Count one refusal; True once the refusals are persistent."""
        self.count += 1
        return self.persistent

    @property
    def persistent(self) -> bool:
        return self.count >= self.limit

    def accepted(self) -> None:
        self.count = 0

    def __repr__(self) -> str:
        return f"<AuthRefusals {self.count}/{self.limit}>"


class Retry:
    """One operation's retry policy (what :func:`retrying` returns): call it with the attempt function.

    The first attempt runs bare: most succeed, and tenacity's loop costs about 20 us per call
    to build and run. Only a retryable failure builds the ``tenacity.Retrying``, whose first
    attempt re-raises that failure, so attempt numbers, back-off, stops and logging are those of
    one tenacity loop over every attempt.
    """

    __slots__ = ("_routing", "_policy", "_clock", "_refresh", "_limit", "_attempts", "_on_retry", "_give_up",
                 "_routed")

    def __init__(self, routing: Versioned, policy: RetryPolicy, clock: Clock, request_refresh: Callable[[], None],
                 limit: float, attempts: int, on_retry: Optional[Callable[[BaseException], None]],
                 give_up: Callable[[], bool]) -> None:
        self._routing, self._policy, self._clock, self._refresh = routing, policy, clock, request_refresh
        self._limit, self._attempts, self._on_retry, self._give_up = limit, attempts, on_retry, give_up
        self._routed = 0

    def _retryable(self, exc: BaseException) -> bool:
        return bool(getattr(exc, "retryable", False)) and not self._give_up()

    def __call__(self, fn: Callable[[], T]) -> T:
        self._routed = self._routing.version     # the view this attempt routes with
        try:
            return fn()
        except Exception as exc:
            if not self._retryable(exc):
                raise
            failed: List[BaseException] = [exc]

        def attempt() -> T:
            if failed:
                raise failed.pop()               # tenacity's attempt 1: the one that just failed
            return fn()
        return self._tenacity()(attempt)  # type: ignore[no-any-return]

    def _tenacity(self) -> Retrying:
        routing, clock, limit = self._routing, self._clock, self._limit

        def before(state: RetryCallState) -> None:  # remember which view this attempt routes with
            if state.attempt_number > 1:         # attempt 1 ran in __call__, which took its view
                self._routed = routing.version

        def sleep(seconds: float) -> None:  # back off, but wake as soon as the view changes
            routing.wait_for_change(self._routed, min(seconds, max(0.0, limit - clock.monotonic())))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if getattr(exc, "stale_routing", False):
                self._refresh()
            if self._on_retry is not None and exc is not None:
                self._on_retry(exc)
            if state.attempt_number == WARN_AFTER:
                log.warning("attempt %d of a request failed (%s); still retrying until its deadline",
                            state.attempt_number, type(exc).__name__)
            else:
                log.debug("attempt %d failed (%s); retrying", state.attempt_number, exc)

        policy = self._policy
        return Retrying(
            retry=retry_if_exception(self._retryable),
            wait=wait_random_exponential(multiplier=policy.backoff_s, max=policy.max_backoff_s),
            stop=stop_any(stop_after_attempt(self._attempts), StopAt(clock, limit)),
            before=before, sleep=sleep, before_sleep=before_sleep, reraise=True)


def retrying(routing: Versioned, policy: RetryPolicy, clock: Clock, request_refresh: Callable[[], None], *,
             deadline: Optional[float] = None, max_attempts: Optional[int] = None,
             on_retry: Optional[Callable[[BaseException], None]] = None,
             give_up: Callable[[], bool] = lambda: False) -> Retry:
    """Build the retry policy for one operation.

    Args:
        routing: the routing view (the live partition map, or a provider's routing version);
            a change ends a back-off early.
        policy: attempts, back-off and the default deadline (``deadline_s`` from now).
        clock: the deadline is measured on it.
        request_refresh: called before sleeping when the error has ``stale_routing``.
        deadline: an absolute ``clock.monotonic()`` deadline, if earlier than the policy's.
        max_attempts: overrides ``policy.max_attempts`` when smaller.
        on_retry: called with the error before each new attempt (for counters).
        give_up: stop retrying when it returns True (e.g. the client is closing).

    Returns:
        A :class:`Retry`; call it with the attempt function.
    """
    limit = clock.monotonic() + policy.deadline_s
    if deadline is not None:
        limit = min(limit, deadline)
    attempts = min(policy.max_attempts, max_attempts) if max_attempts else policy.max_attempts
    return Retry(routing, policy, clock, request_refresh, limit, attempts, on_retry, give_up)
