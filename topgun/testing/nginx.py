"""A real nginx terminating TLS in front of TopGun nodes, for tests and benchmarks.

The contract:

* :func:`find_nginx` returns the ``nginx`` binary (``TOPGUN_NGINX_BIN``, then ``PATH``, then
  ``/usr/sbin/nginx``) or ``None``. ``.ci/run`` installs the Debian package; nothing here
  installs anything.
* :class:`NginxProxy` writes an ``nginx.conf`` into its own directory (``daemon off``,
  ``master_process off``: one process, so one pid to stop; pid file, error log and temp paths
  in that directory) with one ``listen 127.0.0.1:<port> ssl`` server per upstream, each proxying
  WebSocket upgrades to its ``ws://`` upstream with long read timeouts (``plain=True`` adds a
  plain-text listener per upstream too, for benchmarks: TLS vs plain through the same nginx).
  ``start()`` returns once
  every listener accepts TCP; ``kill()`` is SIGKILL (the proxy vanishes mid-stream);
  ``restart()`` comes back on the same ports. The process gets ``PR_SET_PDEATHSIG`` on Linux, so
  it dies with the test process even if that is killed.
* :func:`nginx_conf` is the configuration text; the README's snippet is the same ``server`` block.

Not in here: certificates (pass files; the pytest plugin makes them with ``trustme``), HTTP/2,
load balancing, or any nginx outside 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

# gevent's Popen, as in realserver.py: the stdlib one loses exit codes once gevent reaps children.
from gevent import socket as gsocket
from gevent import subprocess

from topgun.clock import Clock, GeventClock
from topgun.errors import ConfigurationError
from topgun.testing.children import die_with_parent, kill_and_wait, terminate

__all__ = ["NginxProxy", "NginxStartError", "find_nginx", "nginx_conf", "NGINX_ENV", "NGINX_MISSING"]

NGINX_ENV = "TOPGUN_NGINX_BIN"
NGINX_MISSING = "nginx not installed; .ci/run installs it"
_LOG_TAIL_LINES = 40


class NginxStartError(RuntimeError):
    """nginx exited early or did not listen in time; the message has its error log tail."""


def find_nginx() -> Path | None:
    """The nginx binary to use, or None when there is none."""
    override = os.environ.get(NGINX_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigurationError(f"{NGINX_ENV}={override!r} is not an executable file")
        return path
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    return Path(found) if found else None


def _upstream(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname or not parts.port:
        raise ConfigurationError(f"an nginx upstream must be a plain ws://host:port URL, got {url!r}")
    return f"{parts.hostname}:{parts.port}"


def nginx_conf(directory: Path, listeners: Sequence[tuple[int, str, bool]], *, certfile: Path, keyfile: Path,
               server_name: str = "localhost") -> str:
    """The whole nginx.conf: one server on 127.0.0.1:port per ``(port, upstream host:port, tls)``."""
    d = directory
    servers = "\n".join(f"""
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        server_name {server_name};
        ssl_certificate     {certfile};
        ssl_certificate_key {keyfile};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
        }}
    }}""" for port, upstream, tls in listeners)
    return f"""# written by topgun.testing.nginx
