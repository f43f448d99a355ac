"""The TLS row: acked writes/s and client CPU per write over wss:// vs plain ws://, same run.

One real ``topgun-server`` 2.2.0 node (unbounded write-behind), one nginx (``topgun.testing.nginx``,
certificate from a ``trustme`` test CA) with a TLS and a plain listener in front of it. Three
paths to the same node, interleaved round by round (``--rounds``, default 3) so that load on this
shared machine hits them alike; medians are reported:

* ``direct ws``: the client straight to the server;
* ``nginx ws``: through nginx, plain text;
* ``nginx wss``: through the same nginx, TLS (``ssl_context`` trusting the test CA).

Two workloads per path, each with a fresh client and fresh keys per run:

* ``put_all``: one ``put_all`` of ``--ops`` keys (batched frames, the throughput case);
* ``set``: ``--seq`` sequential ``set`` calls (one round trip each, the latency case).

Columns: acked writes/s, this process's CPU per write in microseconds (the client: encoding,
framing, TLS records, reads), and nginx's CPU per write (from ``/proc``). The client runs in
``thread_mode="direct"`` so all of its work is on this process's main thread.

Then the send path alone: ``WebSocketTransport.send`` of ``--frames`` binary frames (64 B and
4 KB payloads) into a sink process that reads and discards (stdlib ``ssl`` or plain), over a
loopback TCP connection, TLS vs plain, CPU microseconds per frame in this process: what TLS
adds to the hand-written frame path (one ``send`` per frame, one TLS record).

Run::

    python benchmarks/tls.py                  # 3 rounds, 20 000 put_all writes, 2 000 sets
    python benchmarks/tls.py --rounds 5 --ops 50000

Writes ``benchmarks/results/tls.md`` and ``tls.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lib import RESULTS, git_commit, machine  # noqa: E402

import topgun  # noqa: E402
from topgun.testing.nginx import NginxProxy  # noqa: E402
from topgun.testing.realserver import RealServer, ensure_server_binary  # noqa: E402
from topgun.transport.websocket import WebSocketTransport, _wrap_tls  # noqa: E402

# Reads and discards everything from one connection (TLS if given a cert); prints its port first.
_SINK = r"""
import socket, ssl, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
if len(sys.argv) > 1:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    conn = ctx.wrap_socket(conn, server_side=True)
while conn.recv(1 << 20):
    pass
