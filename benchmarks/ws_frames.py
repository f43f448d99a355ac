"""Per-frame cost of topgun's WebSocket transport vs the websocket-client library.

RESULTS, from ``python benchmarks/ws_frames.py`` (real topgun-server 2.2.0 on 127.0.0.1, Python 3.11.7,
websocket-client 1.9.2, a 2-vCPU Linux VM shared with other jobs; microseconds per frame, i.e. one
30-byte msgpack PING sent plus its PONG received, median of 3 interleaved runs of 5000 frames)::

    scenario       client                 wall us   cpu us   vs topgun (wall, cpu)
    round_trip     topgun                   62.89    27.94
    round_trip     websocket-client         65.78    26.91   1.05x, 0.96x
    pipelined      topgun                   13.09     7.53
    pipelined      websocket-client        425.23    14.14   32.50x, 1.88x
    pipelined      websocket-client+qa      18.05    13.70   1.38x, 1.82x
    pipelined_many topgun                    5.62     2.40
    encode         topgun                   0.340
    encode         websocket-client         2.697            7.9x

    syscalls per frame (strace -c, --only X --scenario Y):
    round_trip       topgun 2.0  (sendto 1, recvfrom 1)   websocket-client 4.1 (sendto 1, recvfrom 2, getrandom 1)
    pipelined        topgun 1.03 (sendto 1, one recvfrom per ~65 replies)   websocket-client 4.1
    pipelined_many   topgun 0.07

How to read it: strict request/response (``round_trip``: wait for each PONG) is dominated by the
server and the loopback; the two clients are within this box's noise (repeat runs moved both
between 35 and 65 us). With many requests in flight, which is what a gevent client with many
greenlets produces, topgun needs about half the client CPU per frame (one read syscall per burst
instead of two per frame, no getrandom per frame), and ``send_many`` cuts it to about a sixth.
Building one masked frame costs 0.34 us against 2.7 us. websocket-client's pipelined wall time is
the server's Nagle meeting the client's delayed ACK (44 ms per burst); the ``+qa`` row patches
TCP_QUICKACK into it the way our transport does, to compare framing alone.

*wall* is elapsed time per frame; *cpu* is this process's user+system CPU per frame, so the
client-side cost including its syscalls and the kernel's loopback work (the server is another
process). ``pipelined`` writes 100 PINGs with ``send`` and then reads 100 PONGs; ``pipelined_many``
writes each 100 with one ``send_many``; ``encode`` builds one masked frame in memory.

Run it::

    python benchmarks/ws_frames.py [--server PATH | --server python] [--frames N] [--runs N]
        [--only topgun|websocket-client] [--scenario round_trip|pipelined|pipelined_many]

``--server python`` uses a gevent-websocket echo server in a child process instead of the binary
(default /tmp/tgsrv/package/bin/topgun-server). ``--only``/``--scenario`` narrow the run, e.g. to
count one client's syscalls with ``strace -c``. A SIGALRM watchdog ends any run after 600 s.
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Any, Callable, Iterator

import msgpack
import websocket  # websocket-client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from topgun.transport.websocket import FrameWriter, WebSocketTransport  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_BINARY = "/tmp/tgsrv/package/bin/topgun-server"
BATCH = 100
WATCHDOG_S = 600        # the whole run, server start included, must finish within this

PYTHON_ECHO = """
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler
import msgpack
def app(environ, start_response):
    ws = environ["wsgi.websocket"]
    for _ in range(10_000_000):
        m = ws.receive()
        if m is None:
            break
        ws.send(msgpack.packb({**msgpack.unpackb(bytes(m)), "type": "PONG"}), binary=True)
    return []
server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
server.start()
print("PORT=%d" % server.server_port, flush=True)
server.serve_forever()
"""


class Server:
    """The server process: started in its own session and temp dir, stopped by pid."""

    def __init__(self, which: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="ws_frames_")
        if which == "python":
            cmd = [sys.executable, "-c", PYTHON_ECHO]
            env = dict(os.environ)
        else:
            cmd = [which, "--port", "0", "--node-id", "n1"]
            env = dict(os.environ, TOPGUN_NO_AUTH="1", RUST_LOG="warn",
                       TOPGUN_REDB_PATH=os.path.join(self.tmp, "tg.redb"))
        self.stderr = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=subprocess.PIPE, stderr=self.stderr,
                                     start_new_session=True)
        self.port = self._read_port(deadline=time.monotonic() + 15.0)

    def _read_port(self, deadline: float) -> int:
        assert self.proc.stdout is not None
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(b"PORT="):
                    return int(line[5:])
        self.stop()
        raise RuntimeError(f"server did not print PORT= within the deadline; got {buf!r}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def pings(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield msgpack.packb({"type": "PING", "timestamp": 1_700_000_000_000 + i})


def check_pong(data: Any) -> None:
    reply = msgpack.unpackb(data)
    if reply.get("type") != "PONG":
        raise RuntimeError(f"expected a PONG, got {reply!r}")


class TopgunClient:
    name = "topgun"

    def __init__(self, url: str) -> None:
        self.t = WebSocketTransport.connect(url, 5.0)
        self.send, self.recv = self.t.send, self.t.recv

    def close(self) -> None:
        self.t.close()


class WebsocketClientClient:
    name = "websocket-client"

    def __init__(self, url: str) -> None:
        # No socket timeout: its fastest setting (a timeout adds a poll() before every read).
        # The SIGALRM watchdog in main() bounds the run instead.
        self.ws = websocket.create_connection(url, timeout=None,
                                              sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.send, self.recv = self.ws.send_bytes, self.ws.recv

    def close(self) -> None:
        self.ws.close()


class WebsocketClientQuickack(WebsocketClientClient):
    """websocket-client plus TCP_QUICKACK before every recv, so pipelined runs don't stall 44 ms."""

    name = "websocket-client+qa"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        recv, setsockopt = self.ws.recv, self.ws.sock.setsockopt

        def recv_quickack() -> Any:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return recv()
        self.recv = recv_quickack


