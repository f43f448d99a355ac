"""Tokens that expire, against the real 2.2.0 server in JWT mode (issue 12, item 3).

What the server does, checked here: it validates ``exp`` only when ``AUTH`` arrives (with 60 s
of leeway, WIRE.md 3.2) and does nothing when the token of an open connection expires: the
connection stays open and keeps acknowledging writes (the first test). So a token matters
again only when the client reconnects, and then ``token=callable`` must be asked for a new one;
a refused one is asked for again with back-off, and callers hear nothing of it.

Tokens here live ``LIFETIME_S`` seconds *on the server*: ``exp`` is set ``LEEWAY_S -
LIFETIME_S`` seconds in the past, so the leeway is what keeps them valid, for a few seconds.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List

import gevent
import pytest
from realserver_helpers import MakeClient, wait_until

import topgun
from topgun.metrics import RecordingMetrics
from topgun.testing.jwt import make_hs256_token
from topgun.testing.realserver import RealServer

pytestmark = [pytest.mark.realserver, pytest.mark.timeout(90)]

LEEWAY_S = 60          # the 2.2.0 server's leeway on exp (WIRE.md 3.2)
LIFETIME_S = 3         # how long the server accepts each token after it is made
LOAD_S = 8.0           # the steady write load runs this long: tokens expire twice or more meanwhile
CLOSE_EVERY_S = 0.7    # the connection is forced closed this often


@pytest.fixture
def jwt_server(topgun_real_server_factory: Callable[..., RealServer]) -> RealServer:
    return topgun_real_server_factory(auth=True)


def short_lived(secret: str, sub: str) -> str:
    """A token the server accepts for LIFETIME_S seconds from now."""
    return make_hs256_token(secret, sub=sub, exp_in=LIFETIME_S - LEEWAY_S)


def test_the_server_keeps_a_connection_open_after_its_token_expires(jwt_server: RealServer,
                                                                      make_client: MakeClient) -> None:
    secret = jwt_server.jwt_secret
    assert secret
    token = make_hs256_token(secret, sub="brief", exp_in=2 - LEEWAY_S)   # accepted for about 2 s
    client = make_client(jwt_server.url, token=token, ping_interval=None)
    conn = client.runtime.provider.any_connection()
    expired_at = time.monotonic() + 2.0
    notes = client.map("notes")
    while time.monotonic() < expired_at + 1.5:   # well past expiry on the server's clock
        notes.set("n", time.monotonic())
        gevent.sleep(0.1)
    notes.set("after-expiry", 1)
    assert notes.get("after-expiry") == 1
    assert client.runtime.provider.any_connection() is conn and conn.is_open  # never closed, never re-authenticated
    with pytest.raises(topgun.AuthError):                                    # but a new connection is refused
        topgun.TopGunClient(jwt_server.url, token=token, connect_timeout=2.0).close()


class TokenService:
    """A ``token=`` callable: a fresh short-lived token on each call, except that every
    ``stale_every``-th call hands out one that expired long ago (as a cache with a stale entry
    would), so the server refuses it and the client must ask again."""

    def __init__(self, secret: str, stale_every: int = 3) -> None:
        self.secret = secret
        self.stale_every = stale_every
        self.calls = 0
        self.stale_handed_out = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n % self.stale_every == 0:
            self.stale_handed_out += 1
            return make_hs256_token(self.secret, sub=f"stale-{n}", exp_in=-10 * LEEWAY_S)
        return short_lived(self.secret, f"user-{n}")


class Writers:
    """Threads doing steady blocking writes (and a read now and then); every failure is kept."""

    def __init__(self, client: topgun.TopGunClient, threads: int = 3) -> None:
        self.client = client
        self.written: Dict[str, int] = {}
        self.failures: List[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a writer thread is stuck"

    def _run(self, worker: int) -> None:
        load = self.client.map("load")
        n = 0
        while not self._stop.is_set():
            key = f"w{worker}-{n}"
            try:
                load.set(key, n)
                with self._lock:
                    self.written[key] = n
                if n % 20 == 0:
                    assert load.get(key) == n
            except BaseException as exc:  # noqa: B902 (every failure counts, assertions included)
                with self._lock:
                    self.failures.append(exc)
            n += 1
            time.sleep(0.005)


def force_close(client: topgun.TopGunClient) -> int:
    """Close the client's open connections from its own home; returns how many."""
    runtime = client.runtime

    def close_all() -> int:
        conns = runtime.provider.open_connections()
        for conn in conns:
            conn.close()
        return len(conns)

    return int(runtime.home.run(close_all, timeout=5.0, what="force_close"))


@pytest.mark.parametrize("mode", ["url", "cluster"])
def test_expiring_tokens_under_steady_writes_lose_nothing_and_fail_no_call(
        mode: str, jwt_server: RealServer, make_client: MakeClient) -> None:
    assert jwt_server.jwt_secret
    tokens = TokenService(jwt_server.jwt_secret)
    metrics = RecordingMetrics()
    target = jwt_server.url if mode == "url" else None
    cluster = None if target else topgun.ClusterConfig(seeds=[jwt_server.url])
    # max_s is the pace for tokens that keep being refused; one refusal must not cost that long
    # (it would fail the writes waiting meanwhile): the callable is asked again at once.
    client = make_client(target, cluster=cluster, token=tokens, metrics=metrics, thread_mode="loop",
                         request_timeout=15.0, retry=topgun.RetryPolicy(deadline_s=15.0),
                         reconnect=topgun.ReconnectPolicy(max_s=30.0))
    writers = Writers(client)
    writers.start()
    closes = 0
    end = time.monotonic() + LOAD_S
    try:
        while time.monotonic() < end:
            time.sleep(CLOSE_EVERY_S)
            if client.connected:
                closes += force_close(client) > 0
    finally:
        writers.stop()

    assert writers.failures == [], f"{len(writers.failures)} calls failed, first: {writers.failures[:1]!r}"
    assert closes >= 5
    assert tokens.calls > closes, "the token callable was not asked again on every reconnect"
    assert tokens.stale_handed_out >= 1 and metrics.counter("topgun.auth.refusals") >= 1
    assert metrics.counter("topgun.reconnects") >= closes - 1
    # By now every token handed out before the last few seconds has expired on the server.
    stored = dict(client.map("load").entries(timeout=15.0))
    missing = {k: v for k, v in writers.written.items() if stored.get(k) != v}
    assert len(writers.written) > 100 and missing == {}, f"{len(missing)} acknowledged writes lost"
    wait_until(lambda: client.connected, 10.0, "connected at the end")
