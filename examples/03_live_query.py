"""Live query: one client watches adults in a map while another writes.

    python examples/03_live_query.py --url ws://127.0.0.1:8080/ws
"""
import argparse

import topgun
from topgun import P


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url) as watcher, topgun.TopGunClient(url=args.url) as writer:
        people = writer.map("live-people")
        people.set("p:0", {"name": "Grace", "age": 85})
        with watcher.map("live-people").subscribe(predicate=P.gte("age", 18)) as adults:
            print("initial results:", adults.results)
            people.set("p:1", {"name": "Alan", "age": 41})      # enters the query
            people.set("p:2", {"name": "Tim", "age": 9})        # does not match: no change
            people.set("p:1", {"name": "Alan", "age": 42})      # updates it
            people.remove("p:0")                                 # leaves it
            for _ in range(3):
                change = adults.get(timeout=5.0)
                print(f"{change.kind:6} {change.key} {change.value}")
        people.remove("p:1")
        people.remove("p:2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
