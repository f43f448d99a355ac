"""RealServer and ensure_server_binary with stand-in shell scripts: no npm, no real server."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from topgun.clock import FakeClock
from topgun.errors import ConfigurationError
from topgun.testing.realserver import BINARY_ENV, RealServer, ServerStartError, ensure_server_binary


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_env_override_wins(tmp_path, monkeypatch) -> None:
    binary = script(tmp_path / "my-server", "exit 0")
    monkeypatch.setenv(BINARY_ENV, str(binary))
    assert ensure_server_binary(tmp_path / "unused") == binary
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match=BINARY_ENV):
        ensure_server_binary()


def test_missing_npm_is_a_configuration_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="npm is not on PATH"):
        ensure_server_binary(tmp_path / "cache")


def test_failing_npm_is_a_configuration_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(BINARY_ENV, raising=False)
    (tmp_path / "bin").mkdir()
    script(tmp_path / "bin" / "npm", "echo 'npm ERR! 404' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigurationError, match="(?s)exited with 1.*npm ERR! 404"):
        ensure_server_binary(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # the staging directory is gone


def test_start_reads_the_port_and_stop_ends_the_process(tmp_path) -> None:
    binary = script(tmp_path / "fake", 'echo "PORT=4321"; exec sleep 30')
    server = RealServer(binary, tmp_path / "n1").start(timeout=5.0)
    assert (server.port, server.url, server.running) == (4321, "ws://127.0.0.1:4321/ws", True)
    assert repr(server) == f"<RealServer n1 ws://127.0.0.1:4321/ws running pid={server.pid} no-auth>"
    server.stop()
    assert not server.running and server.pid is None


def test_early_exit_shows_the_log_tail(tmp_path) -> None:
    binary = script(tmp_path / "fake", "echo 'Error: boom' >&2; exit 3")
    with pytest.raises(ServerStartError, match="(?s)exited with code 3.*Error: boom"):
        RealServer(binary, tmp_path / "n1").start(timeout=5.0)


def test_no_port_line_times_out_and_kills(tmp_path) -> None:
    binary = script(tmp_path / "fake", "exec sleep 30")
    server = RealServer(binary, tmp_path / "n1", clock=FakeClock())
    with pytest.raises(ServerStartError, match="printed no PORT= line"):
        server.start(timeout=1.0)
    assert not server.running


def test_env_sets_the_mode_and_drops_inherited_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "leaked")
    monkeypatch.setenv("TOPGUN_WRITEBEHIND_CAPACITY", "5")
    env = RealServer("x", tmp_path).env()
    assert env["TOPGUN_NO_AUTH"] == "1" and "JWT_SECRET" not in env
    assert "TOPGUN_WRITEBEHIND_CAPACITY" not in env
    env = RealServer("x", tmp_path, jwt_secret="s", unbounded_write_behind=True,
                     extra_env={"RUST_LOG": "debug"}).env()
    assert (env["JWT_SECRET"], env["TOPGUN_BIND_ADDR"]) == ("s", "127.0.0.1") and "TOPGUN_NO_AUTH" not in env
    assert (env["TOPGUN_WRITEBEHIND_CAPACITY"], env["RUST_LOG"]) == ("0", "debug")
    assert env["TOPGUN_REDB_PATH"] == str(tmp_path / "tg.redb")