daemon off;
master_process off;
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d / "tmp" / "body"};
    proxy_temp_path {d / "tmp" / "proxy"};
    fastcgi_temp_path {d / "tmp" / "fastcgi"};
    uwsgi_temp_path {d / "tmp" / "uwsgi"};
    scgi_temp_path {d / "tmp" / "scgi"};
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
{servers}
}}
"""


class NginxProxy:
    """One nginx process with one TLS listener per upstream node.

    Args:
        directory: its own directory (config, pid, logs, temp files); created if missing.
        upstreams: ``ws://host:port[/path]`` URLs of the nodes, one listener each.
        certfile, keyfile: the server certificate chain and key (PEM).
        binary: the nginx binary (default :func:`find_nginx`).
        server_name: the name in the URLs it hands out (the certificate must cover it).
        plain: also listen without TLS, one more port per upstream (see :attr:`plain_urls`).
        clock: deadlines and polling sleeps.
    """

    node_id = "nginx"  # for topgun.testing.plugin.attach_logs

    def __init__(self, directory: os.PathLike[str] | str, upstreams: Sequence[str], *,
                 certfile: os.PathLike[str] | str, keyfile: os.PathLike[str] | str,
                 binary: os.PathLike[str] | str | None = None, server_name: str = "localhost",
                 plain: bool = False, clock: Clock | None = None) -> None:
        if not upstreams:
            raise ConfigurationError("NginxProxy needs at least one upstream")
        found = Path(binary) if binary is not None else find_nginx()
        if found is None:
            raise ConfigurationError(NGINX_MISSING)
        self.binary = found
        self.directory = Path(directory)
        self.upstreams = [_upstream(u) for u in upstreams]
        self.paths = [urlsplit(u).path or "/" for u in upstreams]
        self.certfile, self.keyfile = Path(certfile), Path(keyfile)
        self.server_name = server_name
        self.plain = plain
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.ports: list[int] = []        # TLS listeners, one per upstream
        self.plain_ports: list[int] = []  # with plain=True
        self._proc: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "error.log"

    @property
    def urls(self) -> list[str]:
        """``wss://<server_name>:<port><path>`` per upstream, in the order given."""
        if not self.ports:
            raise NginxStartError(f"{self!r} has not been started, so it has no URLs yet")
        return [f"wss://{self.server_name}:{port}{path}" for port, path in zip(self.ports, self.paths)]

    @property
    def plain_urls(self) -> list[str]:
        """``ws://127.0.0.1:<port><path>`` per upstream (only with ``plain=True``)."""
        return [f"ws://127.0.0.1:{port}{path}" for port, path in zip(self.plain_ports, self.paths)]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    # -- lifecycle

    def start(self, timeout: float = 10.0) -> NginxProxy:
        """Write the config and run nginx; returns once every listener accepts connections.

        Raises:
            NginxStartError: it is running already, exited, or did not listen within ``timeout``.
        """
        if self.running:
            raise NginxStartError(f"{self!r} is already running")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        deadline = self.clock.monotonic() + timeout
        fresh = not self.ports
        for _attempt in range(5):
            if fresh:
                self.ports = [_free_port() for _ in self.upstreams]
                self.plain_ports = [_free_port() for _ in self.upstreams] if self.plain else []
            listeners = [(p, u, True) for p, u in zip(self.ports, self.upstreams)]
            listeners += [(p, u, False) for p, u in zip(self.plain_ports, self.upstreams)]
            self.conf_path.write_text(nginx_conf(self.directory, listeners,
                                                 certfile=self.certfile, keyfile=self.keyfile,
                                                 server_name=self.server_name))
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = self._spawn()
            try:
                self._wait_listening(deadline)
                return self
            except NginxStartError:
                busy = "Address already in use" in self._log_since(offset)
                # A free port we picked was taken meanwhile (other tests run too): pick again.
                # A restart keeps its ports and waits for them instead, until the deadline.
                if not busy or self.clock.monotonic() >= deadline:
                    raise
                if not fresh:
                    self.clock.sleep(0.1)
        raise NginxStartError(self._failure("could not bind its ports in 5 attempts"))

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (nginx's fast shutdown), wait up to ``timeout`` s, then SIGKILL. Safe to call twice."""
        if not terminate(self._proc, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL nginx: every proxied connection drops without a close frame or TLS close_notify."""
        kill_and_wait(self._proc)

    def restart(self, timeout: float = 10.0) -> NginxProxy:
        """Stop nginx if it runs, then start it again on the same ports."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> NginxProxy:
        return self if self.running else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- logs

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self._log_since(0).rstrip("\n").splitlines()[-lines:])

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        return f"<NginxProxy ports={self.ports} -> {self.upstreams} {state}>"

    # -- internals

    def _spawn(self) -> subprocess.Popen:
        cmd = [str(self.binary), "-p", str(self.directory), "-c", str(self.conf_path), "-e", str(self.log_path)]
        try:
            with open(self.directory / "stderr.log", "wb") as err:
                return subprocess.Popen(cmd, cwd=self.directory, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, preexec_fn=die_with_parent())
        except OSError as exc:
            raise NginxStartError(f"cannot run {self.binary}: {exc}") from exc

    def _wait_listening(self, deadline: float) -> None:
        waiting = self.ports + self.plain_ports
        while waiting:
            if self._proc is not None and self._proc.poll() is not None:
                raise NginxStartError(self._failure(f"exited with code {self._proc.returncode}"))
            if self.clock.monotonic() >= deadline:
                self.kill()
                raise NginxStartError(self._failure(f"was not listening on {waiting} in time (killed it)"))
            try:
                gsocket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5).close()
                waiting.pop(0)
            except OSError:
                self.clock.sleep(0.02)

    def _log_since(self, offset: int) -> str:
        text = []
        for path in (self.log_path, self.directory / "stderr.log"):
            try:
                with open(path, "rb") as f:
                    f.seek(offset if path == self.log_path else 0)
                    text.append(f.read().decode("utf-8", "replace"))
            except FileNotFoundError:
                pass
        return "".join(text)

    def _failure(self, what: str) -> str:
        return f"nginx {what}; config {self.conf_path}, log tail:\n{self.log_tail()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
