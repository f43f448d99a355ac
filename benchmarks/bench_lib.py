"""Shared by benchmarks/bench_*.py: run ``python -m topgun.loadtest.bench`` in fresh processes, take medians.

Each run is its own process (its own client, its own servers), configurations are interleaved
round by round so a noisy minute on this shared machine hits all of them alike, and the
result file keeps every run next to the medians, with the machine and the exact commands.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

FIGURES = ("ops_per_s", "success_rate", "p50_ms", "p95_ms", "p99_ms", "errors", "lost", "recovery_p95_s",
           "recovery_max_s", "peak_ops_per_s", "cpu_us_per_op_total")


def machine() -> Dict[str, Any]:
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     platform.processor())
    except OSError:
        model = platform.processor()
    return {"cpu": model, "cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_once(args: Sequence[str], timeout: float = 900) -> Dict[str, Any]:
    """One ``python -m topgun.loadtest.bench ARGS --json F`` run; returns its JSON document (exit code kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, "-m", "topgun.loadtest.bench", *args, "--quiet", "--json", str(out)]
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if not out.exists():
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} without a report:\n{proc.stderr[-2000:]}")
        doc = json.loads(out.read_text())
        doc["exit_code"] = proc.returncode
        doc["wall_s"] = round(time.time() - started, 1)
        return doc


def summary(doc: Dict[str, Any]) -> Dict[str, Any]:
    row = {k: doc.get(k) for k in FIGURES if k in doc}
    row["cpu_cores"] = doc.get("cpu", {}).get("cpu_cores")
    row["loadavg"] = doc.get("cpu", {}).get("loadavg_end")
    row["cpu_us_per_op"] = doc.get("cpu", {}).get("cpu_us_per_op")
    row["cpu_us_per_op_total"] = doc.get("cpu", {}).get("cpu_us_per_op_total")
    row["exit_code"] = doc.get("exit_code")
    if "recovery_s" in doc:
        row["recovery_s"] = doc["recovery_s"]
    if "map_version_after" in doc:
        row["map_versions"] = [doc.get("map_version_before"), doc.get("map_version_after")]
    return row


def median_of(rows: List[Dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(statistics.median(values), 3) if values else None


def run_matrix(name: str, configs: List[Tuple[str, List[str]]], rounds: int = 3, baseline: str = "") -> Dict[str, Any]:
    """Run every config ``rounds`` times, interleaved; write results/NAME.json and NAME.md."""
    runs: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _ in configs}
    for r in range(rounds):
        for label, args in configs:
            print(f"[{name}] round {r + 1}/{rounds}: {label}", file=sys.stderr, flush=True)
            doc = run_once(args)
            row = summary(doc)
            runs[label].append(row)
            print(f"    ops/s {row.get('ops_per_s')}  p95 {row.get('p95_ms')} ms  success {row.get('success_rate')}"
                  f"  lost {row.get('lost')}  recovery {row.get('recovery_s', '-')}  cpu {row.get('cpu_cores')}"
                  f"  load {row.get('loadavg')}", file=sys.stderr, flush=True)
    medians = {label: {k: median_of(rows, k) for k in FIGURES} for label, rows in runs.items()}
    if baseline and medians.get(baseline, {}).get("ops_per_s"):
        base = medians[baseline]["ops_per_s"]
        for label, m in medians.items():
            m["ops_ratio_to_baseline"] = round(m["ops_per_s"] / base, 3) if m.get("ops_per_s") else None
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "commit": git_commit(),
              "rounds": rounds, "baseline": baseline,
              "commands": {label: "python -m topgun.loadtest.bench " + " ".join(args) for label, args in configs},
              "medians": medians, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(result: Dict[str, Any]) -> str:
    cols = [c for c in ("ops_per_s", "ops_ratio_to_baseline", "success_rate", "p50_ms", "p95_ms", "p99_ms",
                        "recovery_p95_s", "recovery_max_s", "lost", "cpu_us_per_op_total")
            if any(m.get(c) is not None for m in result["medians"].values())]
    lines = [f"# {result['benchmark']}", "",
             f"{result['date']}; {result['machine']['cpu']}, {result['machine']['cpus']} CPUs, "
             f"Python {result['machine']['python']}, commit {result.get('commit') or '?'}. "
             f"Median of {result['rounds']} interleaved runs"
             + (f"; ratio against `{result['baseline']}`." if result["baseline"] else "."), "",
             "| config | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, m in result["medians"].items():
        lines.append(f"| {label} | " + " | ".join("-" if m.get(c) is None else f"{m[c]:,}" for c in cols) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"- {label}: `{cmd}`" for label, cmd in result["commands"].items()]
    loads = sorted({str(r.get("loadavg")) for rows in result["runs"].values() for r in rows})
    lines += ["", f"Load averages seen at the end of runs (the machine is shared): {', '.join(loads)}", "",
              "cpu_us_per_op_total adds the client and every node process that lived through the whole run "
              "(a restarted node is a new process and is left out).", ""]
    return "\n".join(lines)
