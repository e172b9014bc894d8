"""A node's Prometheus metrics: one ``CollectorRegistry`` per node (several nodes may
live in one process), filled from what the node already produces::

    core events (Emit)        -> on_event: counters and histograms of launches, events,
    shell observations          partitions, solver runs, driver calls, lookups
    (services/observed.py)
    vjob state changes        -> on_vjob: launch SLI, unschedulable VMs
    violation edges           -> violation_ended (the observability service samples)
    scrape                    -> _Live.collect: gauges and counters read from the node's
                                 state at that moment (routing table, codec drops, host,
                                 VMs by state, partitions led, pending VMs)

Gauges are read at scrape time from the state they describe, never incremented and
decremented, so they cannot drift: once the VMs are gone and the overload has ended they
read their idle value. Labels take a few fixed values each (``RESULTS``,
``OUTCOMES``, ``REASONS``, the codec's drop reasons, ``DomainState``, the overlay's
request types); no VM, vjob or namespace name is ever a label. Names follow
Prometheus' conventions: ``dvms_`` prefix, base units (seconds, bytes, cores) in the
name, ``_total`` on counters.
``docs/observability.md`` lists every family.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dvms.hypervisor.base import DomainState
from dvms.overlay.core import LookupDone, OverlayCore
from dvms.overlay.rpcstats import RESULTS as RPC_RESULTS
from dvms.overlay.rpcstats import RpcStats
from dvms.partition.events import EventDone, EventStarted, PartitionReleased, PlanApplied
from dvms.runtime.capabilities import PartitionStatus
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.observed import DriverCallDone, SolverRan
from dvms.runtime.services.partition_log import PartitionLog
from dvms.wire.envelope import WireCodec

__all__ = ["EVENT_KINDS", "OUTCOMES", "NodeMetrics", "outcome_label", "reason_label"]

# No ``*_created`` series: they double the exposition and no dashboard reads them.
disable_created_metrics()

MIB = 1024 * 1024

#: Buckets, seconds: scheduling and solver runs (ms to a minute).
FAST_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets, seconds: partitions, migrations, violations, vjob launches (100 ms to 10 min).
SLOW_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Buckets: partition sizes (nodes) and lookup hops.
SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)

#: DVMS event kinds (``EventStarted.kind``).
EVENT_KINDS = ("launch", "overload", "underload")

#: A partition's end (``PartitionReleased.reason``) as a label: first matching prefix.
OUTCOMES = (
    ("solved", "solved"),
    ("actions failed", "actions_failed"),
    ("lease expired", "lease_expired"),
    ("merged into", "merged"),
    ("initiator", "initiator_lost"),
    ("two laps", "no_solution"),
    ("node shutting down", "shutdown"),
)

#: Why a launch was refused (``EventDone.reason``, vjob reasons) as a label: the first
#: entry whose text occurs in the reason; "other" if none does.
REASONS = (
    ("VM name already in use", "name_taken"),
    ("two laps", "no_solution"),
    ("no relief plan", "no_solution"),
    ("no solution", "no_solution"),
    ("rejected by the checker", "checker"),
    ("solver error", "solver_error"),
    ("member", "member_lost"),
    ("initiator", "member_lost"),
    ("actions failed", "actions_failed"),
    ("shutting down", "shutdown"),
    ("unreadable", "bad_vjob"),
)


def outcome_label(reason: str) -> str:
    for prefix, label in OUTCOMES:
        if reason.startswith(prefix):
            return label
    return "other"


def reason_label(reason: str) -> str:
    for text, label in REASONS:
        if text in reason:
            return label
    return "other"


class _Hist:
    """One histogram series as plain numbers: ``buckets[i]`` counts values in
    ``(bounds[i-1], bounds[i]]``, the last one those above every bound; cumulative at
    scrape time, as Prometheus wants them."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.buckets, strict=True):
            total += n
            out.append((floatToGoString(bound), float(total)))
        return out


