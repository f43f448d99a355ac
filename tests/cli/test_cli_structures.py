"""``topgun publish``, ``subscribe``, ``lock`` and ``counter`` as a person at a terminal runs them,
against ``topgun server --nodes 3`` in its own process (``cli_cluster`` of test_cli_commands)."""
from __future__ import annotations

import subprocess
import sys
from typing import List

import test_cli_commands
import ujson
from test_cli_commands import ENV, REPO, Lines, topgun

cli_cluster = test_cli_commands.cli_cluster   # the module-scoped fixture, shared with that file


def test_publish_reaches_a_subscriber(cli_cluster: List[str]) -> None:
    seeds = ",".join(cli_cluster)
    sub = subprocess.Popen([sys.executable, "-m", "topgun.cli", "subscribe", "cli/news", "--count", "2", "--ready",
                            "--seeds", seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=ENV, cwd=REPO)
    try:
        Lines(sub.stderr).until("SUBSCRIBED", timeout=20)
        out = Lines(sub.stdout)
        assert topgun("publish", "cli/news", '{"text": "hi"}', "--seeds", seeds).returncode == 0
        assert topgun("publish", "cli/news", "--seeds", seeds, stdin="plain words\n").returncode == 0
        first, second = ujson.loads(out.next()), ujson.loads(out.next())
        assert (first["topic"], first["data"]) == ("cli/news", {"text": "hi"})
        assert second["data"] == "plain words" and isinstance(second["timestamp"], int)
        assert sub.wait(10) == 0, "--count 2 exits after two messages"
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    bad = topgun("publish", "bad topic", "1", "--seeds", seeds)
    assert bad.returncode == 2 and "bad topic name" in bad.stderr


def test_lock_runs_the_command_while_holding_it_and_refuses_a_second(cli_cluster: List[str]) -> None:
    seeds = ",".join(cli_cluster)
    holder = subprocess.Popen([sys.executable, "-m", "topgun.cli", "lock", "cli-job", "--seeds", seeds, "--",
                               sys.executable, "-c",
                               "import os, sys; print('TOKEN', os.environ['TOPGUN_FENCING_TOKEN'], flush=True); "
                               "sys.stdin.readline(); sys.exit(7)"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ENV, cwd=REPO)
    try:
        token = int(Lines(holder.stdout).until("TOKEN", timeout=20).split()[1])
        assert token >= 1
        busy = topgun("lock", "cli-job", "--wait", "0", "--seeds", seeds, "--", sys.executable, "-c", "pass")
        assert busy.returncode == 4 and "busy" in busy.stderr
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(15) == 7, "the command's exit code is passed on"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
    after = topgun("lock", "cli-job", "--seeds", seeds, "--", sys.executable, "-c", "print('ran')")
    assert after.returncode == 0 and after.stdout.strip() == "ran"
    usage = topgun("lock", "cli-job", "--seeds", seeds)
    assert usage.returncode == 2 and "needs a command" in usage.stderr


def test_counter_adds_subtracts_and_reads(cli_cluster: List[str]) -> None:
    seeds = ",".join(cli_cluster)
    assert topgun("counter", "cli-hits", "--seeds", seeds).stdout.strip() == "0"
    assert topgun("counter", "cli-hits", "--add", "5", "--seeds", seeds).stdout.strip() == "5"
    assert topgun("counter", "cli-hits", "--sub", "2", "--seeds", seeds).stdout.strip() == "3"
    assert topgun("counter", "cli-hits", "--add", "0.5", "--seeds", seeds).stdout.strip() == "3.5"
    watch = subprocess.Popen([sys.executable, "-m", "topgun.cli", "counter", "cli-hits", "--watch", "--count", "1",
                              "--seeds", seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV, cwd=REPO)
    try:
        out = Lines(watch.stdout)
        assert out.next(timeout=20) == "3.5"                   # the value now, then each new one
        assert topgun("counter", "cli-hits", "--add", "1.5", "--seeds", seeds).returncode == 0
        assert out.next() == "5"
        assert watch.wait(10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)
