"""Install and run the real TopGun server (the Rust ``topgun-server`` binary) for tests and benchmarks.

The contract:

* :func:`ensure_server_binary` returns the path of a ``topgun-server`` binary of the pinned
  version. ``TOPGUN_SERVER_BIN`` wins if set; otherwise the npm package is fetched once with
  ``npm pack`` into ``<repo or cwd>/.cache/topgun-server/<version>/`` (atomically: unpacked into
  a temporary directory, then renamed into place).
* :class:`RealServer` runs one standalone node in its own directory, with its log in a file.
  ``start()`` returns once the server has printed ``PORT=NNNN``; ``restart()`` comes back on the
  same port with the same data file, so clients can reconnect to the same URL.
* A node dies with the process that started it (SIGKILL via Linux ``PR_SET_PDEATHSIG``), so
  a killed or cancelled test run leaves no server holding its port. The kernel sends that
  signal when the starting *thread* ends, so it is set only for nodes started from the main
  thread (where pytest fixtures and gevent code run); nodes started from another thread
  outlive it as before.

Not in the contract: clusters of real nodes (``realcluster.py`` forms those, working around
the 2.2.0 cluster mode's flaws) and platforms other than linux x64 (set ``TOPGUN_SERVER_BIN`` there).

Command line::

    python -m topgun.testing.realserver install          # prints the binary's path
    python -m topgun.testing.realserver serve --port 0   # prints URL=..., runs until Ctrl-C
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import platform
import re
import shutil
import signal
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

# gevent's Popen, not the stdlib's: once any gevent child watcher exists in the process it reaps
# every child, and the stdlib Popen then reports exit code 0 for them. It also waits cooperatively.
from gevent import subprocess

from topgun.clock import Clock, GeventClock
from topgun.errors import ConfigurationError
from topgun.testing.children import die_with_parent, kill_and_wait, terminate

log = logging.getLogger(__name__)

__all__ = [
    "BINARY_ENV",
    "SERVER_PACKAGE",
    "SERVER_VERSION",
    "RealServer",
    "ServerStartError",
    "die_with_parent",
    "ensure_server_binary",
    "main",
]

SERVER_PACKAGE = "@topgunbuild/server-linux-x64"
SERVER_VERSION = "2.2.0"
# The npm registry's integrity string for SERVER_PACKAGE@SERVER_VERSION; change both together.
SERVER_TARBALL_SHA512 = ("zElFCDGcMn020AWzlzt8Hkr6OcXefz58paX/22lG2tI8S9OtRaxH0jyXw/"
                         "JdZs4EQAOMhBzPR/eT4Edp0blEpw==")
BINARY_ENV = "TOPGUN_SERVER_BIN"

_BINARY_IN_PACKAGE = "package/bin/topgun-server"
_NPM_TIMEOUT_S = 300.0
_PORT_LINE = re.compile(rb"^PORT=(\d+)\s*$", re.MULTILINE)
_ADDR_IN_USE = re.compile(r"address already in use|os error 98", re.IGNORECASE)
# Inherited variables that would change the node's mode; the caller sets them explicitly instead.
_STRIPPED_ENV_PREFIXES = ("TOPGUN_", "JWT_SECRET", "RUST_LOG")
_STRIPPED_ENV_NAMES = ("PORT",)
_LOG_TAIL_LINES = 60


class ServerStartError(RuntimeError):
    """The server process exited early or never reported its port; the message has its log tail."""


# -- installing the binary -----------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``<repo>/.cache/topgun-server`` in a source checkout, else ``<cwd>/.cache/topgun-server``."""
    repo = Path(__file__).resolve().parents[2]
    root = repo if (repo / "setup.py").is_file() and (repo / "topgun").is_dir() else Path.cwd()
    return root / ".cache" / "topgun-server"


