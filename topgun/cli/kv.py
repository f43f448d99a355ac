"""``topgun put|get|rm MAP KEY [JSON]``: one key at a time, JSON in and out.

    topgun put users 42 '{"name": "Ada"}'     # or the JSON on stdin: echo 42 | topgun put n answer
    topgun get users 42                       # prints {"name":"Ada"}; exit 1 if absent
    topgun rm users 42

Where to connect: ``--url ws://...`` (one server) or ``--seeds URL[,URL]`` (cluster mode), else
TOPGUN_URL / TOPGUN_SEEDS, else ws://127.0.0.1:8080/ws; ``--ca-file PATH`` (or TOPGUN_CA_FILE)
trusts a private CA for ``wss://``. Exit codes: 0 ok, 1 not found,
2 bad arguments, 3 the cluster did not answer in time. Also the connection helpers of the
other client subcommands (watch, cluster), and the streaming half of those that print what
arrives until ``--count`` or Ctrl-C (watch, subscribe, counter --watch).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable, Optional

import ujson

__all__ = ["register", "add_connection_arguments", "connect", "dump", "print_json_lines", "run_command",
           "run_until_interrupted"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
_ABSENT = object()
_TLS_HINT = "\n(a certificate from a private CA: pass --ca-file PATH or set TOPGUN_CA_FILE to its PEM bundle)"


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("connection")
    where.add_argument("--url", help="one server, ws://host:port/ws (default: $TOPGUN_URL)")
    where.add_argument("--seeds", help="cluster mode: comma-separated seed URLs (default: $TOPGUN_SEEDS)")
    where.add_argument("--token", help="JWT (default: $TOPGUN_TOKEN)")
    where.add_argument("--ca-file", metavar="PATH",
                       help="a PEM bundle of the CA certificates wss:// trusts, for a private CA "
                            "(default: $TOPGUN_CA_FILE; else the system trust store)")
    where.add_argument("--timeout", type=float, default=10.0, help="deadline of each call in seconds (default 10)")


def connect(args: argparse.Namespace, *, cluster: bool = False, **options: Any) -> Any:
    """A client for the parsed connection arguments; ``cluster=True`` forces cluster mode.

    ``options`` go to the constructor. Raises ConfigurationError for a bad ``--ca-file`` (or
    ``$TOPGUN_CA_FILE``), which :func:`run_command` turns into exit 2.
    """
    import topgun
    from topgun.transport import trust
    seeds = None if args.seeds is None else [s.strip() for s in args.seeds.split(",") if s.strip()]
    if args.ca_file:  # read here, so that a bad file is named as the option the user typed
        options["ssl_context"] = trust.ca_file_context(args.ca_file, source="--ca-file")
    return topgun.TopGunClient.from_env(url=args.url, seeds=seeds, token=args.token, cluster=cluster,
                                        request_timeout=args.timeout, connect_timeout=min(args.timeout, 10.0),
                                        **options)


def dump(value: Any, *, pretty: bool = False) -> str:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False, indent=2 if pretty else 0)


def run_command(body: Callable[[], int]) -> int:
    """Run ``body``, turning topgun errors into a message on stderr and an exit code."""
    import topgun
    try:
        return body()
    except topgun.ConfigurationError as exc:
        print(f"topgun: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except topgun.TopGunError as exc:
        hint = _TLS_HINT if isinstance(exc, topgun.TLSVerificationError) else ""
        print(f"topgun: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def run_until_interrupted(body: Callable[[], int]) -> int:
    """:func:`run_command` for a command that runs until Ctrl-C, which then exits 0."""
    code = run_command(body)
    return EXIT_OK if code == 130 else code


def print_json_lines(items: Iterable[Any], render: Callable[[Any], Any], count: int) -> None:
    """Print ``render(item)`` of each item as one JSON line, flushed; stop after ``count`` (0: never)."""
    seen = 0
    for item in items:
        sys.stdout.write(dump(render(item)) + "\n")
        sys.stdout.flush()
        seen += 1
        if count and seen >= count:
            break


def _read_json(text: Optional[str]) -> Any:
    if text is None or text == "-":
        text = sys.stdin.read()
    try:
        return ujson.loads(text)
    except ValueError:
        return _ABSENT


def run_put(args: argparse.Namespace) -> int:
    value = _read_json(args.json)
    if value is _ABSENT:
        print(f"topgun: the value is not valid JSON: {(args.json or '(stdin)')[:80]!r}", file=sys.stderr)
        return EXIT_USAGE

    def body() -> int:
        with connect(args) as client:
            client.map(args.map).set(args.key, value, timeout=args.timeout)
        return EXIT_OK
    return run_command(body)


def run_get(args: argparse.Namespace) -> int:
    def body() -> int:
        with connect(args) as client:
            value = client.map(args.map).get(args.key, _ABSENT, timeout=args.timeout)
        if value is _ABSENT:
            print(f"topgun: {args.map}/{args.key} not found", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(dump(value, pretty=args.pretty))
        return EXIT_OK
    return run_command(body)


def run_rm(args: argparse.Namespace) -> int:
    def body() -> int:
        with connect(args) as client:
            client.map(args.map).remove(args.key, timeout=args.timeout)
        return EXIT_OK
    return run_command(body)


def register(subparsers: Any) -> None:
    put = subparsers.add_parser("put", help="store a JSON value under MAP KEY",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    put.add_argument("map")
    put.add_argument("key")
    put.add_argument("json", nargs="?", help="the value as JSON; '-' or absent: read stdin")
    add_connection_arguments(put)
    put.set_defaults(func=run_put)

    get = subparsers.add_parser("get", help="print the JSON value of MAP KEY (exit 1 if absent)")
    get.add_argument("map")
    get.add_argument("key")
    get.add_argument("--pretty", action="store_true", help="indent the JSON")
    add_connection_arguments(get)
    get.set_defaults(func=run_get)

    rm = subparsers.add_parser("rm", help="remove MAP KEY")
    rm.add_argument("map")
    rm.add_argument("key")
    add_connection_arguments(rm)
    rm.set_defaults(func=run_rm)
