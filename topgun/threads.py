"""Which thread a client's greenlets live on, and how calls from other threads reach them.

A :class:`~topgun.TopGunClient` keeps its connections, reader greenlets and engine on one
gevent hub, its *home*. Two kinds of home:

``direct``
    The hub of the thread that created the client. Calls from that thread run inline, as plain
    gevent code (fastest: no thread hop). Chosen by ``thread_mode="auto"`` when the process is
    monkey-patched (``gunicorn -k gevent``: every "thread" is a greenlet of that hub) or when the
    creating thread already runs gevent (it has a hub), and whenever a ``clock`` or
    ``transport_factory`` test seam is passed.
``loop``
    A :class:`LoopThread`: a daemon OS thread that does nothing but run the client's hub. Chosen
    by ``auto`` for unpatched code that does not use gevent itself: plain scripts, threaded
    servers, test suites. Callbacks (``on_change``), heartbeats and reconnects keep running
    while the calling code blocks in ``time.sleep`` or a database driver.

Whatever the home, a public blocking method called from a thread other than the home's runs
on the home (marshalled with ``loop.run_callback_threadsafe``) while the caller waits with a
deadline: the method's own ``timeout`` (or ``request_timeout``) plus :data:`GRACE_S`. If the
home does not finish by then (its thread is blocked, or a direct home's thread is not running
its hub) the call raises :class:`~topgun.errors.OperationTimeout` naming the home; if the
home is gone it raises :class:`~topgun.errors.ClientClosed`. No call waits forever unless it
asked to (``Subscription.get(timeout=None)``), and even that gives up when the home dies.

The caller waits cooperatively if its own thread runs a gevent hub (other greenlets of that
thread keep running), else on a plain ``threading.Event``; no hub is created for a plain
thread. ``*_async`` methods called from another thread return a :class:`ThreadFuture`
(a ``concurrent.futures.Future`` that also has AsyncResult's ``get``) instead of an
``AsyncResult``, which belongs to the home's hub.

Not in here: choosing connections, retries (``engine``/``cluster``); fork handling (``forking``).
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, TypeVar

import gevent
import gevent.event
from gevent import monkey
from gevent._hub_local import get_hub_if_exists

from .config import check_timeout
from .errors import ClientClosed, ConfigurationError, OperationTimeout

log = logging.getLogger(__name__)

__all__ = ["THREAD_MODES", "GRACE_S", "Home", "Hosted", "LoopThread", "ThreadFuture", "blocking", "choose_mode",
           "is_patched", "current_thread_ident", "allocate_lock", "wait_until"]

THREAD_MODES = ("auto", "direct", "loop")
#: Extra seconds a cross-thread caller waits beyond the call's own timeout before giving up on
#: the home: covers scheduling latency, never a normal answer (the call fails by its own deadline).
GRACE_S = 2.0
_LIVENESS_S = 1.0  # unbounded waits re-check that the home is still alive this often
_DRAIN_S = 1.0     # how long a stopping loop thread lets its loop finish what is left

# Real OS-thread primitives, also under monkey-patching (where threading.* are greenlet-based).
current_thread_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
_RealThread: Any = monkey.get_original("threading", "Thread")
_RealEvent: Any = monkey.get_original("threading", "Event")

F = TypeVar("F", bound=Callable[..., Any])


def is_patched() -> bool:
    """True if gevent monkey-patched ``threading`` or ``socket`` in this process."""
    return bool(monkey.is_module_patched("threading") or monkey.is_module_patched("socket"))


def choose_mode(requested: str, *, seams: bool = False) -> str:
    """Resolve ``thread_mode``: ``"direct"`` or ``"loop"`` (see the module docstring)."""
    if requested not in THREAD_MODES:
        raise ConfigurationError(f"thread_mode must be one of {', '.join(THREAD_MODES)}, got {requested!r}")
    if requested == "loop" and is_patched():
        raise ConfigurationError('thread_mode="loop" needs real threads; under gevent monkey-patching '
                                 'use "direct" (or "auto")')
    if requested != "auto":
        return requested
    if seams or is_patched() or get_hub_if_exists() is not None:
        return "direct"
    return "loop"


# -- the home ------------------------------------------------------------------------------------

class LoopThread:
    """A daemon OS thread running one gevent hub until :meth:`stop`."""

    def __init__(self, name: str = "topgun-loop", start_timeout: float = 5.0) -> None:
        self.name = name
        self.hub: Any = None
        self._stop_requested: Optional[gevent.event.Event] = None
        self._ready = _RealEvent()
        self._thread = _RealThread(target=self._main, name=name, daemon=True)
        self._thread.start()
        if not _wait_for(self._ready.is_set, start_timeout, self._ready.wait) or self.hub is None:
            raise ClientClosed(f"the client's loop thread {name} did not start within {start_timeout}s")

    def _main(self) -> None:
        hub = gevent.get_hub()
        stop = gevent.event.Event()
        # A referenced watcher keeps the loop alive while idle (otherwise waiting would raise
        # LoopExit: nothing left that could wake us). Calls arrive through run_callback_threadsafe.
        keepalive = hub.loop.async_()
        keepalive.start(lambda: None)
        self.hub, self._stop_requested = hub, stop
        self._ready.set()
        try:
            stop.wait()
        finally:
            keepalive.stop()
            keepalive.close()
            self.hub = None
            # Let the loop run dry first, so the hub greenlet ends parked in its final
            # LoopExit: destroy() can then finish it. Destroying a hub still suspended in a
            # callback leaves it parked mid-throw, holding this frame, the hub and every
            # object they reach in greenlet state the garbage collector cannot free
            # (gevent issue 1601): one dead hub per closed loop-thread client. The DNS
            # threadpool and resolver go first: destroy() stopping them would switch into
            # the hub again and suspend it in a callback.
            for name, stop_it in (("_resolver", "close"), ("_threadpool", "kill")):
                helper = getattr(hub, name, None)
                if helper is not None:
                    getattr(helper, stop_it)()
                    setattr(hub, name, None)
            if not hub.join(timeout=_DRAIN_S):
                log.warning("the loop thread %s still had watchers after %.1fs; its hub may leak",
                            self.name, _DRAIN_S)
            hub.destroy(destroy_loop=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.hub is not None

    @property
    def ident(self) -> Optional[int]:
        return self._thread.ident

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the hub and join the thread (no join when called from the thread itself)."""
        hub, stop = self.hub, self._stop_requested
        if hub is None or stop is None or not self._thread.is_alive():
            return
        try:
            hub.loop.run_callback_threadsafe(stop.set)
        except Exception:  # the loop is already being destroyed
            return
        if current_thread_ident() != self._thread.ident:
            _wait_for(lambda: not self._thread.is_alive(), timeout, self._thread.join)

    def __repr__(self) -> str:
        return f"<LoopThread {self.name} {'alive' if self.alive else 'stopped'}>"


