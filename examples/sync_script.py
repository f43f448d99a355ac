"""A plain synchronous script (a cron job): no gevent in sight, no monkey-patching.

The client runs its gevent hub on a loop thread of its own (``thread_mode="auto"`` picks that
for unpatched code), so live-query callbacks keep arriving while this script blocks in
``time.sleep`` or in a thread pool, and any thread may call the client.

    python examples/sync_script.py --url ws://127.0.0.1:8080/ws
"""
import argparse
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TOPGUN_URL", "ws://127.0.0.1:8080/ws"))
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url) as client, topgun.TopGunClient(url=args.url) as other:
        print("thread mode:", client.thread_mode)
        jobs = client.map("cron_jobs")
        seen: "queue.Queue[topgun.Change]" = queue.Queue()
        with jobs.subscribe(seen.put):                  # called on the client's loop thread
            other.map("cron_jobs").set("nightly", {"state": "queued"})
            time.sleep(0.2)                             # a plain blocking sleep: callbacks still flow
            change = seen.get(timeout=5.0)
            print("live change:", change.kind, change.key, change.value)

        # Plain threads share the one client.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: jobs.set(f"job:{i}", {"n": i}), range(32)))
            values = list(pool.map(lambda i: jobs.get(f"job:{i}")["n"], range(32)))
        assert values == list(range(32)), values
        print("32 writes and reads from 8 threads: ok")

        future = jobs.set_async("last-run", {"at": time.time()})   # a concurrent.futures.Future here
        print("async write acknowledged:", future.result(timeout=5.0))
        for i in range(32):
            jobs.remove(f"job:{i}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
