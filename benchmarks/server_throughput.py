"""Acknowledged writes/s of the embedded dev cluster (3 nodes in one process), raw sender, batches.

Starts ``python -m topgun.server --nodes 3 --port 0`` as a subprocess (one core for the whole
cluster, the other for this sender), then for every mode runs ``--runs`` timed runs and prints
the median. Each run writes ``--ops`` fresh keys as pipelined OP_BATCH frames of ``--frame`` ops,
at most ``--window`` unacknowledged frames per connection, write concern REPLICATED (so every
op is applied on its owner and on its backup before the ack). Frames are encoded before the
clock starts: what is measured is the cluster, not the sender.

Modes:

* ``owner``: one connection per node; every frame holds keys of one owner and goes to it
  (what a partition-aware client does).
* ``dumb``: one connection to n1 only; n1 forwards other owners' ops (what a client without the
  partition map gets).

Run::

    python benchmarks/server_throughput.py            # 300 000 writes x 3 runs per mode
    python benchmarks/server_throughput.py --ops 100000 --runs 5 --modes owner

Recorded 2026-11-26 (2 cores shared with other engineers' test runs, load average about 6;
Python 3.11, gevent 26.9, msgpack 1.2; median of 3 interleaved runs of 300 000 fresh keys,
REPLICATED, frames of 100 ops, window 16). Wall-clock rates swing about 1.5x between runs on
this machine; the server's CPU per write is the stable figure:

    owner    59,310 writes/s  (runs 66,525 / 59,310 / 52,181)   server  8.5 us CPU/write
    dumb     43,862 writes/s  (runs 41,760 / 43,862 / 47,103)   server 11.9 us CPU/write

At 8.5 us of server CPU per write, one free core sustains about 115 000 acknowledged REPLICATED
writes/s; what a load test measures is the client. Most of that time is msgpack decoding of the
client's op dicts, op validation, and the two LWW applies (owner and backup); the server process
raises the GC threshold (``__main__``), which alone took it from about 13 us.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import gevent
import gevent.event
import gevent.lock
import msgpack

from topgun.protocol.hashing import partition_id
from topgun.transport.websocket import WebSocketTransport

ROOT = Path(__file__).resolve().parents[1]


def start_cluster(nodes: int) -> "tuple[subprocess.Popen[bytes], Dict[str, str]]":
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "topgun.server", "--nodes", str(nodes), "--port", "0"],
                            stdout=subprocess.PIPE, env=env, start_new_session=True)
    urls: Dict[str, str] = {}
    assert proc.stdout is not None
    while len(urls) < nodes:
        line = proc.stdout.readline().decode()
        match = re.fullmatch(r"READY (\S+) (\S+)\n", line)
        if not match:
            proc.kill()
            raise SystemExit(f"cluster did not start: {line!r}")
        urls[match.group(1)] = match.group(2)
    return proc, urls


def owners(url: str) -> List[str]:
    transport = WebSocketTransport.connect(url, 5.0)
    try:
        transport.send(msgpack.packb({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}}))
        while True:
            msg = msgpack.unpackb(transport.recv(), raw=False)
            if msg["type"] == "PARTITION_MAP":
                parts = sorted(msg["payload"]["partitions"], key=lambda p: p["partitionId"])
                return [p["ownerNodeId"] for p in parts]
    finally:
        transport.close()


def build_frames(run: int, n_ops: int, frame_ops: int, owner_of: List[str], by_owner: bool) -> Dict[str, List[bytes]]:
    """Encoded OP_BATCH frames per target node id ("*" = any)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    millis = int(time.time() * 1000)
    groups: Dict[str, List[str]] = {}
    for i in range(n_ops):
        key = f"r{run}-{i:07d}"
        groups.setdefault(owner_of[partition_id(key)] if by_owner else "*", []).append(key)
    frames: Dict[str, List[bytes]] = {}
    op_id = 0
    for target, keys in groups.items():
        for start in range(0, len(keys), frame_ops):
            ops = []
            for key in keys[start:start + frame_ops]:
                op_id += 1
                ops.append({"id": str(op_id), "mapName": "bench", "key": key, "opType": "PUT",
                            "record": {"value": {"n": op_id, "name": "user"},
                                       "timestamp": {"millis": millis, "counter": op_id, "nodeId": "bench"}}})
            frames.setdefault(target, []).append(
                pack({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}}))
    return frames


def send_all(url: str, frames: List[bytes], window: int) -> int:
    """Pipeline ``frames`` with at most ``window`` unacknowledged; returns the ops acknowledged."""
    transport = WebSocketTransport.connect(url, 5.0)
    slots = gevent.lock.Semaphore(window)
    done = gevent.event.Event()
    state = {"acked": 0, "errors": 0}

    def reader() -> None:
        while state["acked"] < len(frames):
            data = transport.recv()
            if data is None:
                break
            msg = msgpack.unpackb(data, raw=False)
            if msg["type"] == "OP_ACK":
                state["acked"] += 1
                slots.release()
            elif msg["type"] == "ERROR":
                state["errors"] += 1
                print("ERROR", msg["payload"], file=sys.stderr)
                slots.release()
        done.set()

    read = gevent.spawn(reader)
    try:
        for frame in frames:
            slots.acquire()
            transport.send(frame)
        done.wait()
    finally:
        read.kill()
        transport.close()
    return state["acked"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(run: int, mode: str, urls: Dict[str, str], owner_of: List[str], args: argparse.Namespace,
            server_pid: int) -> "tuple[float, float]":
    """(acknowledged writes/s, server CPU microseconds per write)."""
    frames = build_frames(run, args.ops, args.frame, owner_of, by_owner=mode == "owner")
    targets = {urls[n]: fs for n, fs in frames.items()} if mode == "owner" else {urls["n1"]: frames["*"]}
    cpu0, start = cpu_seconds(server_pid), time.perf_counter()
    jobs = [gevent.spawn(send_all, url, fs, args.window) for url, fs in targets.items()]
    gevent.joinall(jobs, raise_error=True)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(server_pid) - cpu0
    acked_frames = sum(j.value for j in jobs)
    assert acked_frames == sum(len(fs) for fs in frames.values()), "not every frame was acknowledged"
    return args.ops / elapsed, cpu / args.ops * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=300_000)
    parser.add_argument("--frame", type=int, default=100)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--modes", default="owner,dumb")
    args = parser.parse_args()
    proc, urls = start_cluster(args.nodes)
    try:
        owner_of = owners(urls["n1"])
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        rates: Dict[str, List[float]] = {m: [] for m in modes}
        costs: Dict[str, List[float]] = {m: [] for m in modes}
        run = 0
        for _ in range(args.runs):
            for mode in modes:           # interleaved, so drift hits every mode alike
                run += 1
                rate, cost = one_run(run, mode, urls, owner_of, args, proc.pid)
                rates[mode].append(rate)
                costs[mode].append(cost)
                print(f"  run {run:2d} {mode:6s} {rate:10,.0f} writes/s  server {cost:5.1f} us CPU/write",
                      file=sys.stderr)
        print(f"{args.nodes} nodes in one process, {args.ops} REPLICATED writes/run, frames of {args.frame}, "
              f"window {args.window}, median of {args.runs}:")
        for mode in modes:
            print(f"  {mode:6s} {statistics.median(rates[mode]):10,.0f} writes/s  "
                  f"server {statistics.median(costs[mode]):5.1f} us CPU/write  "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates[mode])})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
