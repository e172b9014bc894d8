"""``dvms sim overlay``: thousands of real Kademlia + Vivaldi cores on a simulated network.

Scenario (all times virtual seconds):

1. Node 0 starts at t = 0 alone; the others start at uniform random times in
   ``[0, join_window]`` and join through the (up to) three earliest nodes as seeds.
2. Maintenance runs as configured (Vivaldi probes, bucket refresh, housekeeping).
3. With ``churn = p``, ``round(p * nodes)`` times in ``[join_window, duration]`` a random
   live node crashes and a fresh node (new identity) starts at the same network position,
   joining through three random live nodes. The population stays constant.
4. ``lookups`` random-target FIND_NODE lookups start at uniform times in
   ``[duration / 2, 0.95 * duration]`` from random live, joined nodes.

A lookup is *exact* when the ids it returns equal the true k closest ids among the nodes
that were live and joined for the whole lookup (computed by brute force); nodes that
crash or join during a lookup may rightly appear or not, so they are left out of both
sides (the truth then has as many fewer entries as the result holds such nodes). Our own
node counts as a candidate (it is part of the network). ``median_hops`` is the median
referral-chain length to the closest answering node (see ``dvms.overlay.lookup``).

``vivaldi_median_rel_error`` is the median over all pairs of live nodes of
``|predicted - true| / true`` at the end of the run, true RTT from the latency model, pairs
on the same matrix row (LAN neighbours) left out. Above ``error_sample`` live nodes, a
seeded random subset of that many nodes is used (all pairs within it).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dvms import accel
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import Joined, LookupDone
from dvms.overlay.messages import Contact
from dvms.overlay.records import Identity
from dvms.sim.engine import NODE_PORT, Engine, SimNode
from dvms.stack.core import build_cores
from dvms.transport.netmodel import (
    ConstantLatency,
    LatencyMatrixError,
    LatencyModel,
    MatrixLatency,
    NetworkConditions,
    NetworkModel,
    parse_latency_matrix,
)
from dvms.vivaldi import Coordinate, VivaldiConfig, predicted_rtt_matrix

__all__ = [
    "EMBEDDED_MATRIX",
    "LatencyMatrixError",
    "OverlayScenario",
    "load_latency",
    "run_overlay",
]

#: The latency matrix shipped in the package (WonderNetwork, 222 sites; see data/README).
EMBEDDED_MATRIX = "embedded:wondernetwork222"


@dataclass(frozen=True, slots=True)
class OverlayScenario:
    nodes: int = 1000
    seed: int = 1
    #: ``EMBEDDED_MATRIX``, a path to a matrix file (ms; .gz accepted), or
    #: ``const:<ms>`` for one constant RTT.
    latency: str = EMBEDDED_MATRIX
    #: RTT between two nodes on the same matrix row, seconds.
    lan_rtt_s: float = 0.0005
    loss: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    churn: float = 0.0
    duration_s: float = 600.0
    lookups: int = 500
    #: Nodes starting per virtual second during the join phase.
    join_rate: float = 100.0
    #: Nodes used for the all-pairs Vivaldi error above this population.
    error_sample: int = 2500
    kademlia: KademliaConfig = field(default_factory=KademliaConfig)
    vivaldi: VivaldiConfig = field(default_factory=VivaldiConfig)
    #: Encode, sign and decode every message (slower; proves the wire path).
    wire: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ValueError("a simulation needs at least 2 nodes")
        if not 0 <= self.churn <= 1 or not 0 <= self.loss < 1:
            raise ValueError("churn must be in [0, 1] and loss in [0, 1)")
        if self.duration_s <= 0:
            raise ValueError("duration must be positive")

    @property
    def join_window_s(self) -> float:
        return min(self.nodes / self.join_rate, self.duration_s / 4)


def load_latency(spec: str, *, lan_rtt_s: float) -> LatencyModel:
    """Build the latency model named by ``spec`` (see ``OverlayScenario.latency``)."""
    if spec.startswith("const:"):
        return ConstantLatency(float(spec[6:]) / 1000.0)
    if spec == EMBEDDED_MATRIX:
        ref = resources.files("dvms.sim") / "data" / "wondernetwork222_avg_rtt_ms.csv.gz"
        text = gzip.decompress(ref.read_bytes()).decode()
        source = "embedded wondernetwork222"
    else:
        path = Path(spec)
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
        source = str(path)
    rows = parse_latency_matrix(text, source=source)
    return MatrixLatency(np.asarray(rows) / 1000.0, lan_rtt_s=lan_rtt_s)


class _Lookup:
    __slots__ = ("node", "started", "target")

    def __init__(self, node: SimNode, target: int, started: float) -> None:
        self.node = node
        self.target = target
        self.started = started


class OverlaySim:
    """Builds the population, runs the scenario, collects metrics."""

    def __init__(self, scn: OverlayScenario) -> None:
        self.scn = scn
        self.rng = random.Random(scn.seed)
        self.latency = load_latency(scn.latency, lan_rtt_s=scn.lan_rtt_s)
        conditions = NetworkConditions(loss=scn.loss, jitter=scn.jitter, duplicate=scn.duplicate)
        network = NetworkModel(self.latency, conditions, random.Random(self.rng.getrandbits(64)))
        codec_factory = None
        if scn.wire:
            from dvms.overlay.messages import register_overlay_messages
            from dvms.wire.envelope import MessageRegistry, WireCodec

            # Derived from the seed without touching self.rng: the wire option must not
            # change which node ids or events the run draws.
            key = hashlib.sha256(f"dvms-sim-cluster-key/{scn.seed}".encode()).digest()
            registry = register_overlay_messages(MessageRegistry())
            codec_factory = lambda: WireCodec(key, registry)  # noqa: E731
        self.engine = Engine(network, on_emit=self._on_emit, codec_factory=codec_factory)
        self.joined_at: dict[int, float] = {}  # node index -> time
        self.died_at: dict[int, float] = {}
        self.started_at: dict[int, float] = {}
        self.pending: dict[tuple[int, int], _Lookup] = {}
        self.results: list[tuple[bool, int, float]] = []  # (exact, hops, latency)
        self.timed_out = 0
        self.aborted = 0
        self.churn_events = 0
        self._generation: dict[int, int] = {}

    # -- population --------------------------------------------------------------------

    def _spawn(self, pos: int, seeds: list[tuple[str, int]]) -> SimNode:
        gen = self._generation.get(pos, 0)
        self._generation[pos] = gen + 1
        ident = Identity.from_rng(self.rng)
        addr = (f"n{pos}" if gen == 0 else f"n{pos}g{gen}", NODE_PORT)
        contact = Contact(ident.node_id, addr[0], addr[1])
        node_rng = random.Random(self.rng.getrandbits(64))
        core, _ = build_cores(
            contact, self.scn.kademlia, node_rng, vivaldi=self.scn.vivaldi, now=self.engine.now
        )
        node = self.engine.add_node(pos, addr, ident.node_id, core)
        self.started_at[node.index] = self.engine.now
        self.engine.apply(node, core.start(seeds, now=self.engine.now))
        return node

    def _live(self) -> list[SimNode]:
        return [n for n in self.engine.nodes if n.alive and n.index in self.joined_at]

    def _on_emit(self, node: SimNode, event: Any, now: float) -> None:
        if isinstance(event, Joined):
            self.joined_at.setdefault(node.index, now)
        elif isinstance(event, LookupDone):
            lk = self.pending.pop((node.index, event.result.lookup_id), None)
            if lk is not None:
                self._score(lk, event, now)

    # -- lookups -----------------------------------------------------------------------

    def _start_lookup(self, target: int) -> None:
        live = self._live()
        if not live:
            return
        node = live[self.rng.randrange(len(live))]
        now = self.engine.now
        lid, effects = node.core.lookup(target, now=now)
        self.pending[(node.index, lid)] = _Lookup(node, target, now)
        self.engine.apply(node, effects)

    def _score(self, lk: _Lookup, event: LookupDone, now: float) -> None:
        """Exact = the returned ids, leaving out nodes whose state changed during the
        lookup (joined or crashed meanwhile: either answer is right for them), are the
        closest among the nodes that were live and joined for the whole lookup."""
        res = event.result
        if res.timed_out:
            self.timed_out += 1
        eligible: list[int] = []
        changed: set[int] = set()
        for n in self.engine.nodes:
            joined = self.joined_at.get(n.index, math.inf)
            died = self.died_at.get(n.index, math.inf)
            if died <= lk.started:
                continue
            if joined <= lk.started and died > now:
                eligible.append(n.node_id)
            else:
                changed.add(n.node_id)
        origin = lk.node.node_id
        if origin in changed:  # the origin counts itself even mid-join
            changed.discard(origin)
            eligible.append(origin)
        target = lk.target
        got = [c.node_id for c in res.contacts if c.node_id not in changed]
        # ids are distinct, so are their XOR distances: sorting the distances themselves
        # (plain ints, no key function) orders the ids the same way, several times faster
        dists = sorted([i ^ target for i in eligible])
        truth = [d ^ target for d in dists[: self.scn.kademlia.k - (len(res.contacts) - len(got))]]
        self.results.append((set(got) == set(truth), res.hops, now - lk.started))

    # -- churn -------------------------------------------------------------------------

    def _churn(self) -> None:
        live = self._live()
        if len(live) < 4:
            return
        victim = live[self.rng.randrange(len(live))]
        self.engine.crash(victim)
        for key in [k for k in self.pending if k[0] == victim.index]:
            del self.pending[key]
            self.aborted += 1
        self.died_at[victim.index] = self.engine.now
        others = [n for n in live if n is not victim]
        seeds = [n.addr for n in self.rng.sample(others, 3)]
        self._spawn(victim.pos, seeds)
        self.churn_events += 1

    # -- run ---------------------------------------------------------------------------

    def schedule(self) -> None:
        scn, rng, eng = self.scn, self.rng, self.engine
        window = scn.join_window_s
        starts = sorted(rng.uniform(0, window) for _ in range(scn.nodes - 1))
        seeds: list[tuple[str, int]] = []
        eng.at(0.0, self._spawn_initial, 0, seeds)
        for pos, t in enumerate(starts, start=1):
            eng.at(t, self._spawn_initial, pos, seeds)
        for _ in range(round(scn.churn * scn.nodes)):
            eng.at(rng.uniform(window, scn.duration_s), self._churn)
        bits = scn.kademlia.id_bits
        for _ in range(scn.lookups):
            t = rng.uniform(scn.duration_s / 2, 0.95 * scn.duration_s)
            eng.at(t, self._start_lookup, rng.getrandbits(bits))

    def _spawn_initial(self, pos: int, seeds: list[tuple[str, int]]) -> None:
        node = self._spawn(pos, list(seeds))
        if len(seeds) < 3:
            seeds.append(node.addr)

    def run(self) -> dict[str, Any]:
        scn = self.scn
        t0, c0 = time.perf_counter(), time.process_time()
        self.schedule()
        # Phase 1: everybody joins (plus one minute to settle); phase 2: steady state.
        settle = min(scn.join_window_s + 60.0, scn.duration_s)
        self.engine.run_until(settle)
        t1, c1 = time.perf_counter(), time.process_time()
        self.engine.run_until(scn.duration_s)
        t2, c2 = time.perf_counter(), time.process_time()
        # Let lookups still in flight finish (bounded by the lookup deadline).
        end = scn.duration_s + scn.kademlia.lookup_timeout_s
        while self.pending and self.engine.now < end:
            self.engine.run_until(self.engine.now + 1.0)
        self.phase_wall = (settle, t1 - t0, t2 - t1)
        self.phase_cpu = (c1 - c0, c2 - c1)
        return self.metrics(time.perf_counter() - t0)

    def vivaldi_errors(self) -> np.ndarray:
        live = [n for n in self.engine.nodes if n.alive]
        if len(live) > self.scn.error_sample:
            live = random.Random(self.scn.seed + 1).sample(live, self.scn.error_sample)
        coords: list[Coordinate] = [n.core.vivaldi.coordinate for n in live]
        pred = predicted_rtt_matrix(coords)
        truth, same = truth_matrix(self.latency, [n.pos for n in live])
        iu = np.triu_indices(len(live), k=1)
        mask = ~same[iu]
        t = truth[iu][mask]
        p = pred[iu][mask]
        return np.abs(p - t) / t

    def metrics(self, wall: float) -> dict[str, Any]:
        scn = self.scn
        errs = self.vivaldi_errors()
        exact = [r[0] for r in self.results]
        hops = [r[1] for r in self.results]
        lat = sorted(r[2] for r in self.results)
        net = self.engine.network.statistics()
        live = [n for n in self.engine.nodes if n.alive]
        return {
            "nodes": scn.nodes,
            "seed": scn.seed,
            "loss": scn.loss,
            "churn": scn.churn,
            "lookups": len(self.results),
            "lookups_unfinished": len(self.pending),
            "lookups_aborted": self.aborted,
            "lookups_timed_out": self.timed_out,
            "lookup_exact_ratio": round(sum(exact) / len(exact), 4) if exact else None,
            "median_hops": statistics.median(hops) if hops else None,
            "lookup_latency_p50_s": _pct(lat, 0.5),
            "lookup_latency_p99_s": _pct(lat, 0.99),
            "vivaldi_median_rel_error": round(float(np.median(errs)), 4) if errs.size else None,
            "vivaldi_p90_rel_error": round(float(np.percentile(errs, 90)), 4)
            if errs.size
            else None,
            "mean_table_size": round(statistics.fmean(len(n.core.table) for n in live), 1),
            "messages": sum(self.engine.messages.values()),
            "messages_by_type": dict(sorted(self.engine.messages.items())),
            "datagrams_dropped": net.dropped,
            "churn_events": self.churn_events,
            "events": self.engine.events,
            "virtual_s": scn.duration_s,
            "wall_s": round(wall, 2),
        }

    def timings(self) -> dict[str, Any]:
        """Wall-clock measurements (they vary run to run, so they are not in ``metrics``):
        the join phase (joins + one minute to settle) and the steady state after it."""
        settle, join_wall, steady_wall = self.phase_wall
        join_cpu, steady_cpu = self.phase_cpu
        steady_virtual = self.scn.duration_s - settle
        return {
            "join_phase_virtual_s": settle,
            "join_phase_wall_s": round(join_wall, 2),
            "steady_virtual_s": steady_virtual,
            "steady_wall_s": round(steady_wall, 2),
            "steady_virtual_per_wall": round(steady_virtual / steady_wall, 2)
            if steady_wall > 0
            else None,
            # CPU time of the same phases: on a shared machine wall time also counts the
            # waits for a core, CPU time only this run's own work.
            "join_phase_cpu_s": round(join_cpu, 2),
            "steady_cpu_s": round(steady_cpu, 2),
            "steady_virtual_per_cpu": round(steady_virtual / steady_cpu, 2)
            if steady_cpu > 0
            else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            # which build ran the hot path: mypyc-compiled (DVMS_ACCEL=1) or the source
            "compiled": accel.active(),
        }


def truth_matrix(lat: LatencyModel, pos: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """True RTTs between the given network positions, and which pairs share a position
    (same matrix row: LAN neighbours). Vectorised for matrix models."""
    if isinstance(lat, MatrixLatency):
        idx = np.asarray(pos) % lat.size
        truth = lat.to_array()[np.ix_(idx, idx)]
        same = idx[:, None] == idx[None, :]
        return truth, same
    truth = np.array([[lat.rtt(a, b) for b in pos] for a in pos])
    same = np.array([[lat.same_position(a, b) for b in pos] for a in pos])
    return truth, same


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return round(sorted_values[i], 4)


def run_overlay(scn: OverlayScenario, *, timings: bool = False) -> dict[str, Any]:
    """Run the scenario; with ``timings`` add the wall-clock breakdown (see
    ``OverlaySim.timings``), which makes the output differ from run to run."""
    sim = OverlaySim(scn)
    result = sim.run()
    if timings:
        result.update(sim.timings())
    return result
