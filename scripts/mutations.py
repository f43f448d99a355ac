#!/usr/bin/env python3
"""Mutation check: each hand-made bug below must make its expected tests fail.

    .venv/bin/python scripts/mutations.py            # every mutation (about 3 minutes on 2 cores)
    .venv/bin/python scripts/mutations.py -k hash    # the ones whose name contains "hash"
    .venv/bin/python scripts/mutations.py --list

For each mutation the working tree (``git ls-files``: tracked and untracked, not ignored) is
copied into a temporary directory, the one ``find`` text is replaced (it must occur exactly
once), and only the mutation's expected tests run there, with this interpreter and the copy
first on ``PYTHONPATH`` (server processes the tests start import the copy too). A mutation is
*caught* when pytest reports a failing test, *missed* when the tests pass. Before any mutation,
the same tests run once on the unmutated copy (``--no-baseline`` skips that), so a test that
fails anyway cannot pass for a catch.

Exit status 0 only if every mutation was caught. A ``find`` text that no longer occurs (code
moved or was reworded) is an error too, so this list cannot rot silently: update it with the
code. Not part of the default test run; CI runs it on demand.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    find: str
    replace: str
    tests: Tuple[str, ...]
    why: str


CHAOS = "tests/system/cluster/test_chaos.py"

MUTATIONS = [
    Mutation(
        "replicated-ack-without-backup-copy", "topgun/server/writes.py",
        'members.call(t, {"type": "CLUSTER_REPLICATE", "writes": ws}, replied(ws), timeout=remaining)',
        "replied(ws)({})",
        (f"{CHAOS}::test_sigkill_of_an_owner_loses_no_acknowledged_write",),
        "the dev server acknowledges REPLICATED writes without copying them to the backup"),
    Mutation(
        "engine-per-key-in-flight-guard-removed", "topgun/engine/engine.py",
        "if in_flight is not None and key in in_flight:  # an earlier write to it is in flight: keep order",
        "if False:  # mutated: the per-key in-flight guard is gone",
        ("tests/system/realcluster/test_real_chaos.py::test_sigstop_of_the_master_stalls_only_its_keys_and_loses_no_acknowledged_write",),
        "more than one write per key in flight: acks (and, on failover, resends) out of order"),
    Mutation(
        "refresh-interval-hard-coded-30s", "topgun/cluster/provider.py",
        "interval = self.config.partition_map_refresh_interval",
        "interval = 30.0",
        ("tests/unit/cluster/test_cluster_client.py::test_the_partition_map_is_refreshed_at_the_configured_interval",),
        "partition_map_refresh_interval ignored"),
    Mutation(
        "hash-low-byte-of-utf16-unit", "topgun/protocol/hashing.py",
        "h = ((h ^ (data[i] | (data[i + 1] << 8))) * _PRIME) & _MASK",
        "h = ((h ^ data[i]) * _PRIME) & _MASK",
        ("tests/unit/protocol/test_partition_vectors.py",),
        "non-ASCII keys hashed on the low byte of each UTF-16 code unit only"),
    Mutation(
        "route-to-owner-of-next-partition", "topgun/cluster/router.py",
        "owner = current.owner(pid)\n",
        "owner = current.owner((pid + 1) % 271)\n",
        ("tests/unit/cluster/test_router.py",),
        "requests routed to the owner of pid+1"),
    Mutation(
        "ack-matched-on-first-op-id", "topgun/engine/engine.py",
        "self.key = fastpath.ack_key(writes[-1].id)",
        "self.key = fastpath.ack_key(writes[0].id)",
        ("tests/unit/test_engine.py", "tests/unit/test_engine_sending.py"),
        "a batch's OP_ACK expected on its first op id instead of its last"),
    Mutation(
        "map-version-greater-or-equal", "topgun/cluster/partition_map.py",
        "return self.current is None or pmap.version > self.current.version",
        "return self.current is None or pmap.version >= self.current.version",
        ("tests/unit/cluster/test_partition_map.py",),
        "a partition map of the same version replaces the current one"),
    Mutation(
        "map-choice-version-greater-or-equal", "topgun/cluster/map_choice.py",
        "if held is not None and pmap.version <= held.version:",
        "if held is not None and pmap.version < held.version:",
        ("tests/unit/cluster/test_map_choice.py",),
        "a node's map of the same version as the one held counts as new (the live rule in cluster mode)"),
    Mutation(
        "map-choice-follows-a-dropped-node", "topgun/cluster/map_choice.py",
        "if dropped * 2 <= len(others):",
        "if True:",
        ("tests/unit/cluster/test_map_choice.py", f"{CHAOS}::test_sigstop_of_the_seed_loses_no_acknowledged_write"),
        "a hung lowest node that the other nodes dropped is still followed (its partitions stall ~20 s)"),
    Mutation(
        "counter-change-takes-an-earlier-push", "topgun/counters.py",
        "while not self._confirmed_holds(name, flight.own):",
        "while False:",
        ("tests/unit/test_structures_units.py",),
        "an increment returns on another client's COUNTER_UPDATE, before the node merged ours"),
    Mutation(
        "replaced-peer-link-drops-its-queue", "topgun/server/membership.py",
        "old.close(flush=True)",
        "old.close()",
        ("tests/integration/server/test_cluster.py::test_a_crossing_dial_delivers_what_the_replaced_link_still_had_queued",),
        "a crossing dial replaces a peer link and what was queued on it is lost (a join waits 15 s)"),
    Mutation(
        "unmasked-frame-tail", "topgun/protocol/wsframe.py",
        'parts.append((int.from_bytes(view[full:], "big") ^ int.from_bytes(stream[:rest], "big"))'
        '.to_bytes(rest, "big"))',
        "parts.append(bytes(view[full:]))",
        ("tests/unit/test_websocket_frames.py",),
        "the bytes past the last 64 KiB chunk of a large frame go out unmasked"),
    Mutation(
        "timed-out-request-forgotten", "topgun/engine/reads.py",
        "(conn.abandon if i < answered else conn.forget)(k, result)",
        "conn.forget(k, result)",
        ("tests/unit/test_point_read_fresh.py",),
        "a timed-out read forgets its requests, so their late replies answer the next read of the key"),
    Mutation(
        "counter-waiter-trusts-any-flight", "topgun/counters.py",
        "if flight.ok and self._confirmed_holds(name, own):",
        "if flight.ok:",
        ("tests/unit/test_structures_units.py",),
        "a change waiting behind a sync returns when that sync (which did not carry it) is confirmed"),
    Mutation(
        "retry-first-attempt-view-reread", "topgun/retry.py",
        "if state.attempt_number > 1:",
        "if True:",
        ("tests/unit/test_retry.py",),
        "the first back-off waits on the view read after the first attempt, missing a map that landed during it"),
]


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if (ROOT / ".cache").exists():  # the real server binary the fixtures look for
        os.symlink(ROOT / ".cache", dest / ".cache")


def env_for(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_tests(tree: Path, tests: Tuple[str, ...], timeout: float) -> Tuple[int, List[str], str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env_for(tree), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, [], f"timed out after {timeout:.0f}s"
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.MULTILINE)
    lines = proc.stdout.strip().splitlines()
    errors = [line for line in lines if line.startswith("E ")][:12]   # the assertion and its message
    tail = "\n".join(errors + lines[-4:])
    return proc.returncode, failed, tail


def check_import(tree: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import topgun; print(topgun.__file__)"], cwd=tree,
                         env=env_for(tree), capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(tree)):
        sys.exit(f"the copy is not what the tests import ({out}); refusing to report")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    parser.add_argument("-v", action="store_true", help="print the pytest tail of every run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.why}\n  {m.path}: {m.find!r} -> {m.replace!r}\n  expected: {', '.join(m.tests)}")
        return 0
    bad = 0
    with tempfile.TemporaryDirectory(prefix="topgun-mutations-") as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(tree)
        check_import(tree)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            started = time.monotonic()
            code, failed, tail = run_tests(tree, tests, args.timeout)
            print(f"baseline (unmutated): {'pass' if code == 0 else 'FAIL'} in {time.monotonic() - started:.0f}s")
            if code != 0:
                print(tail)
                return 2
        print(f"{'mutation':40} {'result':8} {'secs':>5}  caught by")
        for m in chosen:
            target = tree / m.path
            original = target.read_text(encoding="utf-8")
            count = original.count(m.find)
            if count != 1:
                print(f"{m.name:40} {'ROTTED':8} {'-':>5}  find text occurs {count} times in {m.path}; update the list")
                bad += 1
                continue
            target.write_text(original.replace(m.find, m.replace), encoding="utf-8")
            started = time.monotonic()
            try:
                code, failed, tail = run_tests(tree, m.tests, args.timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            secs = time.monotonic() - started
            caught = code == 1 and bool(failed)
            result = "caught" if caught else "MISSED" if code == 0 else f"ERROR({code})"
            print(f"{m.name:40} {result:8} {secs:5.0f}  {', '.join(failed) if failed else '-'}")
            if args.v or not caught:
                print("    " + tail.replace("\n", "\n    "))
            bad += not caught
    print(f"{len(chosen) - bad} of {len(chosen)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
