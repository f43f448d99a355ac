"""Topics: one client subscribes to a channel, another publishes to it.

The publisher's own subscriptions never get what it published (the server excludes the
publishing connection); a subscription comes back by itself after a reconnect.

    python examples/07_topics.py --url ws://127.0.0.1:8080/ws
"""
import argparse

import topgun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    args = parser.parse_args()

    with topgun.TopGunClient(url=args.url) as listener, topgun.TopGunClient(url=args.url) as sender:
        invalidations = sender.topic("cache/invalidate")
        with listener.topic("cache/invalidate").subscribe() as messages:
            invalidations.publish({"key": "user:42"})
            invalidations.publish({"key": "user:7"})
            for _ in range(2):
                msg = messages.get(timeout=5.0)
                print(f"{msg.topic}: {msg.data} (server time {msg.timestamp})")
        try:
            sender.topic("not a valid name!")
        except topgun.ConfigurationError as exc:
            print("refused before sending:", exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
