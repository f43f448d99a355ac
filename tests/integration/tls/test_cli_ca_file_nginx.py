"""``topgun put`` / ``topgun get`` over ``wss://`` through a real nginx whose certificate comes from a private CA.

nginx (``topgun_nginx_factory``) terminates TLS with a certificate signed by the session's
``trustme`` CA, in front of a one-node embedded dev server. The CLI runs as
``python -m topgun.cli ...`` (as tests/cli does) in a ``gevent.subprocess``, so this process's
hub keeps serving the embedded node meanwhile. Its environment has no ``TOPGUN_*`` and no
``SSL_CERT_FILE``/``SSL_CERT_DIR``: the CA is trusted only through ``--ca-file`` or
``TOPGUN_CA_FILE``, never by accident. The README's two commands run here as printed, with only
the URL and the file's path changed.
"""
from __future__ import annotations

import os
import re
import shlex
import ssl
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import ujson
from gevent import subprocess

pytestmark = [pytest.mark.nginx, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("TOPGUN_", "SSL_CERT_"))},
       "PYTHONPATH": str(REPO)}


def topgun(*args: str, env: Dict[str, str] = ENV) -> Any:
    return subprocess.run([sys.executable, "-m", "topgun.cli", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


@pytest.fixture
def proxy_url(topgun_cluster_factory: Callable[..., Any], topgun_nginx_factory: Callable[..., Any]) -> str:
    node = topgun_cluster_factory(1)
    return topgun_nginx_factory(node.urls[0]).url  # wss://localhost:<port>/ws


@pytest.fixture
def ca_pem(topgun_tls_ca: Any, tmp_path: Path) -> str:
    path = tmp_path / "team-ca.pem"
    topgun_tls_ca.cert_pem.write_to_path(path)
    return str(path)


def put_then_get(url: str, extra: List[str], env: Dict[str, str] = ENV) -> None:
    value = {"name": "Ada", "via": "nginx"}
    put = topgun("put", "users", "42", ujson.dumps(value), "--url", url, *extra, env=env)
    assert put.returncode == 0, put.stderr
    got = topgun("get", "users", "42", "--url", url, *extra, env=env)
    assert got.returncode == 0, got.stderr
    assert ujson.loads(got.stdout) == value


def test_put_then_get_over_wss_with_ca_file(proxy_url: str, ca_pem: str,
                                            topgun_url_client_factory: Callable[..., Any]) -> None:
    put_then_get(proxy_url, ["--ca-file", ca_pem])
    # It is stored behind nginx: a client of our own, trusting the same CA, reads it there too.
    ours = topgun_url_client_factory(proxy_url, ssl_context=ssl.create_default_context(cafile=ca_pem))
    assert ours.map("users").get("42") == {"name": "Ada", "via": "nginx"}


def test_without_the_ca_the_certificate_is_refused_with_exit_3_and_a_clear_message(proxy_url: str) -> None:
    done = topgun("put", "users", "42", "1", "--url", proxy_url, "--timeout", "5")
    assert done.returncode == 3, done.stderr
    assert "TLSVerificationError: TLS certificate verification failed" in done.stderr, done.stderr
    assert "--ca-file" in done.stderr and "TOPGUN_CA_FILE" in done.stderr, "the message says what to do"
    assert "Traceback" not in done.stderr, done.stderr


def test_topgun_ca_file_in_the_environment_works_the_same(proxy_url: str, ca_pem: str) -> None:
    put_then_get(proxy_url, [], env={**ENV, "TOPGUN_CA_FILE": ca_pem})
    # ... and TOPGUN_URL with it: the whole connection from the environment.
    got = topgun("get", "users", "42", env={**ENV, "TOPGUN_CA_FILE": ca_pem, "TOPGUN_URL": proxy_url})
    assert got.returncode == 0 and ujson.loads(got.stdout)["name"] == "Ada", got.stderr


README_URL, README_CA = "wss://topgun.internal:9443/ws", "/etc/topgun/ca.pem"


def readme_commands() -> List[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```console\n(.*?)```", text, re.S) if "--ca-file" in b]
    assert len(blocks) == 1, "the README has one console block with --ca-file"
    assert README_URL in blocks[0] and README_CA in blocks[0]
    return [line[2:] for line in blocks[0].splitlines() if line.startswith("$ ")]


def test_the_readme_ca_file_commands_run(proxy_url: str, ca_pem: str) -> None:
    outputs = []
    for line in readme_commands():
        words = shlex.split(line.replace(README_URL, proxy_url).replace(README_CA, ca_pem), comments=True)
        assigned = {}
        while "=" in words[0]:  # NAME=value before the command: the shell puts it in the environment
            name, value = words.pop(0).split("=", 1)
            assigned[name] = value
        assert words[0] == "topgun", line
        done = topgun(*words[1:], env={**ENV, **assigned})
        assert done.returncode == 0, f"{line}: {done.stderr}"
        outputs.append(done.stdout)
    assert len(outputs) == 2 and ujson.loads(outputs[-1]) == {"name": "Ada"}
