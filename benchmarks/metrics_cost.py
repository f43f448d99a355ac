"""CPU per acknowledged write with and without a metrics sink, against one real 2.2.0 server.

    python benchmarks/metrics_cost.py --runs 3 --writes 20000

Each run writes fresh keys with one ``put_all`` and reports this process's CPU per write
(``time.process_time``), contenders interleaved so machine load hits them alike: no sink,
``RecordingMetrics``, ``PrometheusMetrics`` (if prometheus-client is installed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List

import topgun
from topgun.metrics import RecordingMetrics
from topgun.testing.realserver import RealServer, ensure_server_binary


def sinks() -> Dict[str, Callable[[], Any]]:
    out: Dict[str, Callable[[], Any]] = {"none": lambda: None, "recording": RecordingMetrics}
    try:
        from prometheus_client import CollectorRegistry

        from topgun.contrib.prometheus import PrometheusMetrics
        out["prometheus"] = lambda: PrometheusMetrics(CollectorRegistry())
    except ImportError:
        pass
    return out


def one_run(url: str, sink: Any, writes: int, tag: str) -> float:
    with topgun.TopGunClient(url, metrics=sink, thread_mode="direct", request_timeout=60.0) as client:
        items = {f"{tag}-{i}": {"n": i, "name": "user"} for i in range(writes)}
        start = time.process_time()
        assert client.map("bench").put_all(items, timeout=60.0) == writes
        cpu = (time.process_time() - start) / writes * 1e6
        if isinstance(sink, RecordingMetrics):  # hooks run per OP_BATCH: this many for all the writes
            print(f"  recording: {len(sink.observations('topgun.write.batch.duration'))} batches "
                  f"acknowledged for {writes} writes")
        return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writes", type=int, default=20000)
    args = parser.parse_args()
    results: Dict[str, List[float]] = {name: [] for name in sinks()}
    with tempfile.TemporaryDirectory() as workdir:
        server = RealServer(ensure_server_binary(), workdir, extra_env={"RUST_LOG": "warn"}).start()
        try:
            for run in range(args.runs):
                for name, make in sinks().items():
                    results[name].append(one_run(server.url, make(), args.writes, f"{name}{run}"))
        finally:
            server.stop()
    print(f"{'sink':<12} {'median cpu us/write':>20}  runs")
    for name, runs in results.items():
        print(f"{name:<12} {statistics.median(runs):>20.2f}  {' '.join(f'{r:.2f}' for r in runs)}")


if __name__ == "__main__":
    main()
