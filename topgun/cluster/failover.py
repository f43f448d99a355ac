"""Failover: one tenacity ``Retrying`` per operation that waits for a newer partition map.

An attempt that fails with a retryable error (``ConnectionLost``, ``NotOwnerError``, a
retryable ``ClusterUnavailable``) is tried again. Between attempts it backs off with full
jitter (``wait_random_exponential``), but wakes the moment a different partition map is
installed; if the error says routing is stale it first asks for a fresh map. It stops at the
deadline or after ``policy.max_attempts`` and re-raises the last real error (never
``tenacity.RetryError``). The deadline is checked with the injected clock, not tenacity's.

Not in here: choosing connections (the router), fetching maps (the caller's ``request_map``).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any, wait_random_exponential

from ..clock import Clock
from ..config import RetryPolicy
from ..engine.provider import StopAt
from .partition_map import LivePartitionMap

log = logging.getLogger(__name__)

__all__ = ["retrying"]


def retrying(pmap: LivePartitionMap, policy: RetryPolicy, clock: Clock, request_map: Callable[[], None], *,
             deadline: Optional[float] = None, max_attempts: Optional[int] = None,
             on_retry: Optional[Callable[[BaseException], None]] = None,
             give_up: Callable[[], bool] = lambda: False) -> Retrying:
    """Build the retry policy for one operation.

    Args:
        pmap: the live map; a newer map ends a back-off early.
        policy: attempts, back-off and the default deadline (``deadline_s`` from now).
        clock: the deadline is measured on it.
        request_map: called before sleeping when the error has ``stale_routing``.
        deadline: an absolute ``clock.monotonic()`` deadline, if earlier than the policy's.
        max_attempts: overrides ``policy.max_attempts`` when smaller.
        on_retry: called with the error before each new attempt (for counters).
        give_up: stop retrying when it returns True (e.g. the client is closing).
    """
    limit = clock.monotonic() + policy.deadline_s
    if deadline is not None:
        limit = min(limit, deadline)
    attempts = min(policy.max_attempts, max_attempts) if max_attempts else policy.max_attempts
    routed_version = pmap.version

    def before(state: RetryCallState) -> None:  # remember which map this attempt routes with
        nonlocal routed_version
        routed_version = pmap.version

    def sleep(seconds: float) -> None:  # back off, but wake as soon as a newer map lands
        pmap.wait_for_newer(routed_version, timeout=min(seconds, max(0.0, limit - clock.monotonic())))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if getattr(exc, "stale_routing", False):
            request_map()
        if on_retry is not None and exc is not None:
            on_retry(exc)
        log.debug("attempt %d failed (%s); retrying", state.attempt_number, exc)

    return Retrying(
        retry=retry_if_exception(lambda e: bool(getattr(e, "retryable", False)) and not give_up()),
        wait=wait_random_exponential(multiplier=policy.backoff_s, max=policy.max_backoff_s),
        stop=stop_any(stop_after_attempt(attempts), StopAt(clock, limit)),
        before=before, sleep=sleep, before_sleep=before_sleep, reraise=True)