"""

VALUE = {"n": 1, "name": "user", "tags": ["a", "b"]}
_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def measure(url: str, ctx: ssl.SSLContext | None, nginx_pid: int, work: Callable[[Any, str], int],
            tag: str) -> Dict[str, float]:
    client = topgun.TopGunClient(url, ssl_context=ctx, thread_mode="direct", request_timeout=60.0)
    try:
        handle = client.map("tlsbench")
        handle.set(f"{tag}-warm", VALUE)                       # connection up, first frame done
        cpu0, ngx0, t0 = time.process_time(), proc_cpu_s(nginx_pid), time.perf_counter()
        n = work(handle, tag)
        wall = time.perf_counter() - t0
        cpu, ngx = time.process_time() - cpu0, proc_cpu_s(nginx_pid) - ngx0
    finally:
        client.close()
    return {"writes_per_s": n / wall, "client_cpu_us": cpu / n * 1e6, "nginx_cpu_us": ngx / n * 1e6}


def send_path(tls_files: tuple[Path, Path] | None, ctx: ssl.SSLContext | None, payload: int,
              frames: int) -> Dict[str, float]:
    """CPU us per WebSocketTransport.send of one ``payload``-byte frame into a discarding sink."""
    from gevent import socket as gsocket
    sink = subprocess.Popen([sys.executable, "-c", _SINK, *(map(str, tls_files or ()))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        sock = gsocket.create_connection(("127.0.0.1", port), 5.0)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = _wrap_tls(sock, "localhost", ctx)
            sock.do_handshake()
        sock.settimeout(None)
        transport = WebSocketTransport(sock, "ws://sink/")   # already "upgraded": frames only
        data = b"x" * payload
        for _ in range(1000):
            transport.send(data)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(frames):
            transport.send(data)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        transport.close()
    finally:
        sink.wait(timeout=30)
    return {"cpu_us_per_frame": cpu / frames * 1e6, "frames_per_s": frames / wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ops", type=int, default=20_000, help="keys per put_all run")
    p.add_argument("--seq", type=int, default=2_000, help="sequential sets per run")
    p.add_argument("--frames", type=int, default=100_000, help="frames per send-path run")
    args = p.parse_args()

    import trustme
    tmp = Path(tempfile.mkdtemp(prefix="tlsbench-"))
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_pem.write_to_path(keyfile)
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(certfile, append=i > 0)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    server = RealServer(ensure_server_binary(), tmp / "n1", unbounded_write_behind=True).start()
    proxy = NginxProxy(tmp / "nginx", [server.url], certfile=certfile, keyfile=keyfile, plain=True).start()
    assert proxy.pid is not None
    paths = [("direct ws", server.url, None), ("nginx ws", proxy.plain_urls[0], None),
             ("nginx wss", proxy.urls[0], ctx)]

    def put_all(handle: Any, tag: str) -> int:
        handle.put_all({f"{tag}-{i}": VALUE for i in range(args.ops)}, timeout=120.0)
        return args.ops

    def sets(handle: Any, tag: str) -> int:
        for i in range(args.seq):
            handle.set(f"{tag}-{i}", VALUE)
        return args.seq

    workloads = [("put_all", put_all), ("set", sets)]
    runs: Dict[str, List[Dict[str, float]]] = {f"{w} / {p}": [] for w, _ in workloads for p, _, _ in paths}
    try:
        for r in range(args.rounds):
            for wname, work in workloads:
                for pname, url, c in paths:
                    row = measure(url, c, proxy.pid, work, f"r{r}-{wname}-{pname.replace(' ', '')}")
                    runs[f"{wname} / {pname}"].append(row)
                    print(f"round {r + 1} {wname:7} {pname:9}  {row['writes_per_s']:9,.0f}/s  "
                          f"client {row['client_cpu_us']:6.1f} us/write  nginx {row['nginx_cpu_us']:6.1f} us/write",
                          file=sys.stderr, flush=True)
    finally:
        proxy.stop()
        server.stop()
    sends: Dict[str, List[Dict[str, float]]] = {}
    for r in range(args.rounds):
        for payload in (64, 4096):
            for pname, files, c in (("plain", None, None), ("tls", (certfile, keyfile), ctx)):
                row = send_path(files, c, payload, args.frames)
                sends.setdefault(f"send {payload} B / {pname}", []).append(row)
                print(f"round {r + 1} send {payload:5} B {pname:5}  {row['cpu_us_per_frame']:5.2f} us/frame  "
                      f"{row['frames_per_s']:10,.0f} frames/s", file=sys.stderr, flush=True)
    medians = {label: {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}
               for label, rows in runs.items()}
    send_medians = {label: {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}
                    for label, rows in sends.items()}
    result = {"benchmark": "tls", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine(), "commit": git_commit(), "loadavg_end": os.getloadavg(),
              "command": "python benchmarks/tls.py " + " ".join(sys.argv[1:]),
              "rounds": args.rounds, "ops": args.ops, "seq": args.seq, "frames": args.frames,
              "medians": medians, "runs": runs, "send_medians": send_medians, "send_runs": sends}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tls.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "tls.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: Dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# tls", "",
             f"{result['date']}; {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, commit {result['commit'] or '?'}; "
             f"load average at the end {', '.join(f'{x:.1f}' for x in result['loadavg_end'])}. "
             f"`{result['command']}`: median of {result['rounds']} interleaved runs; put_all of {result['ops']:,} "
             f"keys, {result['seq']:,} sequential sets.", "",
             "| workload / path | acked writes/s | client CPU us/write | nginx CPU us/write | each run (writes/s) |",
             "|---|---|---|---|---|"]
    for label, med in result["medians"].items():
        each = " ".join(f"{r['writes_per_s'] / 1000:.1f}K" for r in result["runs"][label])
        lines.append(f"| {label} | {med['writes_per_s']:,.0f} | {med['client_cpu_us']:.1f} | "
                     f"{med['nginx_cpu_us']:.1f} | {each} |")
    lines += ["", f"Send path alone: `WebSocketTransport.send` of {result['frames']:,} frames into a discarding sink "
              "process over loopback (medians).", "",
              "| frame / path | CPU us/frame | frames/s |", "|---|---|---|"]
    for label, med in result["send_medians"].items():
        lines.append(f"| {label} | {med['cpu_us_per_frame']:.2f} | {med['frames_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
