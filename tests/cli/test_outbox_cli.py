"""``topgun outbox show`` and ``topgun outbox replay`` on a storage file (issue 15, item 4)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, List

import ujson

import topgun
from topgun.storage.base import OutboxRow
from topgun.storage.outbox import encode_value
from topgun.storage.sqlite import SQLiteAdapter

REPO = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("TOPGUN_")}, "PYTHONPATH": str(REPO)}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topgun.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=60)


def _outbox(path: Path, writes: List[tuple]) -> None:
    adapter = SQLiteAdapter(str(path))
    now = 1_700_000_000_000
    adapter.append([OutboxRow(i + 1, "cli", key, op, encode_value(op, value), now + i, 0, "py-test", now)
                    for i, (key, op, value) in enumerate(writes)])
    adapter.close()


def test_show_lists_what_the_file_holds(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    _outbox(db, [("a", "PUT", {"n": 1}), ("b", "PUT", "x"), ("a", "REMOVE", None)])
    out = _cli("outbox", "show", str(db), "--limit", "2", "--compact")
    assert out.returncode == 0, out.stderr
    got = ujson.loads(out.stdout)
    assert (got["writes"], got["maps"]) == (3, {"cli": 3})
    assert [(w["key"], w["op"], w["value"]) for w in got["first"]] == [("a", "PUT", {"n": 1}), ("b", "PUT", "x")]
    assert got["first"][0]["timestamp"] == "1700000000000:0:py-test"
    missing = _cli("outbox", "show", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such storage file" in missing.stderr


def test_replay_delivers_in_order_and_empties_the_file(
        tmp_path: Path, topgun_process_cluster_factory: Callable[..., Any],
        topgun_url_client_factory: Callable[..., topgun.TopGunClient]) -> None:
    url = topgun_process_cluster_factory(1).urls[0]
    db = tmp_path / "o.db"
    _outbox(db, [("a", "PUT", 1), ("b", "PUT", 2), ("a", "PUT", 3), ("b", "REMOVE", None)])
    out = _cli("outbox", "replay", str(db), "--url", url, "--compact", "--max-age", "1e12")
    assert out.returncode == 0, out.stderr
    assert ujson.loads(out.stdout) == {"replayed": 4, "acked": 4, "dropped": 0, "rows": 0}
    reader = topgun_url_client_factory(url).map("cli")
    assert (reader.get("a"), reader.get("b", "gone")) == (3, "gone")
    assert ujson.loads(_cli("outbox", "show", str(db), "--compact").stdout)["writes"] == 0


def test_replay_drops_writes_past_max_age(tmp_path: Path, topgun_process_cluster_factory: Callable[..., Any]) -> None:
    url = topgun_process_cluster_factory(1).urls[0]
    db = tmp_path / "o.db"
    _outbox(db, [("a", "PUT", 1)])                  # queued in 2023
    out = _cli("outbox", "replay", str(db), "--url", url, "--compact", "--max-age", "60")
    assert out.returncode == 0, out.stderr
    assert ujson.loads(out.stdout) == {"replayed": 0, "acked": 0, "dropped": 1, "rows": 0}
