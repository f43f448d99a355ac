"""Where the time goes in the throughput scenario: py-spy profiles of the client and of every node.

Starts the embedded 3-node cluster (one process per node), runs ``topgun bench throughput
--seeds ...`` under ``py-spy record`` and samples each node process at the same time, then
writes the top functions (self and inclusive share of samples) and the CPU used by each
process to results/profile_throughput_u<users>_b<batch>.md (raw samples: --raw-dir).
Needs py-spy (``pip install py-spy``).

    python benchmarks/bench_profile.py [--duration 20] [--users 50] [--batch-size 1]
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from bench_lib import REPO, RESULTS, machine

from topgun.server.process import ProcessCluster


def aggregate(raw: Path, top: int) -> Tuple[int, List[Tuple[float, str]], List[Tuple[float, str]]]:
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    share = lambda c: [(round(100.0 * v / max(total, 1), 1), k) for k, v in c.most_common(top)]  # noqa: E731
    return total, share(own), share(incl)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--users", default="50")
    p.add_argument("--batch-size", default="1")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-gil", action="store_true",
                   help="sample whenever a thread is not idle (syscalls like send() included), not only with the GIL")
    p.add_argument("--raw-dir", help="keep py-spy's raw samples here (default: a temporary directory)")
    a = p.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not spy:
        sys.exit("py-spy is not installed: pip install py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"u{a.users}_b{a.batch_size}" + ("_nogil" if a.no_gil else "")
    gil = [] if a.no_gil else ["--gil"]
    with tempfile.TemporaryDirectory() as tmp, ProcessCluster(3, log_dir=tmp) as cluster:
        raw = Path(a.raw_dir or tmp)
        raw.mkdir(parents=True, exist_ok=True)
        seeds = ",".join(cluster.urls)
        pids = {n: cluster.processes[n].pid for n in cluster.live}
        samplers = {n: subprocess.Popen([spy, "record", *gil, "-r", "200", "-d", str(int(a.duration) + 2),
                                         "-f", "raw", "-o", str(raw / f"profile_{tag}_{n}.txt"),
                                         "--pid", str(pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for n, pid in pids.items()}
        out = Path(tmp) / "bench.json"
        cmd = [spy, "record", *gil, "-r", "200", "-f", "raw", "-o", str(raw / f"profile_{tag}_client.txt"), "--",
               sys.executable, "-m", "topgun.loadtest.bench", "throughput", "--seeds", seeds, "--users", a.users,
               "--duration", str(a.duration), "--batch-size", a.batch_size, "--no-default-thresholds", "--quiet",
               "--json", str(out)] + [x for pid in pids.values() for x in ("--server-pid", str(pid))]
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=a.duration + 120)
        for proc in samplers.values():
            proc.wait(timeout=a.duration + 60)
        doc = json.loads(out.read_text())
        profiles = {key: aggregate(raw / f"profile_{tag}_{key}.txt", a.top) for key in ("client", *pids)}
    lines = [f"# Profile of `topgun bench throughput` (users {a.users}, batch {a.batch_size})", "",
             f"{machine()['cpu']}, {machine()['cpus']} CPUs. " + (
                 "py-spy at 200 Hz, every non-idle sample (system calls such as send() included)" if a.no_gil else
                 "py-spy --gil at 200 Hz: samples only while Python code holds the GIL (CPU work, not waiting)")
             + ". Shares are of each process's own samples.", "",
             f"Result: {doc['ops_per_s']:,.0f} ops/s, p50 {doc['p50_ms']} ms, p95 {doc['p95_ms']} ms, "
             f"CPU cores used {doc['cpu']['cpu_cores']}, load average at end {doc['cpu']['loadavg_end']}.", ""]
    names: Dict[str, str] = {"client": "client (topgun bench)", **{n: f"node {n}" for n in pids}}
    for key, title in names.items():
        total, own, incl = profiles[key]
        lines += [f"## {title}: {total} samples", "", "| self % | function | | inclusive % | function |",
                  "|---|---|---|---|---|"]
        for (s_pct, s_fn), (i_pct, i_fn) in zip(own, incl):
            lines.append(f"| {s_pct} | `{s_fn}` | | {i_pct} | `{i_fn}` |")
        lines.append("")
    (RESULTS / f"profile_throughput_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
