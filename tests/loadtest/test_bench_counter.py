"""``topgun bench counter``: users increment shared PN counters; every increment is counted once."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_bench_cli import assert_complete, bench, short


@pytest.mark.integration
def test_counter_scenario_counts_every_acknowledged_increment_once(tmp_path: Path) -> None:
    rc, _, stderr, doc = bench(tmp_path, "counter", "--embedded", "3", "--in-process", *short())
    assert rc == 0, stderr
    assert_complete(doc, "counter")
    assert doc["increments_acked"] == doc["ops"] > 0
    assert doc["lost"] == 0 and doc["overcounted"] == 0 and doc["read_errors"] == 0
    assert sum(doc["counters"].values()) == doc["increments_attempted"]
    assert {t["threshold"] for t in doc["thresholds"]} >= {"lost==0", "overcounted==0"}
