"""Side by side: one ``topgun bench`` command run alternately from two checkouts, medians and ratios.

Each checkout needs its own venv (``<dir>/.venv``, with ``pip install -e '.[test,server,cli,web,locust]'``),
so each side runs its own client and its own dev-server nodes. Runs alternate (A, B, A, B, ...)
so load from other jobs on a shared machine falls on both sides alike; only same-run ratios
mean anything there. Prints every run, then the median of each figure per side and B/A.

    python benchmarks/bench_ab.py --a /tmp/perf-base --b . --rounds 3 -- \\
        throughput --embedded 3 --users 50 --duration 20

``--json FILE`` keeps every run's document and the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

FIGURES = ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "success_rate", "cpu_us_per_op_total", "client_cpu_us_per_op",
           "ops_per_frame", "recovery_p95_s", "lost")


def figures(doc: Dict[str, Any]) -> Dict[str, Any]:
    cpu = doc.get("cpu") or {}
    engine = (doc.get("client") or {}).get("engine") or {}
    out = {k: doc.get(k) for k in ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "success_rate", "lost")}
    out["cpu_us_per_op_total"] = cpu.get("cpu_us_per_op_total")
    out["client_cpu_us_per_op"] = (cpu.get("cpu_us_per_op") or {}).get("client")
    out["ops_per_frame"] = round(engine["ops_sent"] / engine["batches"], 1) if engine.get("batches") else None
    recovery = doc.get("recovery") or {}
    out["recovery_p95_s"] = recovery.get("p95_s", doc.get("recovery_p95_s"))
    out["loadavg_end"] = (cpu.get("loadavg_end") or [None])[0]
    return out


def run(checkout: Path, args: List[str], timeout: float) -> Dict[str, Any]:
    exe = checkout / ".venv" / "bin" / "topgun"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [str(exe), "bench", *args, "-q", "--no-default-thresholds", "--json", str(out)]
        env = dict(os.environ, PYTHONPATH="")
        subprocess.run(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout, check=False)
        return json.loads(out.read_text()) if out.exists() else {}


def median(values: List[Any]) -> Optional[float]:
    nums = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(nums), 3) if nums else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="checkout A (the baseline)")
    p.add_argument("--b", required=True, help="checkout B (the change)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    p.add_argument("--json", help="write every run and the medians here")
    p.add_argument("bench", nargs=argparse.REMAINDER, help="-- then the topgun bench arguments")
    a = p.parse_args()
    args = a.bench[1:] if a.bench[:1] == ["--"] else a.bench
    if not args:
        sys.exit("give the topgun bench arguments after --")
    sides = {"A": Path(a.a).resolve(), "B": Path(a.b).resolve()}
    runs: Dict[str, List[Dict[str, Any]]] = {"A": [], "B": []}
    for i in range(1, a.rounds + 1):
        for side, checkout in sides.items():
            doc = run(checkout, args, a.timeout)
            row = figures(doc)
            runs[side].append({"figures": row, "doc": doc})
            print(f"round {i} {side}: " + ", ".join(f"{k} {v}" for k, v in row.items() if v is not None), flush=True)
    medians = {side: {k: median([r["figures"].get(k) for r in rows]) for k in FIGURES} for side, rows in runs.items()}
    print(f"\nmedians of {a.rounds} ({' '.join(args)}):")
    for k in FIGURES:
        va, vb = medians["A"][k], medians["B"][k]
        ratio = f"  B/A {vb / va:.2f}" if va and vb is not None else ""
        print(f"  {k:22} A {va}  B {vb}{ratio}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": args, "sides": {k: str(v) for k, v in sides.items()},
                                            "medians": medians, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
