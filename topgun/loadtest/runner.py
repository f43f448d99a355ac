"""Runner: a ``gevent.pool.Pool`` of simulated users calling one task for a fixed duration.

The contract:

- ``Runner(task, users=50, duration=60)``: each user is a greenlet that calls ``task(user)``
  back to back (or paced, see :mod:`topgun.loadtest.pacing`) until the duration is over. A
  call that returns counts ``ops_per_call`` acknowledged ops and its latency; a call that
  raises counts them as failed, by exception type. Calls running at the end are allowed to
  finish (they count), up to ``stop_grace`` seconds; then the stragglers are killed.
- ``at(offset, action, name)`` schedules a chaos action (kill a node, add one) during the
  run; what it returned or raised goes into ``events``. An action still running when the
  load ends may finish (up to ``stop_grace``) before ``run()`` returns.
- ``mark(name)`` starts a recovery measurement: each user's recovery time is how long after
  the mark its first call *started after the mark* was acknowledged. A kill is followed by
  a mark, so this measures how long until every user is writing again.
- ``on_tick(elapsed, interval_figures)`` is called every ``tick`` seconds (live progress).

The runner never monkey-patches and never reads time except through the :class:`Clock` it is
given. Nothing here knows about TopGun: the scenarios supply the task and the actions.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import gevent
from gevent.pool import Group, Pool

from ..clock import Clock, GeventClock
from ..errors import ConfigurationError
from .pacing import Pacing, no_wait
from .stats import LatencyHistogram, Stats

log = logging.getLogger(__name__)

__all__ = ["Runner", "User", "Marker", "RunResult"]


class User:
    """One simulated user: its index, its own random generator and scratch state for the task."""

    __slots__ = ("index", "rng", "calls", "next_marker", "state")

    def __init__(self, index: int, seed: int) -> None:
        self.index = index
        self.rng = random.Random(seed)
        self.calls = 0
        self.next_marker = 0
        self.state: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<User {self.index} calls={self.calls}>"


@dataclass
class Marker:
    """A recovery measurement started at ``t`` (seconds from the run's start)."""

    name: str
    t: float
    users: int
    recovered: Dict[int, float] = field(default_factory=dict)  # user index -> seconds after t

    @property
    def recovery_s(self) -> Optional[float]:
        """Until the last user was writing again; None if some user never was."""
        if len(self.recovered) < self.users:
            return None
        return max(self.recovered.values(), default=0.0)

    def as_dict(self) -> Dict[str, Any]:
        hist = LatencyHistogram()
        for seconds in self.recovered.values():
            hist.record(seconds)
        rec = self.recovery_s
        return {"name": self.name, "t": round(self.t, 3), "users": self.users,
                "users_recovered": len(self.recovered),
                "recovery_s": round(rec, 3) if rec is not None else None,
                "user_recovery_p50_s": round(hist.percentile(50), 3),
                "user_recovery_p95_s": round(hist.percentile(95), 3)}


@dataclass
class RunResult:
    stats: Stats
    elapsed_s: float
    events: List[Dict[str, Any]]
    markers: List[Marker]
    killed_users: int


class Runner:
    """Drives ``users`` greenlets through ``task`` for ``duration`` seconds.

    Args:
        task: ``task(user)``; returns when its ops were acknowledged, raises otherwise.
        users: how many concurrent users (greenlets).
        duration: seconds of load (users start no new call after it).
        ops_per_call: ops counted per call (e.g. the batch size of a ``put_all``).
        pacing: pause between a user's calls; default none.
        ramp_up: spread the users' start over this many seconds (k6 ``ramping-vus``).
        tick: seconds between ``on_tick`` calls.
        on_tick: ``on_tick(elapsed_s, figures)``, figures as from :meth:`Stats.interval`.
        stop_grace: how long calls still running at the end may take before being killed.
        clock: the clock (default :class:`~topgun.clock.GeventClock`).
        seed: base of each user's random seed (users get ``seed + index``).
    """

    def __init__(self, task: Callable[[User], Any], *, users: int, duration: float, ops_per_call: int = 1,
                 pacing: Optional[Pacing] = None, ramp_up: float = 0.0, tick: float = 1.0,
                 on_tick: Optional[Callable[[float, Dict[str, float]], None]] = None,
                 stop_grace: float = 15.0, clock: Optional[Clock] = None, seed: int = 0) -> None:
        if not isinstance(users, int) or users < 1:
            raise ConfigurationError(f"users must be a positive int, got {users!r}")
        if duration <= 0:
            raise ConfigurationError(f"duration must be > 0 s, got {duration!r}")
        if ramp_up < 0 or ramp_up > duration:
            raise ConfigurationError(f"ramp_up must be within 0..duration, got {ramp_up!r}")
        self.task = task
        self.users = users
        self.duration = duration
        self.ops_per_call = ops_per_call
        self.pacing = pacing or no_wait()
        self.ramp_up = ramp_up
        self.tick = tick
        self.on_tick = on_tick
        self.stop_grace = stop_grace
        self.clock: Clock = clock or GeventClock()
        self.seed = seed
        self.stats = Stats()
        self.events: List[Dict[str, Any]] = []
        self.markers: List[Marker] = []
        self._actions: List[tuple] = []
        self._start = 0.0
        self._stop_at = 0.0
        self._started_users = 0
        self._running = False

    # ------------------------------------------------------------------ scheduling

    def at(self, offset: float, action: Callable[[], Any], name: str) -> None:
        """Run ``action()`` ``offset`` seconds into the run; its outcome is kept in ``events``."""
        self._actions.append((offset, action, name))

    def elapsed(self) -> float:
        return self.clock.monotonic() - self._start if self._start else 0.0

    def mark(self, name: str) -> Marker:
        """Start a recovery measurement now (see the module docstring)."""
        marker = Marker(name, self.elapsed(), self._started_users)
        self.markers.append(marker)
        return marker

    def event(self, name: str, **detail: Any) -> None:
        """Note something in the run's event list (with its time)."""
        self.events.append({"t": round(self.elapsed(), 3), "name": name, **detail})

    # ------------------------------------------------------------------ running

    def run(self) -> RunResult:
        """Run the load; returns when every user stopped (at most ``stop_grace`` after the end)."""
        clock = self.clock
        self._start = clock.monotonic()
        self._stop_at = self._start + self.duration
        self.stats = Stats(start=self._start)
        self._running = True
        pool = Pool(self.users)
        actions, helpers = Group(), Group()
        for offset, action, name in self._actions:
            actions.spawn(self._run_action, offset, action, name)
        if self.on_tick is not None:
            helpers.spawn(self._ticker)
        try:
            for index in range(self.users):
                if self.ramp_up:
                    delay = self._start + self.ramp_up * index / self.users - clock.monotonic()
                    if delay > 0:
                        clock.sleep(delay)
                if clock.monotonic() >= self._stop_at:
                    break
                user = User(index, self.seed + index)
                user.next_marker = len(self.markers)  # marks made before it started don't wait for it
                self._started_users += 1
                pool.spawn(self._user_loop, user)
            remaining = self._stop_at - clock.monotonic()
            pool.join(timeout=max(0.0, remaining) + self.stop_grace)
            killed = len(pool)
            if killed:
                log.warning("%d users still in a call %.1fs after the end; killing them", killed, self.stop_grace)
                pool.kill(timeout=5.0)
            ended = clock.monotonic()
            # An action still running (a restart that outlasts the run) may finish: what comes
            # after the run (verification) should see the cluster it left, not half of it.
            actions.join(timeout=self.stop_grace)
        finally:
            self._running = False
            helpers.kill(timeout=5.0)
            actions.kill(timeout=5.0)
            pool.kill(timeout=5.0)
        elapsed = max(ended - self._start, 1e-9)
        return RunResult(self.stats, elapsed, self.events, self.markers, killed)

    def _user_loop(self, user: User) -> None:
        clock, stats, task, ops, pace = self.clock, self.stats, self.task, self.ops_per_call, self.pacing
        markers = self.markers
        while True:
            started = clock.monotonic()
            if started >= self._stop_at:
                return
            try:
                task(user)
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # every failure is a figure, not a crash
                stats.failure(exc, clock.monotonic(), ops)
            else:
                now = clock.monotonic()
                stats.success(now - started, now, ops)
                while user.next_marker < len(markers):
                    marker = markers[user.next_marker]
                    if started - self._start < marker.t:
                        break
                    marker.recovered[user.index] = now - self._start - marker.t
                    user.next_marker += 1
            user.calls += 1
            delay = pace(started, clock.monotonic())
            if delay > 0:
                clock.sleep(min(delay, max(0.0, self._stop_at - clock.monotonic())))
            elif user.calls % 64 == 0:
                clock.sleep(0)  # a task that never blocks must still let the others run

    def _run_action(self, offset: float, action: Callable[[], Any], name: str) -> None:
        delay = self._start + offset - self.clock.monotonic()
        if delay > 0:
            self.clock.sleep(delay)
        t = self.elapsed()
        try:
            detail = action()
        except Exception as exc:
            log.warning("action %s failed: %s", name, exc)
            self.events.append({"t": round(t, 3), "name": name, "ok": False,
                                "error": f"{type(exc).__name__}: {exc}"})
            return
        entry: Dict[str, Any] = {"t": round(t, 3), "name": name, "ok": True,
                                 "took_s": round(self.elapsed() - t, 3)}
        if isinstance(detail, dict):
            entry.update(detail)
        self.events.append(entry)

    def _ticker(self) -> None:
        assert self.on_tick is not None
        next_at = self._start + self.tick
        while True:
            delay = next_at - self.clock.monotonic()
            if delay > 0:
                self.clock.sleep(delay)
            next_at += self.tick
            try:
                self.on_tick(self.elapsed(), self.stats.interval())
            except Exception:  # progress output must never stop the run
                log.exception("progress callback failed")

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<Runner users={self.users} duration={self.duration}s {state} ops={self.stats.ops}>"
