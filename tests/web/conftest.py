"""Fixtures for the web examples: a 3-process cluster and gunicorn -k gevent serving an example app.

gunicorn runs as a child process of this test (its own session), on 127.0.0.1 and a port picked
by binding port 0 (retried if another process takes it first). Readiness is polled over HTTP with
a deadline; the server is stopped by its pid (SIGTERM, then SIGKILL of its own process group).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import requests

from topgun.server.process import ProcessCluster
from topgun.testing.plugin import attach_logs

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
APPS = {"flask": "flask_app:app", "django": "django_app:application"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gunicorn_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30)
    return flag in out.stdout


class Gunicorn:
    """One gunicorn master (``-k gevent`` unless told) serving an example app; the log has master and workers."""

    def __init__(self, app: str, env: Dict[str, str], log_path: Path, *, workers: int = 2,
                 preload: bool = False, worker_class: str = "gevent", chdir: Path = EXAMPLES) -> None:
        self.app, self.env, self.log_path, self.chdir = app, env, log_path, chdir
        self.workers, self.preload, self.worker_class = workers, preload, worker_class
        self.node_id = f"gunicorn {app}"   # for attach_logs
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> "Gunicorn":
        for _ in range(attempts):
            self.port = free_port()
            if self._try_start(timeout):
                return self
            if "Address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"gunicorn did not become ready:\n{self.log_tail()}")

    def _try_start(self, timeout: float) -> bool:
        cmd = [sys.executable, "-m", "gunicorn", "-k", self.worker_class, "-w", str(self.workers),
               "-b", f"127.0.0.1:{self.port}", "--chdir", str(self.chdir), "--graceful-timeout", "5",
               "--log-level", "info"]
        if _gunicorn_supports("--no-control-socket"):
            cmd.append("--no-control-socket")   # gunicorn 27+: one shared control socket per user otherwise
        if self.preload:
            cmd.append("--preload")
        if self.worker_class == "gthread":
            cmd += ["--threads", "8"]   # unpatched OS threads share each worker's client
        cmd.append(self.app)
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        pids = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                # Ready once every worker answers (each request lands on some worker).
                reply = requests.get(f"{self.base_url}/healthz", timeout=1.0)
                if reply.status_code == 200 and reply.json()["connected"]:
                    pids.add(reply.json()["pid"])
                    if len(pids) >= self.workers:
                        return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # its own session: only what this test started
            proc.wait(5.0)

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<Gunicorn {self.app} {self.base_url}>"


@pytest.fixture
def cluster(topgun_process_cluster_factory: Callable[..., ProcessCluster]) -> ProcessCluster:
    """Three ``python -m topgun.server`` processes (SIGKILL-able), from the topgun pytest plugin."""
    return topgun_process_cluster_factory(3)


@pytest.fixture
def gunicorn_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """``start(app, env, workers=2, preload=False, worker_class="gevent", chdir=EXAMPLES) -> Gunicorn`` (ready)."""
    started: List[Gunicorn] = []

    def start(app: str, env: Dict[str, str], **kw: Any) -> Gunicorn:
        server = Gunicorn(app, env, tmp_path / f"gunicorn{len(started)}.log", **kw)
        started.append(server)
        attach_logs(request, server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()