def _wait_for(condition: Callable[[], bool], timeout: float, plain_wait: Callable[[float], Any]) -> bool:
    """Wait for a real thread's progress; poll cooperatively if this thread runs a gevent hub."""
    if get_hub_if_exists() is None and not is_patched():
        plain_wait(timeout)      # a plain thread: block it, nothing else runs here
        return condition()
    deadline = _monotonic() + timeout
    while not condition() and _monotonic() < deadline:
        gevent.sleep(0.001)     # other greenlets of this thread keep running meanwhile
    return condition()


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until true or ``timeout``; cooperatively if this thread runs a hub."""
    def plain_wait(seconds: float) -> None:
        deadline = _monotonic() + seconds
        while not condition() and _monotonic() < deadline:
            time.sleep(0.001)
    return _wait_for(condition, timeout, plain_wait)


class _Call:
    """One method call marshalled onto the home; finished exactly once, from the home's thread."""

    __slots__ = ("fn", "args", "kwargs", "value", "error", "done", "greenlet", "_lock", "_notify", "_cancelled")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.done = False
        self.greenlet: Optional[gevent.Greenlet] = None
        self._lock = allocate_lock()
        self._notify: Optional[Callable[[], None]] = None
        self._cancelled = False

    def start(self) -> None:  # a callback on the home's hub: spawn, never block here
        if not self._cancelled:
            self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            self.value = self.fn(*self.args, **self.kwargs)
        except gevent.GreenletExit:
            self.error = ClientClosed("the call was cancelled: its caller stopped waiting")
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            self.error = exc
        finally:
            with self._lock:
                self.done = True
                notify = self._notify
            if notify is not None:
                notify()

    def wait_with(self, waiter: "_Waiter") -> None:
        with self._lock:
            if not self.done:
                self._notify = waiter.wake

    def detach(self) -> bool:
        """Stop notifying (the caller gave up); True if the call finished meanwhile."""
        with self._lock:
            self._notify = None
            self._cancelled = True
            return self.done