class _Family:
    """A counter family (``bounds`` None) or a histogram family, kept as plain numbers
    by label values and rendered by prometheus_client at scrape time. Counting is a dict
    update: no lock (the node's event loop is the only writer), no label checks (the
    label values come from the fixed tables above)."""

    __slots__ = ("bounds", "doc", "hists", "labels", "name", "values")

    def __init__(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...] = (),
        *,
        bounds: tuple[float, ...] | None = None,
        start: Iterable[tuple[str, ...]] = (),
    ) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.values: dict[tuple[str, ...], float] = {}
        self.hists: dict[tuple[str, ...], _Hist] = {}
        for key in start if labels else [()]:
            if bounds is None:
                self.values[key] = 0.0
            else:
                self.hists[key] = _Hist(bounds)

    def inc(self, key: tuple[str, ...] = (), n: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + n

    def observe(self, value: float, key: tuple[str, ...] = ()) -> None:
        h = self.hists.get(key)
        if h is None:
            assert self.bounds is not None, self.name
            h = self.hists[key] = _Hist(self.bounds)
        h.observe(value)

    def metric(self) -> Metric:
        if self.bounds is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for key, n in self.values.items():
                counter.add_metric(key, n)
            return counter
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, h in self.hists.items():
            hist.add_metric(key, h.cumulative(), h.sum)
        return hist


class _Kept(Collector):
    """The families a node counts as things happen, rendered at each scrape."""

    def __init__(self, families: Iterable[_Family]) -> None:
        self.families = tuple(families)

    def collect(self) -> Iterable[Metric]:
        for family in self.families:
            yield family.metric()


class NodeMetrics:
    """The metric families of one node, in their own registry (``exposition`` renders
    it). Events are counted into plain numbers (``_Family``) that the registry renders
    at scrape time; ``vjob_pending`` and ``leading`` are read at each scrape.
    ``spent_s`` keeps the CPU time (of the event loop's thread) spent counting events
    and rendering scrapes, for the cost of metrics to be measured on a running node."""

    def __init__(
        self,
        *,
        name: str,
        overlay: OverlayCore,
        codec: WireCodec,
        partition: PartitionStatus,
        partitions: PartitionLog,
        monitor: HostMonitor,
        pending_vms: Callable[[], int] = lambda: 0,
        loop_lag: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.partitions = partitions
        self.node_id = overlay.node_id
        #: CPU seconds spent counting events ("observe") and rendering /metrics ("scrape")
        self.spent_s = {"observe": 0.0, "scrape": 0.0}
        ok_failed = [("ok",), ("failed",)]
        # scheduling (kube-scheduler's names)
        self.attempts = _Family(
            "dvms_schedule_attempts", "Launch events this node originated, by result "
            "(scheduled, unschedulable).", ("result",),
            start=[("scheduled",), ("unschedulable",)],
        )  # fmt: skip
        self.attempt_s = _Family(
            "dvms_scheduling_attempt_duration_seconds", "From a launch event's start to "
            "its end at its origin.", ("result",), bounds=FAST_S,
        )  # fmt: skip
        self.unschedulable = _Family(
            "dvms_unschedulable_vms", "VMs of vjobs refused, by the rule that refused "
            "them.", ("reason",),
        )  # fmt: skip
        self.vjob_launch_s = _Family(
            "dvms_vjob_launch_duration_seconds", "Vjob launch SLI: from submit to every "
            "VM running (vjobs owned by this node).", bounds=SLOW_S,
        )  # fmt: skip
        # DVMS / VMPlaceS
        self.events = _Family(
            "dvms_events", "DVMS events this node raised, by type (launch, overload, "
            "underload).", ("type",), start=[(k,) for k in EVENT_KINDS],
        )  # fmt: skip
        self.events_done = _Family(
            "dvms_events_done", "DVMS events this node raised that ended, by type and "
            "result (solved, failed).", ("type", "result"),
        )  # fmt: skip
        self.violation_s = _Family(
            "dvms_violation_duration_seconds", "How long each overload of this host "
            "lasted (the VMPlaceS violation time).", bounds=SLOW_S,
        )  # fmt: skip
        self.partition_size = _Family(
            "dvms_partition_size", "Members of each partition this node reported the end "
            "of (its leader, or a leaderless end's deputy).", bounds=SIZES,
        )  # fmt: skip
        self.partition_s = _Family(
            "dvms_partition_lifetime_seconds", "From a partition's start (as this node "
            "saw it) to its end, partitions this node reported the end of.", bounds=SLOW_S,
        )  # fmt: skip
        self.outcomes = _Family(
            "dvms_partition_outcome", "Partitions this node reported the end of (its "
            "leader, or a leaderless end's deputy), by outcome.", ("outcome",),
        )  # fmt: skip
        self.solver_s = _Family(
            "dvms_solver_duration_seconds", "Solver runs of partitions this node led.",
            ("result",), bounds=FAST_S,
        )  # fmt: skip
        self.plan_actions = _Family(
            "dvms_plan_actions", "Actions of plans this node applied as leader, by result.",
            ("result",), start=ok_failed,
        )  # fmt: skip
        self.migrations = _Family(
            "dvms_migrations", "Migrations from this host, by result (ok, failed).",
            ("result",), start=ok_failed,
        )  # fmt: skip
        self.migration_s = _Family(
            "dvms_migration_duration_seconds", "Migrations from this host, call to result.",
            bounds=SLOW_S,
        )  # fmt: skip
        self.boots = _Family(
            "dvms_vm_boots", "VMs created on this host by partition plans, by result.",
            ("result",), start=ok_failed,
        )  # fmt: skip
        # overlay (memberlist / serf-like)
        self.lookup_s = _Family(
            "dvms_overlay_lookup_duration_seconds", "Kademlia lookups, start to end.",
            bounds=FAST_S,
        )  # fmt: skip
        self.lookup_hops = _Family(
            "dvms_overlay_lookup_hops", "Kademlia lookups: hops to the result.",
            bounds=SIZES,
        )  # fmt: skip
        r = self.registry
        r.register(_Kept(f for f in vars(self).values() if isinstance(f, _Family)))
        r.register(
            _Live(
                name=name,
                overlay=overlay,
                codec=codec,
                partition=partition,
                partitions=partitions,
                monitor=monitor,
                pending_vms=pending_vms,
                loop_lag=loop_lag,
                spent_s=self.spent_s,
            )
        )
        self._on: dict[type, Callable[[Any], None]] = {
            EventStarted: self._started,
            EventDone: self._done,
            PartitionReleased: self._released,
            PlanApplied: self._plan,
            SolverRan: self._solver,
            DriverCallDone: self._driver,
            LookupDone: self._lookup,
        }

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (version 0.0.4)."""
        t0 = time.thread_time()
        out = generate_latest(self.registry)
        self.spent_s["scrape"] += time.thread_time() - t0
        return out

    # -- observations ------------------------------------------------------------------

    def on_event(self, event: object) -> None:
        on = self._on.get(type(event))
        if on is not None:
            t0 = time.thread_time()
            on(event)
            self.spent_s["observe"] += time.thread_time() - t0

    def on_vjob(self, record: dict[str, Any]) -> None:
        state = record.get("state")
        if state == "done":
            took = float(record.get("updated", 0.0)) - float(record.get("submitted", 0.0))
            self.vjob_launch_s.observe(max(0.0, took))
        elif state == "failed":
            reason = reason_label(str(record.get("reason", "")))
            self.unschedulable.inc((reason,), int(record.get("vms", 0)))

    def violation_ended(self, duration_s: float) -> None:
        self.violation_s.observe(duration_s)

    def _started(self, e: EventStarted) -> None:
        if e.kind in EVENT_KINDS:
            self.events.inc((e.kind,))

    def _done(self, e: EventDone) -> None:
        if e.kind in EVENT_KINDS:
            self.events_done.inc((e.kind, "solved" if e.ok else "failed"))
        if e.kind == "launch":
            result = ("scheduled",) if e.ok else ("unschedulable",)
            self.attempts.inc(result)
            self.attempt_s.observe(max(0.0, e.finished - e.started), result)

    def _released(self, e: PartitionReleased) -> None:
        rec = self.partitions.reported_here(e.pid, self.node_id)
        if rec is None:
            return  # counted once: by its leader at its end, or a leaderless end's deputy
        self.outcomes.inc((outcome_label(e.reason),))
        self.partition_size.observe(len(rec.members))
        if rec.ended is not None:
            self.partition_s.observe(max(0.0, rec.ended - rec.started))

    def _plan(self, e: PlanApplied) -> None:
        self.plan_actions.inc(("ok",), e.actions - e.failed)
        self.plan_actions.inc(("failed",), e.failed)

    def _solver(self, e: SolverRan) -> None:
        self.solver_s.observe(e.duration_s, ("solved",) if e.ok else ("failed",))

    def _driver(self, e: DriverCallDone) -> None:
        result = ("ok",) if e.ok else ("failed",)
        if e.call == "migrate":
            self.migrations.inc(result)
            self.migration_s.observe(e.duration_s)
        else:
            self.boots.inc(result)

    def _lookup(self, e: LookupDone) -> None:
        res = e.result
        self.lookup_s.observe(max(0.0, res.finished - res.started))
        self.lookup_hops.observe(res.hops)


class _Live(Collector):
    """Families read from the node's state at each scrape."""

    def __init__(
        self,
        *,
        name: str,
        overlay: OverlayCore,
        codec: WireCodec,
        partition: PartitionStatus,
        partitions: PartitionLog,
        monitor: HostMonitor,
        pending_vms: Callable[[], int],
        loop_lag: Callable[[], float],
        spent_s: dict[str, float],
    ) -> None:
        self.name = name
        self.spent_s = spent_s
        self.overlay = overlay
        self.codec = codec
        self.partition = partition
        self.partitions = partitions
        self.monitor = monitor
        self.pending_vms = pending_vms
        self.loop_lag = loop_lag

    def collect(self) -> Iterable[Metric]:
        yield from self._node()
        yield from self._scheduling()
        yield from self._overlay()
        yield from self._host()

    def _node(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("dvms_node_info", "This node (value 1).", labels=["node"])
        info.add_metric([self.name], 1.0)
        yield info
        yield GaugeMetricFamily(
            "dvms_event_loop_lag_seconds",
            "How late the node's event loop last woke a periodic task.",
            value=self.loop_lag(),
        )
        spent = CounterMetricFamily(
            "dvms_metrics_seconds", "CPU time this node spent on its metrics, by part "
            "(observe: counting events; scrape: rendering /metrics, up to the previous "
            "scrape).",
            labels=["part"],
        )  # fmt: skip
        for part, s in self.spent_s.items():
            spent.add_metric([part], s)
        yield spent

    def _scheduling(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "dvms_pending_vms", "VMs of vjobs this node is placing now.", value=self.pending_vms()
        )
        yield GaugeMetricFamily(
            "dvms_violation_active",
            "1 while this host is overloaded (demand above capacity), else 0.",
            value=1.0 if self.partition.overloaded() else 0.0,
        )
        yield GaugeMetricFamily(
            "dvms_partitions_active", "Partitions in flight that this node leads.",
            value=self.partitions.leading(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_partition_member", "1 while this node is in a partition, else 0.",
            value=1.0 if self.partition.busy() else 0.0,
        )  # fmt: skip

    def _overlay(self) -> Iterable[Metric]:
        core = self.overlay
        stats = core.stats
        yield GaugeMetricFamily(
            "dvms_overlay_joined", "1 once the node joined the overlay.",
            value=1.0 if core.joined else 0.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_overlay_routing_table_peers", "Peers in the Kademlia routing table.",
            value=len(core.table),
        )  # fmt: skip
        yield from self._rpcs(core.rpc_stats)
        lookups = CounterMetricFamily(
            "dvms_overlay_lookups", "Kademlia lookups started, by kind.", labels=["kind"]
        )
        for key, n in sorted(stats.items()):
            if key.startswith("lookup_"):
                lookups.add_metric([key.removeprefix("lookup_")], n)
        yield lookups
        coord = core.coordinate()
        yield GaugeMetricFamily(
            "dvms_vivaldi_error_estimate", "The Vivaldi coordinate's own error estimate "
            "(relative).", value=coord.error if coord is not None else 0.0,
        )  # fmt: skip
        rejected = CounterMetricFamily(
            "dvms_vivaldi_rejected", "Vivaldi samples refused, by reason.", labels=["reason"]
        )
        updates = CounterMetricFamily("dvms_vivaldi_updates", "Vivaldi coordinate updates.")
        viv = core.vivaldi
        if viv is not None:
            vs = viv.stats
            rejected.add_metric(["rtt"], vs.rejected_rtt)
            rejected.add_metric(["dimension"], vs.rejected_dimension)
            rejected.add_metric(["coordinate"], vs.rejected_coordinate)
            updates.add_metric([], vs.updates)
        yield rejected
        yield updates
        dropped = CounterMetricFamily(
            "dvms_wire_dropped", "Datagrams dropped by the wire codec, by reason.",
            labels=["reason"],
        )  # fmt: skip
        for reason, n in sorted(self.codec.drops.items()):
            dropped.add_metric([reason], n)
        yield dropped
        offsets = GaugeMetricFamily(
            "dvms_peer_clock_offset_seconds", "Each peer's estimated clock offset (its clock "
            "minus this node's), from the timestamps of its datagrams.", labels=["peer"],
        )  # fmt: skip
        for peer, offset in sorted(core.clocks.offsets().items()):
            offsets.add_metric([f"{peer:040x}"], offset)
        yield offsets
        yield CounterMetricFamily(
            "dvms_wire_accepted", "Datagrams the wire codec accepted.", value=self.codec.accepted
        )

    def _rpcs(self, rs: RpcStats) -> Iterable[Metric]:
        """This node's overlay RPCs by request type: outcomes, retransmissions, latency
        (``dvms.overlay.rpcstats``)."""
        rpcs = CounterMetricFamily(
            "dvms_overlay_rpcs", "Overlay RPCs this node sent that ended, by request type "
            "and result (ok; error: refused or a wrong answer; timeout: every attempt "
            "timed out).", labels=["type", "result"],
        )  # fmt: skip
        retrans = CounterMetricFamily(
            "dvms_overlay_rpc_retransmits", "Overlay RPC attempts sent again after a "
            "timeout, by request type.", labels=["type"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "dvms_overlay_rpc_duration_seconds", "Overlay RPCs answered, from the first "
            "attempt to the answer, by request type.", labels=["type"],
        )  # fmt: skip
        for kind, k in rs.kinds():
            for result in RPC_RESULTS:
                rpcs.add_metric([kind, result], k.count(result))
            retrans.add_metric([kind], k.retransmits)
            latency.add_metric([kind], rs.histogram(k), k.sum_s)
        yield rpcs
        yield retrans
        yield latency

    def _host(self) -> Iterable[Metric]:
        m = self.monitor
        state = m.state()
        running = state.vms if state is not None else ()
        yield GaugeMetricFamily("dvms_host_cpu_capacity_cores", "CPUs of this host.", value=m.cpus)
        yield GaugeMetricFamily(
            "dvms_host_memory_capacity_bytes", "Memory of this host.", value=m.memory_mib * MIB
        )
        yield GaugeMetricFamily(
            "dvms_host_cpu_committed_cores", "vCPUs of the VMs running on this host.",
            value=sum(v.vcpus for v in running),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_host_memory_committed_bytes", "Memory of the VMs running on this host.",
            value=sum(v.memory_mib for v in running) * MIB,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_host_cpu_demand_cores", "CPU demand of the VMs on this host, as the "
            "overload check sees it (measured or synthetic).",
            value=sum(v.cpu_demand for v in running),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_host_migrations_in_flight", "Live migrations in or out of this host now.",
            value=m.migrating,
        )  # fmt: skip
        by_state = GaugeMetricFamily("dvms_vms", "VMs on this host, by state.", labels=["state"])
        counts = dict.fromkeys(DomainState, 0)
        for v in m.vms:
            counts[v.state] += 1
        for st, n in counts.items():
            by_state.add_metric([st.value], n)
        yield by_state
