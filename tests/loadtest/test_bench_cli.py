"""``topgun bench`` end to end, in subprocesses (the CLI monkey-patches; this process must not).

Short runs and no thresholds on speed: these check that each scenario runs, that the JSON
document is complete, and that the exit code follows the thresholds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from gevent import subprocess  # stdlib Popen misreads exit codes once gevent reaps children

CORE_KEYS = ("ops_per_s", "success_rate", "p50_ms", "p95_ms", "p99_ms", "errors", "ops", "duration_s",
             "timeline", "events", "thresholds", "passed", "machine", "options", "target", "client")


def bench(tmp_path: Path, *args: str, timeout: float = 120) -> Tuple[int, str, str, Dict[str, Any]]:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "topgun.loadtest.bench", *args, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    doc = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, proc.stdout, proc.stderr, doc


def short(*extra: str) -> List[str]:
    return ["--users", "8", "--duration", "1.5", "--keys", "2000", "--tick", "0.5", *extra]


def assert_complete(doc: Dict[str, Any], scenario: str) -> None:
    for key in CORE_KEYS:
        assert key in doc, f"JSON lacks {key}"
    assert doc["scenario"] == scenario
    assert doc["ops"] > 0 and doc["ops_per_s"] > 0
    assert 0.0 <= doc["success_rate"] <= 1.0
    assert doc["p50_ms"] <= doc["p95_ms"] <= doc["p99_ms"]
    assert doc["timeline"] and all("ops_per_s" in row for row in doc["timeline"])


@pytest.mark.realserver
def test_single_scenario_against_a_url(tmp_path: Path, topgun_real_server) -> None:
    rc, stdout, stderr, doc = bench(tmp_path, "single", "--url", topgun_real_server.url,
                                    "--no-default-thresholds", "--threshold", "ops_per_s>0", *short())
    assert rc == 0, stderr
    assert_complete(doc, "single")
    assert doc["thresholds"] == [{"threshold": "ops_per_s>0", "value": doc["ops_per_s"], "ok": True}]
    assert "ops/s" in stderr and "p95" in stderr          # live progress lines
    assert "acknowledged ops" in stdout                    # the final table


@pytest.mark.realserver
def test_unmet_threshold_fails_the_exit_code(tmp_path: Path, topgun_real_server) -> None:
    rc, stdout, stderr, doc = bench(tmp_path, "single", "--url", topgun_real_server.url, "--batch-size", "10",
                                    "--no-default-thresholds", "--threshold", "ops_per_s>1e12",
                                    "--threshold", "success_rate>=0", *short("--quiet"))
    assert rc == 1, stderr
    assert doc["passed"] is False
    assert [t["ok"] for t in doc["thresholds"]] == [False, True]
    assert "FAIL  ops_per_s>1e12" in stdout
    assert doc["ops"] % 10 == 0                            # put_all calls of 10 keys count 10 ops each
    assert stderr.strip() == ""                             # --quiet


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    rc, _, stderr, _ = bench(tmp_path, "throughput", "--url", "ws://127.0.0.1:9/ws", "--threshold", "fast please")
    assert rc == 2 and "bad threshold" in stderr
    rc, _, stderr, _ = bench(tmp_path, "failover", "--url", "ws://127.0.0.1:9/ws")
    assert rc == 2 and "--embedded" in stderr
    rc, _, stderr, _ = bench(tmp_path, "throughput")
    assert rc == 2 and "give exactly one target" in stderr


@pytest.mark.integration
def test_throughput_on_an_in_process_cluster_dumb_routing(tmp_path: Path) -> None:
    rc, _, stderr, doc = bench(tmp_path, "throughput", "--embedded", "3", "--in-process", "--dumb",
                               "--no-default-thresholds", *short())
    assert rc == 0, stderr
    assert_complete(doc, "throughput")
    assert doc["options"]["smart_routing"] is False
    assert doc["client"]["map_version"] >= 1 and len(doc["client"]["nodes"]) == 3
    assert "nodes 3/3 up" in stderr


@pytest.mark.integration
def test_failover_on_an_in_process_cluster(tmp_path: Path) -> None:
    rc, stdout, stderr, doc = bench(tmp_path, "failover", "--embedded", "3", "--in-process", "--down-for", "0.5",
                                    "--no-default-thresholds", "--threshold", "lost==0",
                                    "--threshold", "unrecovered_kills==0",
                                    *short("--duration", "3"))
    assert rc == 0, stdout + stderr
    assert_complete(doc, "failover")
    assert len(doc["recovery_s"]) == 1 and doc["recovery_s"][0] is not None
    assert doc["recovery_p95_s"] is not None and "recovery_max_s" in doc
    assert doc["lost"] == 0 and doc["checked_keys"] > 0 and doc["read_errors"] == 0
    names = [e["name"] for e in doc["events"]]
    assert any(n.startswith("killed n") for n in names) and any(n.startswith("restarted n") for n in names)


@pytest.mark.integration
def test_rebalance_on_an_in_process_cluster(tmp_path: Path) -> None:
    rc, stdout, stderr, doc = bench(tmp_path, "rebalance", "--embedded", "3", "--in-process", "--add-at", "0.5",
                                    "--no-default-thresholds", "--threshold", "lost==0", *short("--duration", "2.5"))
    assert rc == 0, stdout + stderr
    assert_complete(doc, "rebalance")
    add = [e for e in doc["events"] if e["name"] == "add node"]
    assert add and add[0]["ok"] and add[0]["node"] == "n4"
    assert doc["map_version_after"] > doc["map_version_before"]
    assert doc["lost"] == 0


@pytest.mark.system
def test_failover_on_process_nodes_kills_restarts_and_loses_nothing(tmp_path: Path) -> None:
    rc, stdout, stderr, doc = bench(tmp_path, "failover", "--embedded", "3", "--kills", "2", "--down-for", "0.5",
                                    "--no-default-thresholds", "--threshold", "lost==0",
                                    "--threshold", "unrecovered_kills==0", *short("--duration", "4"), timeout=180)
    assert rc == 0, stdout + stderr
    assert_complete(doc, "failover")
    assert doc["target"]["kind"] == "embedded-processes"
    assert len(doc["recovery_s"]) == 2 and all(r is not None for r in doc["recovery_s"])
    assert len(doc["chaos"]) == 2 and doc["lost"] == 0 and doc["checked_keys"] > 0
    assert "client" in doc["cpu"]["cpu_cores"]


def test_topgun_cli_has_the_bench_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "topgun.cli", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--embedded", "--seeds", "--url", "--users", "--duration", "--keys", "--value-size", "--batch-size",
                 "--write-concern", "--dumb", "--threshold", "--json"):
        assert flag in proc.stdout


@pytest.mark.realserver
def test_single_on_a_real_server_it_starts_itself(tmp_path: Path, topgun_server_binary) -> None:
    rc, _, stderr, doc = bench(tmp_path, "single", "--real-server", "--no-default-thresholds", *short())
    assert rc == 0, stderr
    assert_complete(doc, "single")
    assert doc["target"]["kind"] == "real-server"
    assert set(doc["cpu"]["cpu_cores"]) == {"client", "n1"}        # the node it started is measured too
    assert doc["cpu"]["cpu_us_per_op_total"] > 0
