"""A client created before os.fork(): the child never touches the parent's connection (issue #6, item 2).

Each scenario runs in its own process (tests/threads/scripts/fork_children.py), which forks two
children: they must find the inherited socket closed in their process, reconnect on first use
and work, while the parent keeps using its own connection undisturbed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.realserver

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@pytest.mark.parametrize("mode, home", [("plain", "loop"), ("gevent", "direct"), ("patched", "direct")])
def test_children_reconnect_and_the_parent_is_undisturbed(mode: str, home: str, run_python: Any,
                                                         server_url: str) -> None:
    proc = run_python(str(SCRIPTS / "fork_children.py"), server_url, mode)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"mode {home}" in proc.stdout
    assert proc.stdout.count(" ok (") == 2 and "parent ok" in proc.stdout


@pytest.mark.nginx
@pytest.mark.parametrize("mode, home", [("plain", "loop"), ("patched", "direct")])
def test_children_of_a_tls_client_reconnect_and_the_parent_is_undisturbed(
        mode: str, home: str, run_python: Any, server_url: str, topgun_nginx_factory: Any,
        topgun_tls_ca: Any, tmp_path: Path) -> None:
    proxy = topgun_nginx_factory(server_url)
    ca_file = tmp_path / "ca.pem"
    topgun_tls_ca.cert_pem.write_to_path(str(ca_file))
    proc = run_python(str(SCRIPTS / "fork_children.py"), proxy.url, mode, str(ca_file))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"mode {home}" in proc.stdout
    assert proc.stdout.count(" ok (") == 2 and "parent ok" in proc.stdout


@pytest.mark.parametrize("mode, home", [("plain", "loop"), ("gevent", "direct")])
def test_multiprocessing_fork_workers_use_a_connected_client(mode: str, home: str, run_python: Any,
                                                            server_url: str) -> None:
    proc = run_python(str(SCRIPTS / "mp_children.py"), server_url, mode)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"mode {home}" in proc.stdout and "parent ok" in proc.stdout


def test_a_client_not_waited_for_starts_no_thread_before_first_use(run_python: Any, server_url: str) -> None:
    # gunicorn --preload: the master imports the app (making the client) and forks at once.
    proc = run_python(
        "import os, sys, threading, topgun\n"
        "client = topgun.TopGunClient(url=sys.argv[1], wait_connected=False)\n"
        "assert threading.active_count() == 1 and client._runtime is None, threading.enumerate()\n"
        "print(repr(client))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    client.map('fork_lazy').set('child', 1)\n"
        "    os._exit(0 if client.thread_mode == 'loop' else 5)\n"
        "code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
        "assert code == 0, code\n"
        "assert client.map('fork_lazy').get('child') == 1\n"
        "client.close()\n"
        "print('ok')\n", server_url)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "not started" in proc.stdout and "ok" in proc.stdout
