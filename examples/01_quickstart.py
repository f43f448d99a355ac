"""Quickstart: write, read, remove and list entries of one map.

Run against any TopGun server (the real one or `python -m topgun.server --nodes 1`):

    python examples/01_quickstart.py --url ws://127.0.0.1:8080/ws
"""
import argparse

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url, request_timeout=5.0) as client:
        users = client.map("quickstart-users")
        users.set("user:1", {"name": "Ada", "age": 36})       # returns once acknowledged
        users.set("user:2", {"name": "Linus", "age": 28})
        print("user:1 ->", users.get("user:1"))
        print("missing ->", users.get("user:404", default="(none)"))
        users.remove("user:2")
        print("after remove, user:2 ->", users.get("user:2"))
        print("entries:", users.entries())
        print(f"round trip: {client.ping() * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
