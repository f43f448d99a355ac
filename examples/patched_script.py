"""A monkey-patched program: an existing blocking library keeps working next to the client.

``gevent.monkey.patch_all()`` first (as ``gunicorn -k gevent`` does). Then the stdlib's own
blocking code (here ``http.server`` and ``urllib``, standing in for any sync library) runs in
greenlets, and the client runs "direct" on the same hub: an HTTP handler stores each request in
topgun, while other greenlets fetch pages and read topgun, all at once in one thread.

    python examples/patched_script.py --url ws://127.0.0.1:8080/ws
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (imports after patching, as a patched program must)
import http.server  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402

import topgun  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TOPGUN_URL", "ws://127.0.0.1:8080/ws"))
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url) as client:
        print("thread mode:", client.thread_mode)
        hits = client.map("patched_hits")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(0.05)                          # patched: yields, does not block the hub
                hits.set(self.path.strip("/"), {"path": self.path})
                body = b"ok " + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.request_queue_size = 64   # 20 connects at once: no SYN retries
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)   # threads are greenlets now
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]

        started = time.monotonic()
        fetches = [gevent.spawn(lambda i=i: urllib.request.urlopen(f"http://127.0.0.1:{port}/page{i}",
                                                                    timeout=10).read()) for i in range(20)]
        readers = [gevent.spawn(client.ping) for _ in range(20)]
        gevent.joinall(fetches + readers, raise_error=True, timeout=20)
        elapsed = time.monotonic() - started
        assert all(g.value.startswith(b"ok /page") for g in fetches)
        stored = sorted(k for k in hits.keys() if k.startswith("page"))
        assert len(stored) == 20, stored
        # 20 handlers sleeping 50 ms each: concurrent, so far less than 20 x 50 ms.
        print(f"20 HTTP requests through a stdlib server + 20 pings in {elapsed:.2f}s; stored {len(stored)} hits")
        assert elapsed < 0.9, elapsed
        server.shutdown()
        for key in stored:
            hits.remove(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