def round_trip(client: Any, frames: list[bytes]) -> None:
    send, recv = client.send, client.recv
    for frame in frames:
        send(frame)
        check_pong(recv())


def pipelined(client: Any, frames: list[bytes]) -> None:
    send, recv = client.send, client.recv
    for start in range(0, len(frames), BATCH):
        batch = frames[start:start + BATCH]
        for frame in batch:
            send(frame)
        for _ in batch:
            check_pong(recv())


def pipelined_many(client: Any, frames: list[bytes]) -> None:
    """Like pipelined, but each batch of 100 goes out in one send_many (topgun only)."""
    send_many, recv = client.t.send_many, client.recv
    for start in range(0, len(frames), BATCH):
        batch = frames[start:start + BATCH]
        send_many(batch)
        for _ in batch:
            check_pong(recv())


CASES: list[tuple[Callable[[Any, list[bytes]], None], Any]] = [
    (round_trip, TopgunClient), (round_trip, WebsocketClientClient),
    (pipelined, TopgunClient), (pipelined, WebsocketClientClient), (pipelined, WebsocketClientQuickack),
    (pipelined_many, TopgunClient),
]


def measure(make: Callable[[str], Any], url: str, scenario: Callable[[Any, list[bytes]], None],
            n: int) -> tuple[float, float]:
    """(wall us/frame, cpu us/frame) for one run on a fresh connection."""
    client = make(url)
    try:
        scenario(client, list(pings(200)))                      # warm up
        frames = list(pings(n))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        scenario(client, frames)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        client.close()
    return wall / n * 1e6, cpu / n * 1e6


def encode_cost() -> dict[str, float]:
    """Microseconds to build one masked PING frame, no I/O."""
    payload = next(pings(1))
    writer = FrameWriter(os.urandom(4))
    ours = min(timeit.repeat(lambda: writer.frame(payload), number=100_000, repeat=5)) / 100_000
    abnf = websocket.ABNF
    theirs = min(timeit.repeat(lambda: abnf.create_frame(payload, abnf.OPCODE_BINARY).format(),
                               number=20_000, repeat=5)) / 20_000
    return {"topgun": ours * 1e6, "websocket-client": theirs * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=DEFAULT_BINARY, help="server binary, or 'python'")
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["topgun", "websocket-client"])
    parser.add_argument("--scenario", choices=["round_trip", "pipelined", "pipelined_many"])
    args = parser.parse_args(argv)
    cases = [(scenario, client) for scenario, client in CASES
             if args.only in (None, client.name.split("+")[0]) and args.scenario in (None, scenario.__name__)
             and (client is not WebsocketClientQuickack or hasattr(socket, "TCP_QUICKACK"))]

    def watchdog(signum: int, frame: Any) -> None:
        raise TimeoutError(f"benchmark still running after {WATCHDOG_S}s")
    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(WATCHDOG_S)
    server = Server(args.server)
    try:
        print(f"server {args.server}, {args.frames} frames per run, median of {args.runs} runs, "
              f"python {sys.version.split()[0]}, websocket-client {websocket.__version__}")
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):          # interleaved, so drift in machine load hits every case alike
            for scenario, client in cases:
                runs.setdefault((scenario.__name__, client.name), []).append(
                    measure(client, server.url, scenario, args.frames))
        print(f"  {'scenario':<15}{'client':<21}{'wall us':>9}{'cpu us':>9}   vs topgun (wall, cpu)")
        for (scenario_name, name), samples in runs.items():
            wall, cpu = statistics.median(r[0] for r in samples), statistics.median(r[1] for r in samples)
            base = runs.get((scenario_name, "topgun"))
            ratio = ""
            if base and name != "topgun":
                bw, bc = statistics.median(r[0] for r in base), statistics.median(r[1] for r in base)
                ratio = f"   {wall / bw:.2f}x, {cpu / bc:.2f}x"
            print(f"  {scenario_name:<15}{name:<21}{wall:9.2f}{cpu:9.2f}{ratio}")
        if args.scenario is None:
            encode = encode_cost()
            for name in sorted({client.name for _, client in cases} & set(encode)):
                ratio = f"   {encode[name] / encode['topgun']:.1f}x" if name != "topgun" and "topgun" in encode else ""
                print(f"  {'encode':<15}{name:<21}{encode[name]:9.3f}{'':9}{ratio}")
    finally:
        signal.alarm(0)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
