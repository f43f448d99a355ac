"""``--ca-file PATH`` (default ``$TOPGUN_CA_FILE``) on every command that connects: a bad file is a bad argument.

Each command runs as ``python -m topgun.cli ...``, as a user runs it. A file that is missing or
holds no certificate ends the command with exit 2 and a message naming the file and where it
came from, before anything connects (the URL points at a port nobody listens on, so a command
that tried to connect would end with exit 3 instead). That the flag trusts a CA through a real
TLS proxy is tests/integration/tls/test_cli_ca_file_nginx.py.
"""
from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("TOPGUN_", "SSL_CERT_"))},
       "PYTHONPATH": str(REPO)}

COMMANDS: Dict[str, List[str]] = {
    "put": ["put", "users", "1", "2"], "get": ["get", "users", "1"], "rm": ["rm", "users", "1"],
    "watch": ["watch", "users"], "cluster status": ["cluster", "status"], "publish": ["publish", "news", "1"],
    "subscribe": ["subscribe", "news"], "lock": ["lock", "jobs", "{options}", "--", sys.executable, "-c", "pass"],
    "counter": ["counter", "hits"], "outbox replay": ["outbox", "replay", "{storage}"],
}


@pytest.fixture
def refused_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: nobody else gets the port, and connects are refused
    try:
        yield f"wss://localhost:{sock.getsockname()[1]}/ws"
    finally:
        sock.close()


def run(args: List[str], env: Dict[str, str] = ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topgun.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


def storage_file(tmp_path: Path) -> str:
    path = tmp_path / "outbox.db"
    sqlite3.connect(path).close()
    return str(path)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_ca_file_is_a_bad_argument_on_every_command_that_connects(
        command: str, refused_url: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    options = ["--url", refused_url, "--ca-file", missing, "--timeout", "5"]
    argv = [a.replace("{storage}", storage_file(tmp_path)) for a in COMMANDS[command]]
    argv = ([*argv[:argv.index("{options}")], *options, *argv[argv.index("{options}") + 1:]]
            if "{options}" in argv else [*argv, *options])
    done = run(argv)
    assert done.returncode == 2, done.stderr
    assert f"the CA file {missing!r} (from --ca-file) does not exist" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_topgun_ca_file_is_the_default_and_a_file_without_a_certificate_is_refused(
        refused_url: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    done = run(["get", "users", "1", "--url", refused_url], env={**ENV, "TOPGUN_CA_FILE": str(junk)})
    assert done.returncode == 2, done.stderr
    assert f"the CA file {str(junk)!r} (from TOPGUN_CA_FILE) holds no PEM certificate" in done.stderr, done.stderr


@pytest.mark.parametrize("source", ["--ca-file", "TOPGUN_CA_FILE"])
def test_bench_refuses_a_bad_ca_file_before_it_starts(source: str, refused_url: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    argv = ["bench", "single", "--url", refused_url, "--duration", "1", "-q"]
    env = ENV
    if source == "--ca-file":
        argv += ["--ca-file", missing]
    else:
        env = {**ENV, "TOPGUN_CA_FILE": missing}
    done = run(argv, env=env)
    assert done.returncode == 2, done.stderr
    assert f"topgun bench: error: the CA file {missing!r} (from {source}) does not exist" in done.stderr, done.stderr


def test_every_command_with_connection_options_takes_ca_file() -> None:
    from topgun.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple]:
        options = {o for action in parser._actions for o in action.option_strings}
        yield path, options
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    connecting = {path: options for path, options in walk(build_parser(), "topgun") if "--url" in options}
    assert {"topgun put", "topgun bench", "topgun outbox replay", "topgun lock"} <= set(connecting)
    assert [path for path, options in connecting.items() if "--ca-file" not in options] == []
