"""PN counters: three clients count page views into one counter and all read the same value.

Each client sends its own cumulative totals, never deltas, so a resend after a reconnect
never counts twice, and a restarted node gets the counter back from the clients.

    python examples/09_counters.py --url ws://127.0.0.1:8080/ws
"""
import argparse
import uuid

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()
    name = f"page-views-{uuid.uuid4().hex[:6]}"

    clients = [topgun.TopGunClient(url=args.url) for _ in range(3)]
    try:
        with clients[0].counter(name).subscribe() as updates:
            for i, client in enumerate(clients):
                counter = client.counter(name)
                counter.increment(10 * (i + 1))
                counter.decrement()
            print("the watcher saw:", [updates.get(timeout=5.0) for _ in range(5)])
        print("values:", [client.counter(name).value for client in clients])   # 57 each
    finally:
        for client in clients:
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
