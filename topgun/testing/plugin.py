"""The topgun pytest plugin (entry point ``pytest11: topgun``).

The markers this repository's tests use (``integration``, ``system``, ``realserver``) are
registered in one place, ``tox.ini``'s ``[pytest]`` section; the plugin registers none, so a
project using it declares the markers it uses in its own configuration.

Fixtures are grouped in blocks, one per kind of server; each block keeps to itself.
Servers register their logs with :func:`attach_logs`, and a failing test's report then shows
them as extra sections. Importing this module never needs the server binary, and imports
neither gevent nor the rest of topgun: pytest loads the plugin into every run of any project
that has topgun installed, before that project's conftest may monkey-patch, so everything
heavier is imported inside the fixture that needs it.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from topgun.testing.realcluster import RealCluster
    from topgun.testing.realserver import RealServer

__all__ = ["attach_logs", "require_nginx", "TLSFiles"]

_LOG_TAIL_LINES = 200


# -- logs of failing tests -----------------------------------------------------------------------

class LogSource(Protocol):
    """Anything with a name and a log: RealServer, later the embedded and process clusters."""

    node_id: str

    def log_tail(self, lines: int = ...) -> str: ...


_LOG_SOURCES = pytest.StashKey[list[LogSource]]()


def attach_logs(request: pytest.FixtureRequest, source: LogSource) -> None:
    """Show ``source``'s log tail in the report if the requesting test fails."""
    request.node.stash.setdefault(_LOG_SOURCES, []).append(source)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    for source in item.stash.get(_LOG_SOURCES, []):
        report.sections.append((f"topgun log: {source!r}", source.log_tail(_LOG_TAIL_LINES)))


# -- the real topgun-server ----------------------------------------------------------------------

StartRealServer = Callable[..., "RealServer"]


@pytest.fixture(scope="session")
def topgun_server_binary() -> Path:
    """The pinned ``topgun-server`` binary (``TOPGUN_SERVER_BIN``, or installed with npm)."""
    from topgun.testing.realserver import ensure_server_binary
    return ensure_server_binary()


@pytest.fixture
def topgun_real_server_factory(request: pytest.FixtureRequest, topgun_server_binary: Path,
                               tmp_path: Path) -> Iterator[StartRealServer]:
    """``start(auth=False, jwt_secret=None, **kw) -> RealServer``; stops every node it started.

    ``auth=True`` without a ``jwt_secret`` makes up a secret (read it back from ``.jwt_secret``).
    Other keywords go to :class:`RealServer` (``node_id``, ``port``, ``extra_env``,
    ``unbounded_write_behind``, ...). Each node runs in ``tmp_path/<node_id>``.
    """
    from topgun.testing.realserver import RealServer
    started: list[RealServer] = []

    def start(auth: bool = False, jwt_secret: str | None = None, **kw: Any) -> RealServer:
        if auth and jwt_secret is None:
            jwt_secret = secrets.token_hex(32)
        node_id = kw.pop("node_id", f"n{len(started) + 1}")
        server = RealServer(topgun_server_binary, tmp_path / node_id, node_id=node_id,
                            jwt_secret=jwt_secret, **kw)
        started.append(server)
        attach_logs(request, server)
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def topgun_real_server(topgun_real_server_factory: StartRealServer) -> RealServer:
    """One running no-auth node: ``topgun_real_server.url``."""
    return topgun_real_server_factory()


# -- a real multi-node topgun-server cluster -----------------------------------------------------

StartRealCluster = Callable[..., "RealCluster"]


@pytest.fixture
def topgun_real_cluster_factory(request: pytest.FixtureRequest, topgun_server_binary: Path,
                                tmp_path: Path) -> Iterator[StartRealCluster]:
    """``start(nodes=2, timeout=120.0, **kw) -> RealCluster``: a formed real 2.2.0 cluster.

    Formation retries on split views are logged (``topgun.testing.realcluster``, WARNING) and
    kept in ``cluster.history``. Keywords go to :class:`RealCluster` (``stagger``, ``tries``,
    ``jwt_secret``, ``unbounded_write_behind``, ...). Each cluster runs in ``tmp_path/realclusterN``;
    every node is stopped after the test and its log is attached to a failing test's report.
    """
    from topgun.testing.realcluster import RealCluster
    started: list[RealCluster] = []

    def start(nodes: int = 2, timeout: float = 120.0, **kw: Any) -> RealCluster:
        cluster = RealCluster(topgun_server_binary, tmp_path / f"realcluster{len(started)}", nodes, **kw)
        started.append(cluster)
        for server in cluster.servers.values():
            attach_logs(request, server)
        return cluster.start(timeout=timeout)

    yield start
    for cluster in reversed(started):
        cluster.stop()


# --------------------------------------------------------------------------------------------
# Embedded dev cluster (topgun.server): in-process nodes, or one process per node (real SIGKILL)


@pytest.fixture
def topgun_cluster_factory() -> Iterator[Callable[..., Any]]:
    """``start(nodes=3, **kw) -> EmbeddedCluster`` (started, in this process); all stopped after the test."""
    from topgun.server import EmbeddedCluster
    started: list[Any] = []

    def start(nodes: int = 3, **kw: Any) -> Any:
        cluster = EmbeddedCluster(nodes, **kw)
        started.append(cluster)
        return cluster.start(timeout=15.0)

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def topgun_cluster(topgun_cluster_factory: Callable[..., Any]) -> Any:
    """A started 3-node ``EmbeddedCluster``: ``.urls``, ``.kill(node)``, ``.owner_of(key)`` ..."""
    return topgun_cluster_factory(3)


