"""wss:// through a real nginx terminating TLS, with a test CA from trustme.

In front of the real 2.2.0 server (single-server mode) and in front of the embedded dev cluster
(cluster mode, one nginx listener per node, announced endpoints mapped with
``ClusterConfig(endpoint_map=...)``). A good certificate works; an untrusted one and a wrong
hostname fail at once with TLSVerificationError and are not retried in a storm; nginx killed
under a write load loses no write once it is back.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import gevent
import gevent.event
import pytest
from gevent import ssl as gssl

import topgun
from topgun.config import ReconnectPolicy
from topgun.errors import TLSVerificationError, TransportError
from topgun.testing.plugin import TLSFiles
from topgun.testing.realserver import RealServer

pytestmark = [pytest.mark.nginx, pytest.mark.integration]

StartNginx = Callable[..., Any]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        gevent.sleep(0.01)


def tls_socket_of(client: Any) -> Any:
    return client.runtime.provider.any_connection()._transport._sock


# -- a good certificate ----------------------------------------------------------------------------

@pytest.mark.realserver
def test_real_server_through_nginx_with_a_trusted_certificate(
        topgun_real_server: RealServer, topgun_nginx_factory: StartNginx, topgun_tls_files: TLSFiles,
        topgun_url_client_factory: Callable[..., Any]) -> None:
    proxy = topgun_nginx_factory(topgun_real_server.url)
    assert proxy.url.startswith("wss://localhost:")
    client = topgun_url_client_factory(proxy.url, ssl_context=topgun_tls_files.client_context)
    notes = client.map("notes")
    notes.set("n1", {"text": "over TLS"})
    assert notes.get("n1") == {"text": "over TLS"}
    sock = tls_socket_of(client)
    assert isinstance(sock, gssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    assert sock.server_hostname == "localhost"      # SNI and the hostname check used the URL's host
    # The same data straight from the server: the proxy carried it, it did not answer itself.
    direct = topgun_url_client_factory(topgun_real_server.url)
    assert direct.map("notes").get("n1") == {"text": "over TLS"}


@pytest.mark.realserver
def test_cluster_mode_through_nginx_to_a_standalone_real_server(
        topgun_real_server: RealServer, topgun_nginx_factory: StartNginx, topgun_tls_files: TLSFiles,
        topgun_client_factory: Callable[..., Any]) -> None:
    # The real standalone server sends no partition map: the wss:// seed becomes the one node.
    proxy = topgun_nginx_factory(topgun_real_server.url)
    client = topgun_client_factory([proxy.url], ssl_context=topgun_tls_files.client_context)
    client.map("notes").set("n1", 1)
    assert client.map("notes").get("n1") == 1
    states = client.cluster.node_states()
    assert [s.url for s in states.values()] == [proxy.url]
    assert all(isinstance(c._transport._sock, gssl.SSLSocket) for c in client.runtime.provider.open_connections())


def test_embedded_cluster_through_one_nginx_listener_per_node(
        topgun_cluster: Any, topgun_nginx_factory: StartNginx, topgun_tls_files: TLSFiles,
        topgun_client_factory: Callable[..., Any]) -> None:
    node_urls = topgun_cluster.urls
    proxy = topgun_nginx_factory(node_urls)
    # Nodes announce ws://127.0.0.1:<port>/ws; the client must dial the proxy's listener instead.
    endpoint_map = dict(zip(node_urls, proxy.urls))
    client = topgun.TopGunClient(
        cluster=topgun.ClusterConfig(seeds=[proxy.urls[0]], endpoint_map=endpoint_map),
        ssl_context=topgun_tls_files.client_context)
    try:
        states = wait_until(lambda: (s := client.cluster.node_states()) and
                            all(st.state == "CONNECTED" for st in s.values()) and len(s) == 3 and s,
                            10.0, "every node connected through nginx")
        assert sorted(st.url for st in states.values()) == sorted(proxy.urls)
        users = client.map("users")
        keys = [f"user:{i}" for i in range(30)]
        for key in keys:
            users.set(key, {"k": key})
        # Smart routing still works through the proxy: each key's owner is reached at the
        # listener that fronts it.
        for key in keys:
            owner = client.cluster.owner_of(key)
            assert owner == topgun_cluster.owner_of(key)
            assert states[owner].url == endpoint_map[topgun_cluster.url(owner)]
        assert {users.get(k)["k"] for k in keys} == set(keys)
        for conn in client.runtime.provider.open_connections():
            assert isinstance(conn._transport._sock, gssl.SSLSocket)
    finally:
        client.close()


# -- certificates that must be refused -----------------------------------------------------------

def test_an_untrusted_certificate_fails_the_constructor_at_once(
        topgun_cluster: Any, topgun_nginx_factory: StartNginx) -> None:
    proxy = topgun_nginx_factory(topgun_cluster.urls[0])
    started = time.monotonic()
    # No ssl_context: the system trust store, which does not know the test CA.
    with pytest.raises(TLSVerificationError) as refused:
        topgun.TopGunClient(proxy.url, connect_timeout=5.0)
    assert time.monotonic() - started < 2.5, "a refused certificate must not wait out connect_timeout"
    assert "certificate verification failed" in str(refused.value)
    assert "local issuer" in refused.value.verify_message
    assert isinstance(refused.value, TransportError) and not refused.value.retryable
    with pytest.raises(TLSVerificationError):
        topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=[proxy.url]), connect_timeout=5.0)


def _handshakes_refused(proxy: Any) -> int:
    return proxy.log_tail(10_000).count("alert unknown ca")


def test_an_untrusted_certificate_is_retried_at_the_slow_pace_not_in_a_storm(
        topgun_cluster: Any, topgun_nginx_factory: StartNginx) -> None:
    proxy = topgun_nginx_factory(topgun_cluster.urls[0])
    # Without the slow pace this policy would try 9 times in 2.5 s (0, .01, .03, .07, ... 2.27 s).
    policy = ReconnectPolicy(initial_s=0.01, max_s=1.0, multiplier=2.0, jitter=0.0)
    client = topgun.TopGunClient(proxy.url, connect_timeout=2.0, wait_connected=False, reconnect=policy)
    try:
        assert not client.connected     # (first use: starts connecting)
        wait_until(lambda: _handshakes_refused(proxy) >= 1, 5.0, "a first TLS handshake at nginx")
        first = time.monotonic()
        gevent.sleep(2.5)  # the quantity under test is the attempt count over this window
        attempts = _handshakes_refused(proxy)
        assert 2 <= attempts <= 4, f"{attempts} handshakes in {time.monotonic() - first:.1f}s"
        assert not client.connected
    finally:
        client.close()


def test_a_certificate_for_another_hostname_is_refused(
        topgun_cluster: Any, topgun_nginx_factory: StartNginx, topgun_tls_ca: Any, tmp_path: Any) -> None:
    other = TLSFiles(topgun_tls_ca, tmp_path / "other", "db.example.com")
    proxy = topgun_nginx_factory(topgun_cluster.urls[0], tls=other)
    with pytest.raises(TLSVerificationError, match="Hostname mismatch"):
        topgun.TopGunClient(proxy.url, ssl_context=other.client_context, connect_timeout=3.0)


def test_a_certificate_without_the_ip_address_is_refused_for_an_ip_url(
        topgun_cluster: Any, topgun_nginx_factory: StartNginx, topgun_tls_ca: Any, tmp_path: Any) -> None:
    named = TLSFiles(topgun_tls_ca, tmp_path / "named", "localhost")
    proxy = topgun_nginx_factory(topgun_cluster.urls[0], tls=named)
    ip_url = proxy.url.replace("localhost", "127.0.0.1")
    with pytest.raises(TLSVerificationError, match="IP address mismatch"):
        topgun.TopGunClient(ip_url, ssl_context=named.client_context, connect_timeout=3.0)
    client = topgun.TopGunClient(proxy.url, ssl_context=named.client_context)   # the name is fine
    client.close()


# -- the proxy goes away mid-stream --------------------------------------------------------------

@pytest.mark.realserver
def test_writes_resume_after_nginx_is_killed_and_restarted_under_load(
        topgun_real_server: RealServer, topgun_nginx_factory: StartNginx, topgun_tls_files: TLSFiles,
        topgun_url_client_factory: Callable[..., Any]) -> None:
    proxy = topgun_nginx_factory(topgun_real_server.url)
    client = topgun_url_client_factory(proxy.url, ssl_context=topgun_tls_files.client_context)
    load = client.map("load")
    keys = [f"k{i}" for i in range(4)]
    results: Dict[str, List[Any]] = {k: [] for k in keys}
    stop = gevent.event.Event()

    def writer(key: str) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            results[key].append(load.set_async(key, {"seq": seq}, timeout=30.0))
            stop.wait(0.01)

    writers = [gevent.spawn(writer, k) for k in keys]
    try:
        wait_until(lambda: all(len(r) >= 20 and r[10].ready() for r in results.values()), 10.0, "writes acked")
        reconnects = client.runtime.provider.reconnects
        proxy.kill()                                            # no close frame, no close_notify
        wait_until(lambda: not client.connected, 10.0, "the client noticed the dead proxy")
        during = {k: len(r) for k, r in results.items()}
        gevent.sleep(0.3)                                       # writes keep being queued meanwhile
        proxy.start()                                           # same ports
        wait_until(lambda: client.connected, 15.0, "the client reconnected through the new nginx")
        wait_until(lambda: all(len(r) > during[k] + 20 for k, r in results.items()), 10.0,
                   "writes after the restart")
    finally:
        stop.set()
        gevent.joinall(writers, timeout=5.0)
    assert client.runtime.provider.reconnects > reconnects
    for key, pending in results.items():
        # Every write ever submitted is acknowledged: none lost, none failed.
        assert [r.get(timeout=30.0) for r in pending] == ["APPLIED"] * len(pending)
        assert load.get(key) == {"seq": len(pending)}
