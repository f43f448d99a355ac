"""Full-text search: write a few documents, search them (values included), watch a live search.

Run it against one node (the real server or `python -m topgun.server --nodes 1 --port 8080`):
search is node-local, and these `url=` clients ask only the node they connect to.

    python examples/12_full_text_search.py --url ws://127.0.0.1:8080/ws
"""
import argparse
import time
import uuid

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()
    books = f"books-{uuid.uuid4().hex[:8]}"

    with topgun.TopGunClient(url=args.url) as writer, topgun.TopGunClient(url=args.url) as reader:
        writer.map(books).put_all({
            "b1": {"title": "Programming Rust", "topic": "systems"},
            "b2": {"title": "Fluent Python", "topic": "programming"},
            "b3": {"title": "The Rust Gardener", "topic": "fungus"},
        })
        deadline = time.monotonic() + 5.0          # the server indexes a moment after the ack
        hits = reader.map(books).search("rust")
        while len(hits) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            hits = reader.map(books).search("rust")
        for hit in hits:
            print(f"{hit.score:.3f} {hit.key} {hit.value['title']} {hit.matched_terms}")
        with reader.map(books).search_subscribe("python") as live:
            print("live results:", sorted(live.results))
            writer.map(books).set("b4", {"title": "Python Tricks"})
            change = live.get(timeout=5.0)
            print(f"{change.kind} {change.key} score={change.score:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
