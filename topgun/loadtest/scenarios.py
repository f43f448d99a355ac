"""The benchmark scenarios: throughput, failover, rebalance and single, driven through TopGunClient.

Every scenario runs the same write workload (:class:`WriteWorkload`) with a :class:`Runner`:
each user writes its own slice of the key space, one ``set`` per call or one ``put_all`` of
``batch_size`` keys per call (counted as that many ops), so all users' writes go through one
shared client, which batches them into OP_BATCH frames. What differs is the topology and the
chaos:

- ``throughput``: a cluster, no chaos (k6 cluster-throughput: success >= 99 %, p95 < 50 ms).
- ``failover``: a cluster; the benchmark SIGKILLs a node (``kills`` times, evenly spaced),
  restarts it ``down_for`` seconds later, and measures each user's recovery (k6
  cluster-failover: recovery p95 < 5 s, success >= 95 %). Needs an embedded target.
- ``rebalance``: a cluster; a node joins at ``add_at`` (k6 cluster-rebalance: success >= 98 %,
  p95 < 100 ms). Needs an embedded target.
- ``single``: one node, client in single-server mode (the baseline).
- ``counter``: a cluster; users increment a few shared PN counters instead of writing keys,
  and each counter is checked against the acknowledged increments (``counters.py``).

Each user's keys are written only by that user and in order, so after the run every
acknowledged write can be checked: a fresh client reads each key back, and the value must be
that write or a later one of the same user (``lost`` counts the keys where it is not).
Verification is on by default for failover and rebalance.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, TextIO

from gevent.pool import Pool

from ..clock import Clock, GeventClock
from ..errors import ConfigurationError
from ..transport import trust
from .counters import CounterWorkload, verify_counters
from .machine import cpu_figures, cpu_snapshot, loadavg, machine_info
from .pacing import parse_pacing
from .report import DEFAULT_THRESHOLDS, evaluate_thresholds, parse_threshold, progress_line
from .runner import Runner, User
from .stats import LatencyHistogram
from .targets import EmbeddedTarget, RealServerTarget, SeedsTarget, Target, UrlTarget

log = logging.getLogger(__name__)

__all__ = ["BenchOptions", "WriteWorkload", "SCENARIOS", "run_bench", "make_target", "verify_acked"]

SCENARIOS = ("throughput", "failover", "rebalance", "single", "counter")
CHAOS = ("failover", "rebalance")


@dataclass(frozen=True)
class BenchOptions:
    """Everything ``topgun bench`` takes (the CLI maps its flags onto this)."""

    scenario: str = "throughput"
    url: Optional[str] = None
    seeds: tuple = ()
    embedded: int = 0
    in_process: bool = False
    real_server: bool = False
    users: int = 50
    duration: float = 30.0
    keys: int = 100_000
    value_size: int = 100
    batch_size: int = 1
    write_concern: Optional[str] = None
    smart_routing: bool = True
    connections_per_node: int = 1
    map_name: str = "bench"
    ramp_up: float = 0.0
    pacing: str = "none"
    request_timeout: float = 10.0
    verify: Optional[bool] = None
    kills: int = 1
    down_for: float = 2.0
    add_at: Optional[float] = None
    thresholds: tuple = ()
    default_thresholds: bool = True
    tick: float = 1.0
    seed: int = 1
    label: str = ""
    server_pids: tuple = ()
    ca_file: Optional[str] = None   # a PEM bundle the clients trust for wss:// (a private CA)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigurationError(f"unknown scenario {self.scenario!r}; choose from {', '.join(SCENARIOS)}")
        targets = sum([bool(self.url), bool(self.seeds), bool(self.embedded), self.real_server])
        if targets != 1:
            raise ConfigurationError("give exactly one target: --url, --seeds, --embedded N or --real-server")
        if self.scenario in CHAOS and not (self.embedded or (self.real_server and self.scenario == "failover")):
            raise ConfigurationError(f"the {self.scenario} scenario changes the cluster itself: use --embedded N")
        for name in ("users", "keys", "value_size", "batch_size", "kills", "connections_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "value_size" else 1):
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        if self.keys < self.users * self.batch_size:
            raise ConfigurationError(f"keys ({self.keys}) must be >= users x batch size "
                                     f"({self.users * self.batch_size}): each user writes its own keys")
        if self.duration <= 0:
            raise ConfigurationError(f"duration must be > 0 s, got {self.duration!r}")
        parse_pacing(self.pacing)
        for text in self.thresholds:
            parse_threshold(text)

    @property
    def cluster_mode(self) -> bool:
        return self.scenario != "single" and not self.url and not self.real_server

    @property
    def should_verify(self) -> bool:
        return self.verify if self.verify is not None else self.scenario in CHAOS + ("counter",)


class WriteWorkload:
    """Each user writes its own keys (``k<n>`` with ``n % users == user.index``), in order.

    Values are ``{"u": user, "s": seq, "p": padding}``; ``acked`` maps each key to the highest
    ``seq`` acknowledged for it (when ``track`` is on).
    """

    def __init__(self, handle: Any, *, users: int, keys: int, value_size: int, batch_size: int,
                 track: bool) -> None:
        self.handle = handle
        self.users = users
        self.per_user = keys // users
        self.batch_size = batch_size
        self.track = track
        self.pad = "x" * max(0, value_size - 24)  # ~24 bytes of msgpack around the padding
        self.acked: Dict[str, int] = {}

    def key(self, user_index: int, slot: int) -> str:
        return f"k{user_index + self.users * (slot % self.per_user)}"

    def task(self, user: User) -> None:
        state = user.state
        if "slot" not in state:
            state["slot"] = user.rng.randrange(self.per_user)
            state["seq"] = 0
        slot, seq, index = state["slot"], state["seq"], user.index
        if self.batch_size == 1:
            key = self.key(index, slot)
            seq += 1
            state["slot"], state["seq"] = slot + 1, seq
            self.handle.set(key, {"u": index, "s": seq, "p": self.pad})
            if self.track:
                self.acked[key] = seq
            return
        items = {}
        for i in range(self.batch_size):
            seq += 1
            items[self.key(index, slot + i)] = {"u": index, "s": seq, "p": self.pad}
        state["slot"], state["seq"] = slot + self.batch_size, seq
        self.handle.put_all(items)
        if self.track:
            acked = self.acked
            for key, value in items.items():
                acked[key] = value["s"]


def verify_acked(handle: Any, acked: Dict[str, int], *, concurrency: int = 64,
                 timeout: float = 10.0, clock: Optional[Clock] = None) -> Dict[str, Any]:
    """Read every key of ``acked`` back; each must hold that write or a later one."""
    lost: List[str] = []
    read_errors: Dict[str, str] = {}

    def check(item: Any) -> None:
        key, seq = item
        try:
            value = handle.get(key, timeout=timeout)
        except Exception as exc:
            read_errors[key] = f"{type(exc).__name__}: {exc}"
            return
        if not isinstance(value, dict) or value.get("s", -1) < seq:
            lost.append(key)

    clock = clock or GeventClock()
    start = clock.monotonic()
    Pool(concurrency).map(check, list(acked.items()))
    return {"verified_keys": len(acked) - len(lost) - len(read_errors), "checked_keys": len(acked),
            "lost": len(lost), "lost_examples": sorted(lost)[:10], "read_errors": len(read_errors),
            "read_error_examples": dict(list(read_errors.items())[:5]),
            "verify_s": round(clock.monotonic() - start, 3)}


def make_target(opts: BenchOptions) -> Target:
    if opts.url:
        return UrlTarget(opts.url)
    if opts.seeds:
        return SeedsTarget(list(opts.seeds))
    if opts.real_server:
        return RealServerTarget()
    return EmbeddedTarget(opts.embedded, in_process=opts.in_process)


def _new_client(target: Target, opts: BenchOptions) -> Any:
    from ..client import TopGunClient
    options = target.client_options(cluster=opts.cluster_mode, smart_routing=opts.smart_routing,
                                    connections_per_node=opts.connections_per_node)
    if opts.write_concern:
        options["write_concern"] = opts.write_concern
    if opts.ca_file:
        options["ssl_context"] = trust.ca_file_context(opts.ca_file, source="ca_file")
    return TopGunClient(request_timeout=opts.request_timeout, connect_timeout=10.0, **options)


def _client_view(client: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"engine": dict(client.runtime.engine.stats)}
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        out["map_version"] = cluster.map_version
        out["routing"] = dict(cluster.stats)
        out["nodes"] = {n: s.state for n, s in cluster.node_states().items()}
    return out


def _nodes_text(target: Target, client: Any) -> str:
    up, total = target.nodes_up(), target.nodes_total()
    cluster = getattr(client, "cluster", None)
    seen = ""
    if cluster is not None:
        states = cluster.node_states()
        connected = sum(1 for s in states.values() if s.state == "CONNECTED")
        seen = f"{connected}/{len(states)} connected"
        if up is None:
            return f"{seen}  map v{cluster.map_version}"
        return f"{up}/{total} up, {seen}  map v{cluster.map_version}"
    if up is None:
        return "connected" if client.connected else "disconnected"
    return f"{up}/{total} up"


def run_bench(opts: BenchOptions, *, out: Optional[TextIO] = None,
              target: Optional[Target] = None) -> Dict[str, Any]:
    """Run one scenario and return every figure (the ``--json`` document).

    Args:
        opts: the scenario and its settings.
        out: where live progress lines go (None: no progress).
        target: an already started target (then it is not stopped here); default: built
            from ``opts`` and stopped at the end.
    """
    own_target = target is None
    target = target or make_target(opts)
    now_ms = GeventClock().now_ms()
    started_at = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if own_target:
        if out is not None:
            print(f"starting {target!r} ...", file=out, flush=True)
        target.start()
    try:
        return _run_on(target, opts, out, started_at)
    finally:
        if own_target:
            target.close()


def _run_on(target: Target, opts: BenchOptions, out: Optional[TextIO], started_at: str) -> Dict[str, Any]:
    client = _new_client(target, opts)
    try:
        handle = client.map(opts.map_name)
        workload: Any = WriteWorkload(handle, users=opts.users, keys=opts.keys, value_size=opts.value_size,
                                      batch_size=opts.batch_size, track=opts.should_verify)
        if opts.scenario == "counter":
            workload = CounterWorkload(client, name=opts.map_name, users=opts.users)
        on_tick = None
        if out is not None:
            def on_tick(elapsed: float, figures: Dict[str, float]) -> None:
                print(progress_line(elapsed, figures, opts.tick, runner.stats.errors, _nodes_text(target, client)),
                      file=out, flush=True)
        runner = Runner(workload.task, users=opts.users, duration=opts.duration, ops_per_call=opts.batch_size,
                        pacing=parse_pacing(opts.pacing), ramp_up=opts.ramp_up, tick=opts.tick,
                        on_tick=on_tick, stop_grace=opts.request_timeout + 5.0, seed=opts.seed)
        kills = _schedule_chaos(runner, target, opts)
        map_before = client.cluster.map_version if client.cluster is not None else None
        load_before = loadavg()
        cpu_before = cpu_snapshot(target, opts.server_pids)
        result = runner.run()
        cpu = cpu_figures(cpu_before, cpu_snapshot(target, opts.server_pids), result.elapsed_s)
        cpu["loadavg_start"] = load_before
        doc: Dict[str, Any] = {"scenario": opts.scenario, "label": opts.label, "started_at": started_at,
                               "target": target.describe(), "machine": machine_info(),
                               "command": " ".join(sys.argv), "options": _jsonable(asdict(opts))}
        doc.update(result.stats.summary(result.elapsed_s))
        doc["peak_ops_per_s"] = result.stats.peak_ops_per_s()
        doc["users_killed_at_end"] = result.killed_users
        doc["timeline"] = result.stats.timeline()
        doc["events"] = sorted(result.events, key=lambda e: e["t"])
        doc["client"] = _client_view(client)
        if doc["ops_per_s"]:
            # CPU microseconds per acknowledged op: the figure that stays put when the machine
            # is shared and throughput swings. 2 cores at 50 000 ops/s leave 40 us per op in all.
            cpu["cpu_us_per_op"] = {k: round(v * 1e6 / doc["ops_per_s"], 1) for k, v in cpu["cpu_cores"].items()}
            cpu["cpu_us_per_op_total"] = round(sum(cpu["cpu_us_per_op"].values()), 1)
        doc["cpu"] = cpu
        if map_before is not None:
            doc["map_version_before"] = map_before
            doc["map_version_after"] = client.cluster.map_version
        if opts.scenario == "failover":
            doc.update(_recovery_figures([m for m in result.markers if m.name.startswith("kill")], kills))
            doc["rejoins"] = [m.as_dict() for m in result.markers if m.name.startswith("restart")]
        if opts.should_verify and opts.scenario == "counter":
            checker = _new_client(target, opts)
            try:
                doc.update(verify_counters(checker, workload, timeout=opts.request_timeout))
            finally:
                checker.close()
        elif opts.should_verify:
            if out is not None:
                print(f"verifying {len(workload.acked)} acknowledged keys with a fresh client ...",
                      file=out, flush=True)
            checker = _new_client(target, opts)
            try:
                doc.update(verify_acked(checker.map(opts.map_name), workload.acked, timeout=opts.request_timeout))
            finally:
                checker.close()
        else:
            doc.update({"lost": None, "verified_keys": None})
    finally:
        client.close()
    thresholds = list(opts.thresholds)
    if opts.default_thresholds:
        thresholds = list(DEFAULT_THRESHOLDS.get(opts.scenario, ())) + thresholds
    doc["thresholds"] = evaluate_thresholds(thresholds, doc)
    doc["passed"] = all(t["ok"] for t in doc["thresholds"])
    return doc


def _schedule_chaos(runner: Runner, target: Target, opts: BenchOptions) -> List[Dict[str, Any]]:
    kills: List[Dict[str, Any]] = []
    if opts.scenario == "failover":
        for i in range(opts.kills):
            at = opts.duration * (i + 1) / (opts.kills + 1)
            runner.at(at, _kill_and_restart(runner, target, opts.down_for, i, kills), f"failover #{i + 1}")
    elif opts.scenario == "rebalance":
        at = opts.add_at if opts.add_at is not None else opts.duration * 0.25
        runner.at(at, lambda: _add_node(runner, target), "add node")
    return kills


def _kill_and_restart(runner: Runner, target: Target, down_for: float, i: int,
                      kills: List[Dict[str, Any]]) -> Callable[[], Dict[str, Any]]:
    def action() -> Dict[str, Any]:
        live = target.live_nodes()
        if not live:
            raise ConfigurationError("no live node to kill")
        # Rotate victims, and prefer the owner of a known key so a kill always hits written data.
        victim = target.owner_of(f"k{i}") or live[i % len(live)]
        if victim not in live:
            victim = live[i % len(live)]
        t_kill = runner.elapsed()
        target.kill(victim)
        runner.mark(f"kill {victim}")
        runner.event(f"killed {victim}")
        runner.clock.sleep(down_for)
        target.restart(victim)
        runner.mark(f"restart {victim}")
        runner.event(f"restarted {victim}")
        entry = {"node": victim, "killed_at_s": round(t_kill, 3), "down_for_s": down_for}
        kills.append(entry)
        return entry
    return action


def _add_node(runner: Runner, target: Target) -> Dict[str, Any]:
    node = target.add_node()
    runner.mark(f"add {node}")
    return {"node": node}


def _recovery_figures(markers: List[Any], kills: List[Dict[str, Any]]) -> Dict[str, Any]:
    hist = LatencyHistogram()
    for marker in markers:
        for seconds in marker.recovered.values():
            hist.record(seconds)
    per_kill = [m.as_dict() for m in markers]
    recovery = [k["recovery_s"] for k in per_kill]
    known = [r for r in recovery if r is not None]
    return {"kills": per_kill, "recovery_s": recovery,
            "recovery_max_s": round(max(known), 3) if known else None,
            "recovery_p50_s": round(hist.percentile(50), 3) if hist.count else None,
            "recovery_p95_s": round(hist.percentile(95), 3) if hist.count else None,
            "unrecovered_kills": len(recovery) - len(known), "chaos": kills}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