def ensure_server_binary(cache_dir: os.PathLike[str] | str | None = None) -> Path:
    """Return the path of an executable ``topgun-server``, installing it with npm if needed.

    Args:
        cache_dir: the directory that holds one subdirectory per server version; defaults to
            :func:`default_cache_dir`. Ignored when ``TOPGUN_SERVER_BIN`` is set.

    Returns:
        The binary's absolute path.

    Raises:
        ConfigurationError: ``TOPGUN_SERVER_BIN`` names no executable file, npm is missing or
            fails, or the downloaded package is not the pinned one.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override).expanduser().resolve()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigurationError(f"{BINARY_ENV}={override!r} is not an executable file")
        return path
    version_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / SERVER_VERSION
    binary = version_dir / "bin" / "topgun-server"
    if not binary.is_file():
        _install(version_dir)
    return binary


def _install(version_dir: Path) -> None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ConfigurationError(
            f"{SERVER_PACKAGE} only runs on linux x86_64; build topgun-server yourself and set {BINARY_ENV}")
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError(
            f"npm is not on PATH; install Node.js and npm, or set {BINARY_ENV} to a topgun-server binary")
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    # Stage next to the final directory so the rename below stays on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".install-", dir=version_dir.parent) as tmp:
        tarball = _npm_pack(npm, Path(tmp))
        staged = Path(tmp) / SERVER_VERSION
        _extract_binary(tarball, staged / "bin" / "topgun-server")
        try:
            os.rename(staged, version_dir)
        except OSError:
            # Another process (a parallel test worker) installed it first; theirs is as good as ours.
            if not (version_dir / "bin" / "topgun-server").is_file():
                raise


def _npm_pack(npm: str, dest: Path) -> Path:
    spec = f"{SERVER_PACKAGE}@{SERVER_VERSION}"
    try:
        proc = subprocess.run([npm, "pack", spec, "--silent"], check=False, cwd=dest, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=_NPM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"npm pack {spec} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ConfigurationError(
            f"npm pack {spec} exited with {proc.returncode}:\n{_tail(proc.stderr or proc.stdout, 20)}")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise ConfigurationError(f"npm pack {spec} left {len(tarballs)} tarballs in {dest}")
    digest = base64.b64encode(hashlib.sha512(tarballs[0].read_bytes()).digest()).decode()
    if digest != SERVER_TARBALL_SHA512:
        raise ConfigurationError(f"npm pack {spec} gave a tarball with sha512-{digest}, "
                                 f"expected sha512-{SERVER_TARBALL_SHA512}")
    return tarballs[0]


def _extract_binary(tarball: Path, target: Path) -> None:
    # Read the one member we need instead of extractall(): no path tricks, and npm ships it
    # without the executable bit, so the mode is set here anyway.
    target.parent.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.getmember(_BINARY_IN_PACKAGE)
        source = tar.extractfile(member)
        if source is None:
            raise ConfigurationError(f"{tarball.name}: {_BINARY_IN_PACKAGE} is not a regular file")
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    target.chmod(0o755)


# -- running one node ----------------------------------------------------------------------------

class RealServer:
    """One standalone ``topgun-server`` process, run in ``workdir`` with its log in a file.

    Args:
        binary: the server binary (see :func:`ensure_server_binary`).
        workdir: the node's own directory; holds ``tg.redb`` and, by default, the log.
        node_id: passed as ``--node-id``.
        port: 0 lets the OS choose at the first start; restarts reuse the port it got.
        jwt_secret: run in JWT mode with this HS256 secret; ``None`` runs with ``TOPGUN_NO_AUTH=1``.
        extra_env: more environment variables, applied last (they override ours).
        log_path: where stdout and stderr go (appended across restarts); default ``workdir/<node_id>.log``.
        unbounded_write_behind: set ``TOPGUN_WRITEBEHIND_CAPACITY=0`` so sustained writes don't get
            ERROR 500 "Write-behind capacity exceeded"; meant for load tests and benchmarks.
        clock: deadlines and polling sleeps; the default yields to other greenlets while waiting.
        extra_args: more command-line arguments after ``--port``/``--node-id`` (the cluster
            fixture passes ``--cluster-port`` and ``--seed-nodes``).
    """

    def __init__(self, binary: os.PathLike[str] | str, workdir: os.PathLike[str] | str, *,
                 node_id: str = "n1", port: int = 0, jwt_secret: str | None = None,
                 extra_env: Mapping[str, str] | None = None,
                 log_path: os.PathLike[str] | str | None = None,
                 unbounded_write_behind: bool = False, clock: Clock | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, got {port}")
        if jwt_secret == "":
            raise ConfigurationError("jwt_secret must not be empty; pass None for no-auth mode")
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.node_id = node_id
        self.jwt_secret = jwt_secret
        self.extra_env = dict(extra_env or {})
        self.log_path = Path(log_path) if log_path is not None else self.workdir / f"{node_id}.log"
        self.unbounded_write_behind = unbounded_write_behind
        self.clock: Clock = clock if clock is not None else GeventClock()
        self.extra_args = tuple(extra_args)
        self._requested_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen | None = None

    # -- state

    @property
    def port(self) -> int | None:
        """The listening port once started (kept after stop, for restart); ``None`` before."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/ws``; stays the same across restarts."""
        if self._port is None:
            raise ServerStartError(f"{self!r} has not been started, so it has no URL yet")
        return f"ws://127.0.0.1:{self._port}/ws"

    @property
    def pid(self) -> int | None:
        """The running process's id, or ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        """The environment the node runs with: ours, minus inherited TOPGUN_*/JWT_SECRET/PORT/RUST_LOG."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(_STRIPPED_ENV_PREFIXES) and k not in _STRIPPED_ENV_NAMES}
        env["TOPGUN_REDB_PATH"] = str(self.workdir / "tg.redb")
        env["RUST_LOG"] = "warn"
        env["NO_COLOR"] = "1"  # the log is a file: no ANSI colour codes in it
        if self.jwt_secret is None:
            env["TOPGUN_NO_AUTH"] = "1"
        else:
            env["JWT_SECRET"] = self.jwt_secret
            env["TOPGUN_BIND_ADDR"] = "127.0.0.1"
        if self.unbounded_write_behind:
            env["TOPGUN_WRITEBEHIND_CAPACITY"] = "0"
        env.update(self.extra_env)
        return env

    # -- lifecycle

    def start(self, timeout: float = 15.0) -> RealServer:
        """Spawn the node and wait until it prints ``PORT=``.

        Returns:
            ``self``, so ``server = RealServer(...).start()`` works.

        Raises:
            ServerStartError: it is already running, exited early, or printed no port within
                ``timeout`` (it is killed then); the message ends with the log tail.
        """
        if self.running:
            raise ServerStartError(f"{self!r} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port = self._port if self._port is not None else self._requested_port
        self._port = self._spawn_and_wait(port, self.clock.monotonic() + timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the node, wait up to ``timeout`` seconds, then SIGKILL it. Safe to call twice."""
        if not terminate(self._proc, timeout):
            log.warning("%r ignored SIGTERM for %.1f s; sending SIGKILL", self, timeout)
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node (no clean shutdown) and wait for it to exit. Safe to call twice."""
        try:
            kill_and_wait(self._proc)
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(f"{self!r} survived SIGKILL for 5 s") from exc

    def restart(self, timeout: float = 15.0) -> RealServer:
        """Stop the node if it runs, then start it again on the same port with the same data.

        Raises:
            ServerStartError: it was never started, or did not come back within ``timeout``.
        """
        if self._port is None:
            raise ServerStartError(f"{self!r} was never started, so there is no port to restart on")
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> RealServer:
        return self if self.running else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- logs

    def log_text(self) -> str:
        """Everything the node wrote to stdout and stderr, across restarts ("" before the first start)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_text(), lines)

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        where = f"ws://127.0.0.1:{self._port}/ws" if self._port is not None else "port=?"
        auth = "jwt" if self.jwt_secret is not None else "no-auth"
        return f"<RealServer {self.node_id} {where} {state} {auth}>"

    # -- internals

    def _spawn_and_wait(self, port: int, deadline: float) -> int:
        # A fixed port may still be held for a moment (by the previous process, or a client that
        # grabbed it as an ephemeral port): try again until the deadline, but only for that reason.
        busy = False
        while True:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = self._spawn(port)
            try:
                return self._wait_for_port(self._proc, offset, deadline)
            except ServerStartError as exc:
                busy = busy or bool(_ADDR_IN_USE.search(self._log_since(offset).decode("utf-8", "replace")))
                if port == 0 or not busy:
                    raise
                if self.clock.monotonic() >= deadline:
                    raise ServerStartError(self._failure(f"could not bind port {port}: still in use")) from exc
                self.clock.sleep(0.1)

    def _spawn(self, port: int) -> subprocess.Popen:
        cmd = [str(self.binary), "--port", str(port), "--node-id", self.node_id, *self.extra_args]
        with open(self.log_path, "ab") as log:
            log.write(f"--- topgun: {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                return subprocess.Popen(cmd, cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=die_with_parent())
            except OSError as exc:
                raise ServerStartError(f"cannot run {self.binary}: {exc}") from exc

    def _wait_for_port(self, proc: subprocess.Popen, offset: int, deadline: float) -> int:
        while True:
            match = _PORT_LINE.search(self._log_since(offset))
            if match:
                return int(match.group(1))
            if proc.poll() is not None:
                raise ServerStartError(self._failure(f"exited with code {proc.returncode} before printing PORT="))
            if self.clock.monotonic() >= deadline:
                self.kill()
                raise ServerStartError(self._failure("printed no PORT= line in time (killed it)"))
            self.clock.sleep(0.02)

    def _log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:
            return b""

    def _failure(self, what: str) -> str:
        return f"topgun-server {self.node_id} {what}; log {self.log_path}, last lines:\n{self.log_tail()}"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# -- command line --------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """``install`` prints the binary's path; ``serve`` runs one node until SIGINT/SIGTERM."""
    out = out if out is not None else sys.stdout
    parser = argparse.ArgumentParser(prog="python -m topgun.testing.realserver", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install the pinned topgun-server and print its path")
    install.add_argument("--cache-dir", help="default: <repo or cwd>/.cache/topgun-server")
    serve = sub.add_parser("serve", help="run one node (for benchmarks and demos); prints URL=...")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--node-id", default="n1")
    serve.add_argument("--workdir", help="default: a new temporary directory")
    serve.add_argument("--jwt-secret", help="run in JWT mode with this secret (default: no auth)")
    serve.add_argument("--bounded-write-behind", action="store_true",
                       help="keep the server's default write-behind capacity (default: unbounded)")
    args = parser.parse_args(argv)
    try:
        binary = ensure_server_binary(getattr(args, "cache_dir", None))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "install":
        print(binary, file=out)
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"topgun-{args.node_id}-"))
    server = RealServer(binary, workdir, node_id=args.node_id, port=args.port, jwt_secret=args.jwt_secret,
                        unbounded_write_behind=not args.bounded_write_behind)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    try:
        server.start()
        print(f"URL={server.url}\nLOG={server.log_path}", file=out, flush=True)
        # Take Ctrl-C and SIGTERM as plain values from here on (the node, already spawned, keeps
        # the default mask), so they stop the node without a KeyboardInterrupt inside gevent.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        while server.running:
            if signal.sigtimedwait(stop_signals, 0.5) is not None:
                return 0
        print(f"error: {server!r} exited on its own:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