class _Waiter:
    """Blocks the calling OS thread (no gevent in it)."""

    def __init__(self) -> None:
        self._event = _RealEvent()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: Optional[float]) -> bool:
        return bool(self._event.wait(timeout))

    def close(self) -> None:
        pass


class _HubWaiter(_Waiter):
    """Waits cooperatively on the caller's own hub; woken from another thread via an async watcher."""

    def __init__(self, hub: Any) -> None:
        self._flag = gevent.event.Event()
        self._watcher = hub.loop.async_()
        self._watcher.start(self._flag.set)  # started before the call is sent: no lost wake-up

    def wake(self) -> None:
        self._watcher.send()

    def wait(self, timeout: Optional[float]) -> bool:
        return bool(self._flag.wait(timeout))

    def close(self) -> None:
        self._watcher.stop()
        self._watcher.close()


def _waiter_for_caller() -> _Waiter:
    hub = get_hub_if_exists()
    if hub is None and is_patched():
        hub = gevent.get_hub()
    if hub is not None and gevent.getcurrent() is not hub:
        return _HubWaiter(hub)
    return _Waiter()


class ThreadFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """What ``*_async`` returns to another thread: a Future that also answers ``get()`` like AsyncResult."""

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        return self.result(timeout=timeout if block else 0)

    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        return self.done() and not self.cancelled() and self.exception(0) is None


def _to_future(result: gevent.event.AsyncResult) -> ThreadFuture:
    future = ThreadFuture()

    def copy(done: gevent.event.AsyncResult) -> None:  # runs on the home's hub
        if done.successful():
            future.set_result(done.value)
        else:
            future.set_exception(done.exception)

    result.rawlink(copy)
    return future


class Home:
    """Where one client's greenlets run: a direct hub or a :class:`LoopThread`."""

    def __init__(self, mode: str, name: str = "topgun-loop") -> None:
        self.mode = mode
        self.loop_thread: Optional[LoopThread] = None
        if mode == "loop":
            self.loop_thread = LoopThread(name)
            self.hub = self.loop_thread.hub
        else:
            self.hub = gevent.get_hub()
        self.thread_ident: int = self.hub.thread_ident
        self.thread_name = name if mode == "loop" else _thread_name(self.thread_ident)
        self.closed = False

    @property
    def alive(self) -> bool:
        if self.closed:
            return False
        if self.loop_thread is not None:
            return self.loop_thread.alive
        return self.hub.loop is not None

    def is_current(self) -> bool:
        return current_thread_ident() == self.thread_ident

    def run(self, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None,
            what: str = "", **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the home and return its result (inline if already there).

        ``timeout`` None waits as long as the home is alive; otherwise OperationTimeout after it.
        """
        if self.is_current():
            return fn(*args, **kwargs)
        return self._marshal(fn, args, kwargs, timeout, what or getattr(fn, "__qualname__", repr(fn)))

    def _marshal(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any],
                 timeout: Optional[float], what: str) -> Any:
        if not self.alive:
            # Its home stops when the client is closed (or collected unclosed): say so in those words.
            raise ClientClosed(f"the client is closed; {what} was not run")
        call = _Call(fn, args, kwargs)
        waiter = _waiter_for_caller()
        try:
            call.wait_with(waiter)
            self.hub.loop.run_callback_threadsafe(call.start)
            if not self._wait(call, waiter, timeout):
                if call.detach():
                    return self._result(call)
                greenlet = call.greenlet
                if greenlet is not None and self.alive:
                    self.hub.loop.run_callback_threadsafe(lambda: greenlet.kill(block=False))
                if not self.alive:
                    raise ClientClosed(f"the client is closed: its home (thread {self.thread_name}) "
                                       f"stopped during {what}")
                raise OperationTimeout(
                    f"{what} did not finish on the client's hub (thread {self.thread_name}) within "
                    f"{timeout:.3g}s; that thread is blocked or not running its gevent hub "
                    "(a slow on_change callback, or a direct-mode client called from another thread "
                    "while its own thread does non-gevent blocking work: use thread_mode='loop')")
        finally:
            waiter.close()
        return self._result(call)

    def _wait(self, call: _Call, waiter: _Waiter, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            step = _LIVENESS_S if deadline is None else min(_LIVENESS_S, max(0.0, deadline - _monotonic()))
            if waiter.wait(step):
                return True
            if not self.alive:
                return False
            if deadline is not None and _monotonic() >= deadline:
                return False

    @staticmethod
    def _result(call: _Call) -> Any:
        if call.error is not None:
            error, call.error = call.error, None
            raise error
        return call.value

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop thread, if the home has one (the caller closed the client first)."""
        if self.closed:
            return
        self.closed = True
        if self.loop_thread is not None:
            self.loop_thread.stop(timeout)

    def release(self, close: Callable[[], None]) -> None:
        """Run ``close()`` on the home soon, then stop its loop thread; never blocks.

        For a client collected without ``close()`` (a finalizer may run on any thread, the
        home's own included, in the middle of anything): the work is handed to the hub.
        """
        if self.closed:
            return
        self.closed = True
        loop_thread = self.loop_thread

        def run() -> None:
            try:
                close()
            except Exception:
                log.debug("releasing an unclosed client failed", exc_info=True)
            finally:
                if loop_thread is not None:
                    loop_thread.stop()  # on its own thread: asks it to stop, no join

        try:
            self.hub.loop.run_callback_threadsafe(lambda: gevent.spawn(run))
        except Exception:  # the hub is gone already: nothing left to release on it
            log.debug("the home of an unclosed client was already gone", exc_info=True)

    def abandon(self) -> None:
        """After fork: the home's thread does not exist in this process; never touch it again."""
        self.closed = True

    def __repr__(self) -> str:
        return f"<Home {self.mode} thread={self.thread_name} {'alive' if self.alive else 'closed'}>"


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)


