"""Storage benchmarks (issue 15): write throughput with SQLite storage vs memory, cached vs uncached get().

```console
$ python benchmarks/bench_storage.py --runs 3        # about a minute; writes results/storage.{md,json}
```

One dev-server node in its own process (``ProcessCluster(1)``); the clients run here, on this
process's hub (``thread_mode="direct"``). Rows, each the median of ``--runs`` runs, interleaved:

- ``writes``: acknowledged writes/s for ``set_async`` (a pipeline of ``--writes`` fresh keys,
  then waiting for all) and ``put_all``, with ``storage=None`` and with ``storage=<file>``; for
  SQLite also the longest single SQLite transaction (``max_commit_ms``: how long the hub was held).
- ``reads``: ``get()`` of ``--keys`` keys, each read ``--reads`` times in total, with a
  near cache (after one warming pass) and without, in the same run; per-get microseconds and the ratio.
- ``visibility``: another client writes cached keys at a steady ``--rate`` for ``--seconds``;
  the time from its ``set_async`` to the near cache holding the new value (the next ``get()`` returns
  it), p50/p99/max.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lib  # noqa: E402

import topgun  # noqa: E402
from topgun.server.process import ProcessCluster  # noqa: E402


def _client(url: str, **kw: Any) -> topgun.TopGunClient:
    return topgun.TopGunClient(url, thread_mode="direct", **kw)


def writes(url: str, n: int, storage: Any, tag: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    client = _client(url, storage=storage, request_timeout=60.0)
    try:
        m = client.map(f"w-{tag}")
        start = time.perf_counter()
        results = [m.set_async(f"s{i}", {"n": i, "name": "user"}) for i in range(n)]
        for r in results:
            r.get()
        out["set_async_per_s"] = n / (time.perf_counter() - start)
        start = time.perf_counter()
        m.put_all({f"p{i}": {"n": i, "name": "user"} for i in range(n)}, timeout=60.0)
        out["put_all_per_s"] = n / (time.perf_counter() - start)
        outbox = client.stats["outbox"]
        if outbox is not None:
            out["max_commit_ms"] = outbox["max_commit_ms"]
    finally:
        client.close()
    return out


def reads(url: str, keys: int, total: int) -> Dict[str, Any]:
    seed = _client(url)
    seed.map("r").put_all({f"k{i}": {"n": i} for i in range(keys)})
    seed.close()
    cached_client, plain_client = _client(url), _client(url)
    try:
        cached = cached_client.map("r", near_cache=topgun.NearCache(max_entries=keys * 2))
        plain = plain_client.map("r")
        deadline = time.monotonic() + 10
        while not cached_client.stats["near_cache"].get("r", {}).get("live") and time.monotonic() < deadline:
            cached.get("k0")
            gevent.sleep(0.01)
        for i in range(keys):
            cached.get(f"k{i}")
        out = {}
        for name, handle in (("uncached", plain), ("cached", cached)):
            start = time.perf_counter()
            for j in range(total):
                handle.get(f"k{j % keys}")
            out[f"{name}_us"] = (time.perf_counter() - start) / total * 1e6
        out["ratio"] = out["uncached_us"] / out["cached_us"]
        out["hit_rate"] = (cached_client.stats["near_cache"]["r"]["hits"]
                           / max(1, cached_client.stats["near_cache"]["r"]["hits"]
                                 + cached_client.stats["near_cache"]["r"]["misses"]))
        return out
    finally:
        cached_client.close()
        plain_client.close()


def visibility(url: str, keys: int, rate: float, seconds: float) -> Dict[str, Any]:
    reader_client, writer_client = _client(url), _client(url)
    try:
        reader = reader_client.map("v", near_cache=topgun.NearCache(max_entries=keys * 2))
        writer = writer_client.map("v")
        writer.put_all({f"k{i}": -1 for i in range(keys)})
        deadline = time.monotonic() + 10
        while not reader_client.stats["near_cache"].get("v", {}).get("live") and time.monotonic() < deadline:
            reader.get("k0")
            gevent.sleep(0.01)
        for i in range(keys):
            reader.get(f"k{i}")
        cache = reader_client.runtime.near_caches.get("v")
        assert cache is not None
        sent: Dict[int, float] = {}
        seen: List[float] = []
        original = cache.apply_event

        def timed(event: Any) -> None:  # when the cache holds the new value, the next get() returns it
            original(event)
            t = sent.pop(event.record.value, None) if event.record is not None else None
            if t is not None:
                seen.append(time.perf_counter() - t)
        cache.apply_event = timed  # type: ignore[method-assign]
        interval, n = 1.0 / rate, int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            sent[i] = time.perf_counter()
            writer.set_async(f"k{i % keys}", i)
        end = time.monotonic() + 5
        while sent and time.monotonic() < end:
            gevent.sleep(0.01)
        seen.sort()
        pct = lambda q: seen[min(len(seen) - 1, int(q * len(seen)))] * 1000  # noqa: E731
        return {"writes": n, "seen": len(seen), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": seen[-1] * 1000}
    finally:
        reader_client.close()
        writer_client.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--writes", type=int, default=20000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    runs: Dict[str, List[Dict[str, Any]]] = {"memory": [], "sqlite": [], "reads": [], "visibility": []}
    with tempfile.TemporaryDirectory() as tmp, ProcessCluster(1, log_dir=tmp) as cluster:
        url = cluster.urls[0]
        for r in range(args.runs):
            runs["memory"].append(writes(url, args.writes, None, f"m{r}"))
            runs["sqlite"].append(writes(url, args.writes, str(Path(tmp) / f"o{r}.db"), f"s{r}"))
            runs["reads"].append(reads(url, args.keys, args.reads))
            runs["visibility"].append(visibility(url, args.keys, args.rate, args.seconds))
    med = {name: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for name, rs in runs.items()}
    doc = {"machine": bench_lib.machine(), "commit": bench_lib.git_commit(), "args": vars(args), "median": med,
           "runs": runs}
    lines = [f"# storage benchmarks (commit {doc['commit']}, medians of {args.runs}; {doc['machine']['cpu']}, "
             f"{doc['machine']['cpus']} cpus)", "", "| row | memory | sqlite | sqlite/memory |", "|---|---|---|---|"]
    for k in ("set_async_per_s", "put_all_per_s"):
        lines.append(f"| writes/s, {k[:-6]} | {med['memory'][k]:,.0f} | {med['sqlite'][k]:,.0f} | "
                     f"{med['sqlite'][k] / med['memory'][k]:.2f} |")
    lines += [f"| longest SQLite transaction (hub held) | | {med['sqlite']['max_commit_ms']:.2f} ms | |", "",
              "| get() | us per call |", "|---|---|",
              f"| uncached | {med['reads']['uncached_us']:.1f} |", f"| near cache | {med['reads']['cached_us']:.2f} |",
              f"| ratio | {med['reads']['ratio']:.0f}x |", "",
              f"visibility through the cache under {args.rate:.0f} writes/s for {args.seconds:.0f}s: "
              f"p50 {med['visibility']['p50_ms']:.2f} ms, p99 {med['visibility']['p99_ms']:.2f} ms, "
              f"max {med['visibility']['max_ms']:.2f} ms ({med['visibility']['seen']:.0f} of "
              f"{med['visibility']['writes']:.0f} seen)"]
    text = "\n".join(lines) + "\n"
    print(text)
    (bench_lib.RESULTS / "storage.md").write_text(text)
    (bench_lib.RESULTS / "storage.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
