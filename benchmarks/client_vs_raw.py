"""Acknowledged writes/s: the topgun client next to a minimal raw sender, against one real server node.

Starts one ``topgun-server`` 2.2.0 node (``TOPGUN_WRITEBEHIND_CAPACITY=0``, ``RUST_LOG=warn``) via
``topgun.testing.realserver.RealServer``, then runs every contender ``--runs`` times, interleaved
(run 1 of each, then run 2 of each, ...), and prints the median rate of each and its ratio to the
best raw sender. Every contender writes ``--ops`` fresh keys (its own per run) with the same small
value, and a run ends when the server has acknowledged every one of them.

Contenders:

* ``raw``: the least a sender can do. Our ``WebSocketTransport``, msgpack, pipelined ``OP_BATCH``
  frames of ``--raw-frame`` ops in key order with at most ``--raw-window`` frames unacknowledged;
  an ``ERROR`` (429/500) makes it resend its unacknowledged frames, and so does 2 s without an ack.
  No validation, no HLC, no per-write bookkeeping.
* ``raw-grouped``: the same, but every ``window x frame`` keys are sorted by partition before they
  are cut into frames (the server runs one task per partition a frame touches); by default frames
  of 500 and 4 in flight, the client's ``batch_size`` and ``max_in_flight``.
* ``client put_all``: one ``MapHandle.put_all`` of all the keys.
* ``client set_async``: ``--greenlets`` greenlets calling ``set_async`` over their share of the keys,
  then waiting for every AsyncResult.
* ``client put_all x G``: ``--greenlets`` greenlets, each ``put_all`` of chunks of 1000 keys.

Building the (key, value) list is not timed; turning it into wire ops, encoding, sending and
waiting for acks is. Columns: ``cpu us/op`` is this process's CPU per write (``gc``: the part
spent in the cyclic garbage collector), ``server us/op`` the server process's CPU per write.

Run::

    python benchmarks/client_vs_raw.py                    # 50 000 writes x 3 runs per contender
    python benchmarks/client_vs_raw.py --runs 5 --profile # plus GC, frame spread and cProfile of put_all
    python benchmarks/client_vs_raw.py --breakdown        # CPU per stage of the write path, no server

Figures and their analysis: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import io
import logging
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import msgpack

from topgun.client import TopGunClient
from topgun.protocol import codec, hashing
from topgun.testing.realserver import RealServer, ensure_server_binary
from topgun.transport.websocket import WebSocketTransport

Items = List[Tuple[str, Any]]
TARGET = 0.80


def make_items(prefix: str, n: int) -> Items:
    return [(f"{prefix}-{i:07d}", {"n": i, "name": "user", "tags": ["a", "b"]}) for i in range(n)]


# ------------------------------------------------------------------------------------ raw sender


def raw_sender(url: str, items: Items, frame_ops: int, window: int, grouped: bool) -> Dict[str, int]:
    """Send ``items`` as pipelined OP_BATCH frames; return once every frame is acknowledged."""
    transport = WebSocketTransport.connect(url, 5.0)
    pack = msgpack.Packer(use_bin_type=True).pack
    unpack = msgpack.unpackb
    slots = gevent.lock.BoundedSemaphore(window)
    inflight: Dict[str, Tuple[float, bytes]] = {}   # last op id -> (sent at, frame)
    done = gevent.event.Event()
    state = {"frames": 0, "acked": 0, "errors": 0, "resent": 0, "sending": 1}

    def resend(older_than: float) -> None:
        # The server drops a frame it answers with ERROR, or (past its 5 s operation timeout)
        # silently: send whatever is still unacknowledged again. Duplicates are harmless.
        now = time.monotonic()
        for last_id, (sent, frame) in list(inflight.items()):
            if now - sent >= older_than and last_id in inflight and not transport.closed:
                inflight[last_id] = (now, frame)
                state["resent"] += 1
                transport.send(frame)

    def after_error() -> None:
        gevent.sleep(0.02)
        resend(0.0)

    def watchdog() -> None:
        while True:
            gevent.sleep(0.5)
            resend(2.0)

    def reader() -> None:
        while True:
            data = transport.recv()
            if data is None:
                return
            msg = unpack(data, raw=False, strict_map_key=False)
            kind = msg.get("type")
            if kind == "OP_ACK":
                if inflight.pop(msg["payload"]["lastId"], None) is not None:
                    state["acked"] += 1
                    slots.release()
                    if not inflight and not state["sending"]:
                        done.set()
            elif kind == "ERROR":
                state["errors"] += 1
                helpers.spawn(after_error)

    helpers = gevent.pool.Group()
    helpers.spawn(reader)
    helpers.spawn(watchdog)
    try:
        millis = int(time.time() * 1000)
        chunk = frame_ops * window if grouped else frame_ops
        next_id = 0
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            if grouped:
                part = sorted(part, key=lambda kv: hashing.partition_id(kv[0]))
            for f in range(0, len(part), frame_ops):
                ops = []
                for key, value in part[f:f + frame_ops]:
                    next_id += 1
                    ops.append({"id": str(next_id), "mapName": "bench", "key": key, "opType": "PUT",
                                "record": {"value": value,
                                           "timestamp": {"millis": millis, "counter": next_id, "nodeId": "raw"}}})
                frame = pack({"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "APPLIED"}})
                slots.acquire()
                inflight[ops[-1]["id"]] = (time.monotonic(), frame)
                state["frames"] += 1
                transport.send(frame)
        state["sending"] = 0
        if inflight:
            done.wait()
    finally:
        helpers.kill()
        transport.close()
    return state


# ------------------------------------------------------------------------------------ client


def client_put_all(client: TopGunClient, items: Items, greenlets: int) -> None:
    client.map("bench").put_all(items)


def client_set_async(client: TopGunClient, items: Items, greenlets: int) -> None:
    bench = client.map("bench")
    share = (len(items) + greenlets - 1) // greenlets

    def worker(part: Items) -> None:
        results = [bench.set_async(key, value) for key, value in part]
        for result in results:
            result.get()

    gevent.joinall([gevent.spawn(worker, items[i:i + share]) for i in range(0, len(items), share)],
                   raise_error=True)


def client_put_all_chunks(client: TopGunClient, items: Items, greenlets: int) -> None:
    bench = client.map("bench")
    chunks = [items[i:i + 1000] for i in range(0, len(items), 1000)]

    def worker(mine: List[Items]) -> None:
        for chunk in mine:
            bench.put_all(chunk)

    gevent.joinall([gevent.spawn(worker, chunks[g::greenlets]) for g in range(greenlets)], raise_error=True)


CLIENT_MODES: Dict[str, Callable[[TopGunClient, Items, int], None]] = {
    "client put_all": client_put_all,
    "client set_async": client_set_async,
    "client put_all x G": client_put_all_chunks,
}


# ------------------------------------------------------------------------------------ harness


class Result:
    def __init__(self) -> None:
        self.rates: List[float] = []
        self.cpu_us: List[float] = []
        self.server_cpu_us: List[float] = []
        self.gc_us: List[float] = []
        self.notes: List[str] = []

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


class GcTimer:
    """CPU time spent in the cyclic garbage collector, from gc.callbacks."""

    def __init__(self) -> None:
        self.seconds, self.collections, self._start = 0.0, [0, 0, 0], 0.0

    def __call__(self, phase: str, info: Dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[info["generation"]] += 1

    def __enter__(self) -> "GcTimer":
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self)


SERVER_PID: List[int] = []


def server_cpu_s() -> float:
    """User + system CPU seconds of the server process so far (Linux /proc), 0.0 elsewhere."""
    try:
        with open(f"/proc/{SERVER_PID[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, OSError, ValueError):
        return 0.0


def timed(fn: Callable[[], Any], n: int, result: Result) -> Any:
    hashing._cache.clear()  # no contender profits from keys hashed by another one
    with GcTimer() as gct:
        wall, cpu, server = time.perf_counter(), time.process_time(), server_cpu_s()
        out = fn()
        wall, cpu, server = time.perf_counter() - wall, time.process_time() - cpu, server_cpu_s() - server
    result.rates.append(n / wall)
    result.cpu_us.append(cpu / n * 1e6)
    result.gc_us.append(gct.seconds / n * 1e6)
    result.server_cpu_us.append(server / n * 1e6)
    return out


def run_raw(url: str, name: str, run: int, args: argparse.Namespace, result: Result) -> None:
    items = make_items(f"{name}{run}", args.ops)
    if name == "raw-grouped":
        frame, window = args.grouped_frame, args.grouped_window
    else:
        frame, window = args.raw_frame, args.raw_window
    state = timed(lambda: raw_sender(url, items, frame, window, grouped=name == "raw-grouped"), args.ops, result)
    if state["errors"]:
        result.notes.append(f"run {run}: {state['errors']} ERRORs, {state['resent']} frames resent")


def run_client(url: str, name: str, run: int, args: argparse.Namespace, result: Result) -> None:
    items = make_items(f"{name.replace(' ', '')}{run}", args.ops)
    client = TopGunClient(url, request_timeout=600.0)
    try:
        timed(lambda: CLIENT_MODES[name](client, items, args.greenlets), args.ops, result)
        stats = client.runtime.engine.stats
        reconnects = getattr(client.runtime.provider, "reconnects", 0)
        if stats.get("resent") or stats.get("server_errors") or reconnects:
            result.notes.append(f"run {run}: {stats.get('server_errors', 0)} ERRORs, {stats['resent']} ops resent, "
                                f"{reconnects} reconnects")
        assert stats["acked"] == args.ops, stats
    finally:
        client.close()


_BLOCKING = ("sleep", "wait", "get", "switch", "recv", "recv_into", "sendall", "_wait", "wait_on_watcher")


def _area(filename: str, func: str) -> str:
    """Which part of the client (or of its dependencies) a profiled function belongs to."""
    if "topgun/" in filename:
        return "topgun/" + filename.rsplit("topgun/", 1)[1]
    if "gevent" in filename or "greenlet" in func or "gevent" in func:
        return "gevent (hub, switches, events)"
    if "msgpack" in func or "Packer" in func:
        return "msgpack (C)"
    if "socket" in func or "_socket" in filename:
        return "socket syscalls"
    return "other: " + (func if filename == "~" else filename.rsplit("/", 1)[-1])


def frame_spread(url: str, n: int) -> str:
    """Median and range of distinct partitions per OP_BATCH frame the client sends in one put_all."""
    import topgun.engine.engine as engine_module
    spreads: List[int] = []
    real = codec.encode_op_batch

    def spy(ops: Any, count: int, *args: Any) -> bytes:
        ops = list(ops)
        spreads.append(len({hashing.partition_id(op["key"]) for op in ops}))
        return real(iter(ops), count, *args)

    client = TopGunClient(url, request_timeout=600.0)
    engine_module.codec.encode_op_batch = spy  # type: ignore[assignment]
    try:
        client.map("bench").put_all(make_items("spread", n))
    finally:
        engine_module.codec.encode_op_batch = real  # type: ignore[assignment]
        client.close()
    return f"median {statistics.median(spreads):.0f} (min {min(spreads)}, max {max(spreads)}, {len(spreads)} frames)"


def _grouped_spread(args: argparse.Namespace) -> str:
    items = make_items("spread-raw", args.ops)
    chunk, frame = args.grouped_frame * args.grouped_window, args.grouped_frame
    spreads = []
    for start in range(0, len(items), chunk):
        part = sorted(items[start:start + chunk], key=lambda kv: hashing.partition_id(kv[0]))
        spreads += [len({hashing.partition_id(k) for k, _ in part[f:f + frame]}) for f in range(0, len(part), frame)]
    return f"{statistics.median(spreads):.0f}"


def profile_client(url: str, args: argparse.Namespace) -> str:
    """Where one client put_all spends its CPU: GC measured unprofiled, then cProfile by area."""
    out = io.StringIO()
    client = TopGunClient(url, request_timeout=600.0)
    try:
        items = make_items("profile-a", args.ops)
        hashing._cache.clear()
        with GcTimer() as gct:
            wall, cpu = time.perf_counter(), time.process_time()
            client.map("bench").put_all(items)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = args.ops
        print(f"unprofiled put_all of {n}: {n / wall:,.0f} writes/s, client CPU {cpu / n * 1e6:.1f} us/op, "
              f"of which cyclic GC {gct.seconds / n * 1e6:.1f} us/op "
              f"({gct.collections[0]}/{gct.collections[1]}/{gct.collections[2]} collections of gen 0/1/2)",
              file=out)
        items = make_items("profile-b", args.ops)
        hashing._cache.clear()
        profiler = cProfile.Profile()
        gc.disable()  # GC was measured above; here it would be charged to whatever allocated
        try:
            profiler.enable()
            client.map("bench").put_all(items)
            profiler.disable()
        finally:
            gc.enable()
    finally:
        client.close()
    print(f"partitions touched per OP_BATCH frame (the server does one task per partition): "
          f"client put_all {frame_spread(url, args.ops)}, raw-grouped ~{args.ops and _grouped_spread(args)}",
          file=out)
    stats = pstats.Stats(profiler)
    areas: Dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "gevent" in filename and func in _BLOCKING:
            continue  # their own time is mostly time switched out to the hub (waiting), not CPU
        areas[_area(filename, func)] = areas.get(_area(filename, func), 0.0) + tottime
    total = sum(areas.values())
    print("\ncProfile of a second put_all with GC off, own time by area (profiler overhead included; "
          "time blocked in gevent left out), us per write:", file=out)
    for area, seconds in sorted(areas.items(), key=lambda kv: -kv[1])[:18]:
        print(f"  {seconds / args.ops * 1e6:7.2f}  {seconds / total:5.1%}  {area}", file=out)
    print("\ntop functions by own time:", file=out)
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


class _StubConn:
    """Stands in for a Connection: frames are counted, never sent; acks come from the test."""

    is_open = True
    url = "stub://"
    cid = 1  # the engine keys its per-connection ack order by it

    def __init__(self) -> None:
        self.frames = 0

    def expect(self, key: Any) -> gevent.event.AsyncResult:
        return gevent.event.AsyncResult()

    def send_raw(self, data: bytes) -> None:
        self.frames += 1

    def forget(self, key: Any, result: Any = None) -> None:
        pass


class _StubProvider:
    routing_version = 0
    last_error = None

    def __init__(self, conn: _StubConn) -> None:
        self.conn = conn

    def connection_for_key(self, key: str) -> _StubConn:
        return self.conn

    any_connection = lambda self: self.conn  # noqa: E731

    def open_connections(self) -> List[_StubConn]:
        return [self.conn]


def breakdown(n: int) -> str:
    """CPU per write of each stage of the client's write path, with no network and GC off."""
    from types import SimpleNamespace

    from topgun.clock import GeventClock
    from topgun.engine.engine import WriteEngine
    from topgun.maps import MapHandle
    from topgun.protocol.hlc import HLC

    clock = GeventClock()
    conn = _StubConn()
    engine = WriteEngine(_StubProvider(conn), clock=clock, max_in_flight=10 ** 9)  # type: ignore[arg-type]
    runtime: Any = SimpleNamespace(engine=engine, hlc=HLC("bench", clock.now_ms), near_caches={}, outbox=None)
    handle = MapHandle(SimpleNamespace(runtime=runtime), "bench")  # type: ignore[arg-type]
    items = make_items("breakdown", n)
    hashing._cache.clear()
    stages: List[Tuple[str, float]] = []

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        start = time.process_time()
        out = fn()
        stages.append((name, (time.process_time() - start) / n * 1e6))
        return out

    gc.disable()
    try:
        writes = stage("build and queue: key and value checks, HLC, PendingWrite  [maps._put, engine.submit_put]",
                       lambda: [handle._put(runtime, k, v, None, None) for k, v in items])
        ops = [w.wire() for w in writes]
        stage("flush: route, busy map, sort by partition (fnv1a32), encode OP_BATCH  [engine._flush_once]",
              engine._flush_once)
        batches = list(engine._inflight.items())

        def ack_all() -> None:
            for bid, batch in batches:
                reply = gevent.event.AsyncResult()
                reply.set(SimpleNamespace(achieved_level="APPLIED"))
                engine._batch_done(bid, reply)
        stage("acks: release the batch, finish each write  [engine._batch_done]", ack_all)
        stage("wait: collect every result  [engine.wait]", lambda: engine.wait(writes))

        def reap() -> None:
            heap = engine._deadlines
            while heap and heap[0][2].done:
                heapq.heappop(heap)
        stage("deadline heap: drop finished entries  [engine._reaper]", reap)
        hashing._cache.clear()
        stage("of which: partition hash of each key, uncached  [hashing.partition_id]",
              lambda: [hashing.partition_id(k) for k, _ in items])
        stage("of which: msgpack of the OP_BATCH frames  [codec.encode_wire]",
              lambda: [codec.encode_wire({"type": "OP_BATCH", "payload": {"ops": ops[i:i + 500]}})
                       for i in range(0, n, 500)])
    finally:
        gc.enable()
    out = io.StringIO()
    print(f"client write path without network, GC off, {n} writes ({conn.frames} frames), CPU us per write:",
          file=out)
    total = 0.0
    for name, us in stages:
        if not name.startswith("of which"):
            total += us
        print(f"  {us:6.2f}  {name}", file=out)
    print(f"  {total:6.2f}  total (not counting the 'of which' lines)", file=out)
    return out.getvalue()


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=50_000, help="writes per run (default 50000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--raw-frame", type=int, default=100, help="raw: ops per OP_BATCH frame (default 100)")
    parser.add_argument("--raw-window", type=int, default=4, help="raw: frames in flight (default 4)")
    parser.add_argument("--grouped-frame", type=int, default=500,
                        help="raw-grouped: ops per frame (default 500, the client's batch_size)")
    parser.add_argument("--grouped-window", type=int, default=4,
                        help="raw-grouped: frames in flight (default 4: 2000 ops, the client's max_in_flight)")
    parser.add_argument("--greenlets", type=int, default=8, help="client: greenlets for set_async (default 8)")
    parser.add_argument("--only", action="append", help="run only these contenders (repeatable)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one client put_all run")
    parser.add_argument("--breakdown", action="store_true",
                        help="only time each stage of the client's write path, without a server")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log topgun INFO (-v) or DEBUG (-vv)")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.breakdown:
        print(breakdown(args.ops))
        return 0
    contenders = ["raw", "raw-grouped", *CLIENT_MODES]
    if args.only:
        contenders = [c for c in contenders if c in args.only]
    results = {name: Result() for name in contenders}
    # SIGTERM (e.g. from `timeout`) becomes KeyboardInterrupt, so the server is always stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = tempfile.mkdtemp(prefix="topgun-bench-")
    server = RealServer(ensure_server_binary(), workdir, unbounded_write_behind=True,
                        extra_env={"RUST_LOG": "warn"})
    with server:
        SERVER_PID[:] = [server.pid or 0]
        print(f"server {server.url} (TOPGUN_WRITEBEHIND_CAPACITY=0, RUST_LOG=warn); "
              f"{args.ops} writes per run, {args.runs} runs, interleaved", flush=True)
        for run in range(1, args.runs + 1):
            for name in contenders:
                if name.startswith("raw"):
                    run_raw(server.url, name, run, args, results[name])
                else:
                    run_client(server.url, name, run, args, results[name])
                print(f"  run {run} {name:<20} {results[name].rates[-1]:>9,.0f} writes/s", flush=True)
        profile = profile_client(server.url, args) if args.profile else ""

    raws = [results[n].median for n in ("raw", "raw-grouped") if n in results]
    best_raw = max(raws) if raws else None
    print()
    print(f"{'contender':<20}{'median/s':>9}  {'runs':<30}{'cpu us/op':>10}{'(gc)':>7}{'server us/op':>13}"
          f"{'vs best raw':>12}")
    for name, result in results.items():
        runs = " ".join(f"{r / 1000:.1f}K" for r in result.rates)
        ratio = f"{result.median / best_raw:.0%}" if best_raw else "-"
        print(f"{name:<20}{result.median:>9,.0f}  {runs:<30}{statistics.median(result.cpu_us):>10.1f}"
              f"{statistics.median(result.gc_us):>7.1f}{statistics.median(result.server_cpu_us):>13.1f}{ratio:>12}")
        for note in result.notes:
            print(f"{'':<20}{note}")
    clients = {n: r.median for n, r in results.items() if n.startswith("client")}
    if clients and best_raw:
        best = max(clients, key=clients.get)  # type: ignore[arg-type]
        ratio = clients[best] / best_raw
        verdict = "meets" if ratio >= TARGET else "misses"
        print(f"\nbest client path: {best}, {ratio:.0%} of the best raw sender "
              f"({verdict} the {TARGET:.0%} target)")
    if profile:
        print("\nprofile of the client put_all path:\n" + profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
