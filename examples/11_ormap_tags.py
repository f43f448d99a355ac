"""OR-map: two clients tag one post; removing one tag keeps the others; a third client watches.

    python examples/11_ormap_tags.py --url ws://127.0.0.1:8080/ws
"""
import argparse
import uuid

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()
    post = f"post:{uuid.uuid4().hex[:8]}"

    with topgun.TopGunClient(url=args.url) as alice, topgun.TopGunClient(url=args.url) as bob, \
            topgun.TopGunClient(url=args.url) as watcher:
        with watcher.ormap("tags").subscribe() as changes:
            alice.ormap("tags").add(post, "python")
            bob.ormap("tags").add(post, "gevent")          # concurrent adds: both survive
            alice.ormap("tags").add(post, "crdt")
            print("tags:", sorted(bob.ormap("tags").get(post)))
            bob.ormap("tags").remove(post, "gevent")       # the other tags stay
            print("after removing gevent:", sorted(alice.ormap("tags").get(post)))
            for _ in range(4):                             # python, gevent, crdt added; gevent removed
                change = changes.get(timeout=5.0)
                print(f"{change.kind:6} {change.key} {change.value}")
        for tag in ("python", "crdt"):
            alice.ormap("tags").remove(post, tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
