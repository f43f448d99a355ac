"""The ``topgun`` command line for people at a terminal (issue #6, item 5).

``topgun server`` is started as a real process (and stopped with SIGTERM); every other command
runs as ``python -m topgun.cli ...`` against it, JSON in and out.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import ujson

REPO = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("TOPGUN_")}, "PYTHONPATH": str(REPO)}


class Lines:
    """A child process's stream, read line by line on a thread, with deadlines."""

    def __init__(self, stream: Any) -> None:
        self._queue: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 10.0) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None

    def until(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line


@pytest.fixture(scope="module")
def cli_cluster() -> Iterator[List[str]]:
    """``topgun server --nodes 3 --port 0`` in its own process: the node URLs, n1 first."""
    proc = subprocess.Popen([sys.executable, "-m", "topgun.cli", "server", "--nodes", "3", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV, cwd=REPO,
                            start_new_session=True)
    try:
        out = Lines(proc.stdout)
        urls = [out.until("READY ", timeout=30).split()[2] for _ in range(3)]
        yield urls
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, "topgun server exits 0 on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def topgun(*args: str, stdin: str = "", timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topgun.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=REPO)


def test_put_get_rm_round_trip(cli_cluster: List[str]) -> None:
    seeds = ",".join(cli_cluster)
    value = {"name": "Ada", "langs": ["en", "fr"], "note": "ü/ß", "n": 1.5, "ok": True, "none": None}
    assert topgun("put", "users", "42", ujson.dumps(value), "--seeds", seeds).returncode == 0
    got = topgun("get", "users", "42", "--seeds", seeds)
    assert got.returncode == 0 and ujson.loads(got.stdout) == value
    assert "ü/ß" in got.stdout, "unicode and slashes are printed as they are"
    assert topgun("rm", "users", "42", "--seeds", seeds).returncode == 0
    gone = topgun("get", "users", "42", "--seeds", seeds)
    assert gone.returncode == 1 and gone.stdout == "" and "not found" in gone.stderr


def test_put_reads_json_from_stdin_and_url_mode_and_env(cli_cluster: List[str]) -> None:
    assert topgun("put", "nums", "seven", "--url", cli_cluster[1], stdin="[7, 7]\n").returncode == 0
    env_run = subprocess.run([sys.executable, "-m", "topgun.cli", "get", "nums", "seven", "--pretty"],
                             capture_output=True, text=True, timeout=30, cwd=REPO,
                             env={**ENV, "TOPGUN_SEEDS": cli_cluster[0]})
    assert env_run.returncode == 0 and ujson.loads(env_run.stdout) == [7, 7]


def test_bad_input_and_unreachable_servers_have_their_own_exit_codes(cli_cluster: List[str]) -> None:
    bad = topgun("put", "users", "1", "{nope", "--url", cli_cluster[0])
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    down = topgun("get", "users", "1", "--url", "ws://127.0.0.1:9/ws", "--timeout", "1")
    assert down.returncode == 3 and ("ConnectionLost" in down.stderr or "ConnectTimeout" in down.stderr)
    usage = topgun("watch", "users", "--where", "nofield", "--url", cli_cluster[0])
    assert usage.returncode == 2 and "FIELD=VALUE" in usage.stderr


def test_watch_prints_changes_as_they_happen(cli_cluster: List[str]) -> None:
    seeds = ",".join(cli_cluster)
    assert topgun("put", "watched", "before", '{"team": "a"}', "--seeds", seeds).returncode == 0
    watch = subprocess.Popen([sys.executable, "-m", "topgun.cli", "watch", "watched", "--where", "team=a",
                              "--initial", "--count", "3", "--ready", "--seeds", seeds],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        Lines(watch.stderr).until("WATCHING", timeout=20)
        out = Lines(watch.stdout)
        assert ujson.loads(out.next()) == {"kind": "INITIAL", "key": "before", "value": {"team": "a"}}
        for args in (("put", "watched", "x", '{"team": "a", "v": 1}'), ("put", "watched", "y", '{"team": "b"}'),
                     ("put", "watched", "x", '{"team": "a", "v": 2}'), ("rm", "watched", "x")):
            assert topgun(*args, "--seeds", seeds).returncode == 0
        changes = [ujson.loads(out.next()) for _ in range(3)]
        assert changes == [{"kind": "ENTER", "key": "x", "value": {"team": "a", "v": 1}},
                           {"kind": "UPDATE", "key": "x", "value": {"team": "a", "v": 2}},
                           {"kind": "LEAVE", "key": "x", "value": None}]
        assert watch.wait(10) == 0, "--count 3 exits after three changes"
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)


def test_watch_exits_cleanly_on_ctrl_c(cli_cluster: List[str]) -> None:
    watch = subprocess.Popen([sys.executable, "-m", "topgun.cli", "watch", "anything", "--ready",
                              "--url", cli_cluster[0]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        Lines(watch.stderr).until("WATCHING", timeout=20)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)


def test_cluster_status_lists_nodes_partitions_and_map_version(cli_cluster: List[str]) -> None:
    got = topgun("cluster", "status", "--seeds", cli_cluster[0])
    assert got.returncode == 0, got.stderr
    status = ujson.loads(got.stdout)
    assert status["map_version"] >= 1 and status["partitions"] == 271
    assert sorted(status["nodes"]) == ["n1", "n2", "n3"]
    assert all(n["status"] == "ACTIVE" and n["partitions"] > 0 for n in status["nodes"].values())
    compact = topgun("cluster", "status", "--compact", "--url", cli_cluster[2])
    assert compact.returncode == 0 and compact.stdout.count("\n") == 1


@pytest.mark.system
def test_cluster_status_after_a_node_is_killed(topgun_process_cluster_factory: Any) -> None:
    cluster = topgun_process_cluster_factory(3)
    cluster.kill("n3")
    cluster.wait_converged(timeout=20.0)
    got = topgun("cluster", "status", "--seeds", cluster.url("n1"))
    assert got.returncode == 0, got.stderr
    status = ujson.loads(got.stdout)
    live = {n: s for n, s in status["nodes"].items() if s["partitions"]}
    assert sorted(live) == ["n1", "n2"] and status["partitions"] == 271


def test_server_help_and_command_list() -> None:
    listing = topgun("--help")
    for command in ("put", "get", "rm", "watch", "cluster", "server"):
        assert f"    {command}" in listing.stdout
    assert "--nodes" in topgun("server", "--help").stdout


def test_topgun_server_takes_the_options_of_python_m_topgun_server() -> None:
    # The README walk of session 4: its help said "the same as python -m topgun.server", but it
    # had no --certfile/--keyfile and spelt --timeout --join-timeout.
    import argparse

    from topgun.cli import server
    parser = argparse.ArgumentParser()
    server.register(parser.add_subparsers())
    args = parser.parse_args(["server", "--nodes", "2", "--certfile", "c.pem", "--keyfile", "k.pem",
                              "--timeout", "7"])
    argv = server.server_argv(args)
    assert argv[argv.index("--certfile") + 1] == "c.pem" and argv[argv.index("--keyfile") + 1] == "k.pem"
    assert argv[argv.index("--timeout") + 1] == "7.0"
    old = parser.parse_args(["server", "--join-timeout", "9"])
    assert server.server_argv(old)[server.server_argv(old).index("--timeout") + 1] == "9.0"
    from topgun.server.__main__ import _parser
    parsed = _parser().parse_args(argv)           # what it hands on, python -m topgun.server accepts
    assert (parsed.certfile, parsed.keyfile, parsed.timeout, parsed.nodes) == ("c.pem", "k.pem", 7.0, 2)
