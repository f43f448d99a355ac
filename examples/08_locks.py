"""Locks: two clients contend for one distributed lock; fencing tokens grow with each grant.

The server has no wait queue, so a blocked acquire retries with jittered back-off until its
timeout. A lock whose connection or node is lost is reported (``on_lost``, ``lock.lost``, and
``release()`` raises ``LockLost``), never silently assumed held.

    python examples/08_locks.py --url ws://127.0.0.1:8080/ws
"""
import argparse

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url) as worker_a, topgun.TopGunClient(url=args.url) as worker_b:
        def lost(lock: topgun.locks.Lock) -> None:
            print(f"lock {lock.name} lost: {lock.lost_reason}")

        with worker_a.lock("nightly-report", ttl=60.0, on_lost=lost) as lock:
            print("a holds the lock, fencing token", lock.fencing_token)
            other = worker_b.lock("nightly-report")
            print("b got it while a holds it:", other.acquire(timeout=0.5))
        print("a released it")
        other = worker_b.lock("nightly-report")
        if other.acquire(timeout=5.0):
            print("b holds it now, fencing token", other.fencing_token)
            other.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
