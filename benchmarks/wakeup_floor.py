"""The CPU a gevent process pays per message when it sleeps between messages: a bare ping-pong.

Two processes, plain gevent TCP sockets on 127.0.0.1, a 4-byte length prefix and msgpack: the
client sends a CLUSTER_REPLICATE-sized request (13 writes), the server answers with a small
reply, ``--streams`` such exchanges run at once (one socket pair each), ``--pairs`` such process
pairs run side by side. Prints round trips per second and each side's CPU per message
(``getrusage``). This is the floor under the dev cluster's per-message cost: with one stream,
each process sleeps in ``epoll_wait`` and is woken for nearly every message; with several,
one wake-up serves several messages. ``--spin N`` makes every read try N non-blocking reads
with ``sched_yield()`` between them before it sleeps (the experiment in
results/perf_issue16.md, session 4).

    python benchmarks/wakeup_floor.py                  # 1 pair, 1 stream
    python benchmarks/wakeup_floor.py --streams 3
    python benchmarks/wakeup_floor.py --pairs 2 --spin 20
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import struct
import time
from typing import Any, List, Tuple

import gevent
import msgpack
from gevent import socket as gsocket

_LEN = struct.Struct(">I")
_WRITES = [["m", f"key{i}", {"v": i}, 1_700_000_000_000, 0, "n1"] for i in range(13)]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Reader:
    """Length-prefixed messages off one socket; ``spin`` non-blocking tries before each blocking read."""

    def __init__(self, sock: Any, spin: int) -> None:
        self.sock, self.spin, self.buf = sock, spin, b""

    def _read(self) -> bytes:
        raw = self.sock._sock
        for _ in range(self.spin):
            try:
                return raw.recv(65536)  # type: ignore[no-any-return]
            except BlockingIOError:
                os.sched_yield()
        return self.sock.recv(65536)  # type: ignore[no-any-return]

    def next(self) -> Any:
        while True:
            if len(self.buf) >= 4:
                (n,) = _LEN.unpack_from(self.buf)
                if len(self.buf) >= 4 + n:
                    msg, self.buf = msgpack.unpackb(self.buf[4:4 + n]), self.buf[4 + n:]
                    return msg
            data = self._read()
            if not data:
                return None
            self.buf += data


def _send(sock: Any, msg: Any) -> None:
    body = msgpack.packb(msg)
    sock.sendall(_LEN.pack(len(body)) + body)


def _serve(listener: Any, spin: int) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    reader = _Reader(conn, spin)
    while (msg := reader.next()) is not None:
        _send(conn, {"type": "CLUSTER_REPLY", "rid": msg["rid"]})
    conn.close()


def _stream(port: int, n: int, spin: int) -> None:
    sock = gsocket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    reader = _Reader(sock, spin)
    for rid in range(n):
        _send(sock, {"type": "CLUSTER_REPLICATE", "rid": rid, "writes": _WRITES})
        if reader.next() is None:
            raise ConnectionError("server closed early")
    sock.close()


def _server_process(ports: "multiprocessing.Queue[Any]", out: "multiprocessing.Queue[Any]", streams: int,
                    messages: int, spin: int) -> None:
    listeners = []
    for _ in range(streams):
        lst = gsocket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(streams)
        listeners.append(lst)
    ports.put([lst.getsockname()[1] for lst in listeners])
    start = _cpu()
    gevent.joinall([gevent.spawn(_serve, lst, spin) for lst in listeners], timeout=120)
    out.put(1e6 * (_cpu() - start) / messages)


def _client_process(ports: List[int], out: "multiprocessing.Queue[Any]", n: int, spin: int) -> None:
    start_cpu, start = _cpu(), time.monotonic()
    gevent.joinall([gevent.spawn(_stream, port, n, spin) for port in ports], timeout=120, raise_error=True)
    wall = time.monotonic() - start
    total = n * len(ports)
    out.put((total / wall, 1e6 * (_cpu() - start_cpu) / total))


def run_pair(streams: int, n: int, spin: int) -> Tuple[Any, Any]:
    """Start one server and one client process; returns their queues (server CPU, client rate and CPU)."""
    ctx = multiprocessing.get_context("fork")
    ports, server_out, client_out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_server_process, args=(ports, server_out, streams, n * streams, spin), daemon=True)
    server.start()
    client = ctx.Process(target=_client_process, args=(ports.get(timeout=10), client_out, n, spin), daemon=True)
    return (server, server_out), (client, client_out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000, help="round trips per stream (default 20000)")
    p.add_argument("--streams", type=int, default=1, help="socket pairs per process pair (default 1)")
    p.add_argument("--pairs", type=int, default=1, help="process pairs side by side (default 1)")
    p.add_argument("--spin", type=int, default=0, help="non-blocking reads tried before sleeping (default 0)")
    args = p.parse_args()
    pairs = [run_pair(args.streams, args.messages, args.spin) for _ in range(args.pairs)]
    for _, (client, _) in pairs:
        client.start()
    for i, ((server, server_out), (client, client_out)) in enumerate(pairs, 1):
        rate, client_cpu = client_out.get(timeout=180)
        server_cpu = server_out.get(timeout=30)
        client.join(10)
        server.join(10)
        print(f"pair {i}: {rate:,.0f} round trips/s, CPU per message: client {client_cpu:.1f} us, "
              f"server {server_cpu:.1f} us (streams {args.streams}, spin {args.spin})")


if __name__ == "__main__":
    main()