def _monotonic() -> float:
    return time.monotonic()


# -- the decorator on public blocking methods ----------------------------------------------------

class Hosted(Protocol):
    """What :func:`blocking` needs to know about the object whose method it wraps."""

    @property
    def home(self) -> "Home": ...           # where the call runs

    @property
    def request_timeout(self) -> float: ...  # the default budget of a call


def _runtime(owner: Any) -> Hosted:
    return owner.runtime  # type: ignore[no-any-return]


def blocking(wait: Any = "timeout", *, none_waits_forever: bool = False,
             host: Callable[[Any], Hosted] = _runtime) -> Callable[[F], F]:
    """Run the decorated public method on its owner's home, from any thread.

    ``host(self)`` says where (default: ``self.runtime``, which the client and the handles
    give; looking it up may start a client deferred to first use, and raises ClientClosed
    once it is gone). ``wait`` sets how long a caller on another
    thread waits (plus :data:`GRACE_S`): ``"timeout"`` reads the method's ``timeout`` argument
    (if that is None: the client's ``request_timeout``, or no limit with ``none_waits_forever``),
    a number is a fixed budget, None waits as long as the home lives.
    An ``AsyncResult`` returned to another thread becomes a :class:`ThreadFuture`.
    A ``timeout`` argument other than None that is not a positive, finite number raises
    :class:`~topgun.errors.ConfigurationError` before anything runs.
    """
    def decorate(method: F) -> F:
        params = list(inspect.signature(method).parameters)
        position = params.index("timeout") - 1 if "timeout" in params else None

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            timeout = kwargs.get("timeout")
            if timeout is None and position is not None and len(args) > position:
                timeout = args[position]
            # Checked here, once for every public method: a bad timeout is the caller's mistake
            # (ConfigurationError), not a deadline that passed (OperationTimeout).
            check_timeout(timeout)
            hosted = host(self)
            home = hosted.home
            if home.is_current():
                return method(self, *args, **kwargs)
            if wait == "timeout":
                if timeout is None:
                    budget: Optional[float] = None if none_waits_forever else hosted.request_timeout + GRACE_S
                else:
                    budget = timeout + GRACE_S
            else:
                budget = None if wait is None else float(wait) + GRACE_S

            def on_home() -> Any:
                result = method(self, *args, **kwargs)
                return _to_future(result) if isinstance(result, gevent.event.AsyncResult) else result

            return home.run(on_home, timeout=budget, what=f"{type(self).__name__}.{method.__name__}()")

        return wrapper  # type: ignore[return-value]
    return decorate