@pytest.fixture
def topgun_process_cluster_factory(request: pytest.FixtureRequest,
                                   tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``start(nodes=3, **kw) -> ProcessCluster``: one ``python -m topgun.server`` per node.

    Nodes are stopped (SIGTERM, then SIGKILL) after the test; their logs are attached to a
    failing test's report.
    """
    from topgun.server.process import ProcessCluster
    started: list[Any] = []

    def start(nodes: int = 3, **kw: Any) -> Any:
        log_dir = tmp_path / f"cluster{len(started)}"
        log_dir.mkdir(parents=True, exist_ok=True)
        cluster = ProcessCluster(nodes, log_dir=log_dir, **kw)
        started.append(cluster)
        try:
            cluster.start(timeout=30.0)
        finally:
            for node in cluster.processes.values():
                attach_logs(request, node)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


def _closing(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Yield a client factory; close every client it made, newest first."""
    made: list[Any] = []

    def connect(*args: Any, **kw: Any) -> Any:
        client = make(*args, **kw)
        made.append(client)
        return client

    yield connect
    for client in reversed(made):
        client.close()


@pytest.fixture
def topgun_client_factory() -> Iterator[Callable[..., Any]]:
    """``connect(seeds, *, smart_routing=True, **client_kw) -> TopGunClient`` in cluster mode; closed after."""
    import topgun

    def make(seeds: Any, *, smart_routing: bool = True, **kw: Any) -> Any:
        seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        return topgun.TopGunClient(cluster=topgun.ClusterConfig(seeds=seeds, smart_routing=smart_routing), **kw)

    yield from _closing(make)


@pytest.fixture
def topgun_url_client_factory() -> Iterator[Callable[..., Any]]:
    """``connect(url, **client_kw) -> TopGunClient`` for one server; closed after the test."""
    import topgun

    yield from _closing(topgun.TopGunClient)


@pytest.fixture
def topgun_client(topgun_cluster: Any, topgun_client_factory: Callable[..., Any]) -> Any:
    """A cluster-mode ``TopGunClient`` connected to ``topgun_cluster``."""
    return topgun_client_factory(topgun_cluster.urls)


# --------------------------------------------------------------------------------------------
# TLS: a test CA (trustme) and a real nginx terminating TLS in front of nodes


@pytest.fixture(scope="session")
def topgun_tls_ca() -> Any:
    """A ``trustme.CA`` for the session: ``.issue_cert(...)``, ``.configure_trust(ctx)``."""
    import trustme
    return trustme.CA()


class TLSFiles:
    """A server certificate chain and key written to PEM files, and a client context trusting its CA."""

    def __init__(self, ca: Any, directory: Path, *names: str) -> None:
        import ssl
        directory.mkdir(parents=True, exist_ok=True)
        cert = ca.issue_cert(*names)
        self.names = names
        self.certfile, self.keyfile = directory / "cert.pem", directory / "key.pem"
        cert.private_key_pem.write_to_path(self.keyfile)
        cert.cert_chain_pems[0].write_to_path(self.certfile)
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(self.certfile, append=True)
        self.client_context = ssl.create_default_context()
        ca.configure_trust(self.client_context)

    def __repr__(self) -> str:
        return f"<TLSFiles {list(self.names)} {self.certfile}>"


@pytest.fixture
def topgun_tls_files(topgun_tls_ca: Any, tmp_path: Path) -> TLSFiles:
    """A certificate for ``localhost`` and ``127.0.0.1`` signed by the session's test CA."""
    return TLSFiles(topgun_tls_ca, tmp_path / "tls", "localhost", "127.0.0.1")


def require_nginx(environ: Mapping[str, str] | None = None,
                  find: Callable[[], Path | None] | None = None) -> Path:
    """The nginx binary; skips the test without one, or fails it when ``CI`` is set."""
    from topgun.testing.nginx import NGINX_MISSING, find_nginx
    binary = (find or find_nginx)()
    if binary is None:
        if (os.environ if environ is None else environ).get("CI"):
            pytest.fail(f"{NGINX_MISSING} (CI is set, so this is a failure, not a skip)")
        pytest.skip(NGINX_MISSING)
    return binary


@pytest.fixture
def topgun_nginx_factory(request: pytest.FixtureRequest, tmp_path: Path,
                         topgun_tls_files: TLSFiles) -> Iterator[Callable[..., Any]]:
    """``start(upstream_urls, tls=None) -> NginxProxy`` (one TLS listener per ws:// upstream).

    ``tls`` is a :class:`TLSFiles` (default ``topgun_tls_files``: localhost and 127.0.0.1).
    Every nginx it started is stopped after the test; its error log is attached to a failure.
    Without an nginx binary the test is skipped, or fails when ``CI`` is set in the environment.
    """
    from topgun.testing.nginx import NginxProxy
    require_nginx()
    started: list[Any] = []

    def start(upstreams: Any, tls: TLSFiles | None = None, **kw: Any) -> Any:
        files = tls or topgun_tls_files
        upstreams = [upstreams] if isinstance(upstreams, str) else list(upstreams)
        proxy = NginxProxy(tmp_path / f"nginx{len(started)}", upstreams, certfile=files.certfile,
                           keyfile=files.keyfile, **kw)
        started.append(proxy)
        attach_logs(request, proxy)
        return proxy.start()

    yield start
    for proxy in reversed(started):
        proxy.stop()
