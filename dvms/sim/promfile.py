"""The daemon's metric families for a simulated run, so a simulation and a real cluster
are plotted the same way (``docs/observability.md`` lists the families).

``dvms sim run --out DIR`` samples the world after each of the run's steps (1/200 of
its duration, between two ``run_until`` calls: sampling never touches the event heap,
so a seed gives the same run with or without it) and writes::

    DIR/metrics.csv    time_s,metric,labels,value   one row per sample per step
    DIR/metrics.prom   the last step in Prometheus' text format (prometheus_client)

Values are cluster-wide: what summing the daemons' series over every node gives
(``sum(dvms_violation_active)``: hosts in violation now). Histograms of the daemon
appear as their ``_count`` and ``_sum`` only (a Prometheus summary without quantiles):
``rate(x_sum) / rate(x_count)`` reads the same on both. Names, units and labels are the
daemon's; the simulator's partition outcome ``success`` is the daemon's ``solved``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from dvms.sim.metrics import SUCCESS

__all__ = ["StepWriter", "WorldCollector"]

#: Simulated CPU capacity and demand are in units of 1/100 CPU.
UNITS_PER_CORE = 100
MIB = 1024 * 1024


def _outcome(name: str) -> str:
    """A simulator partition outcome as a label value (bounded: the schedulers' words)."""
    if name == SUCCESS:
        return "solved"
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "other"


class WorldCollector(Collector):
    """The families of a simulated world at the moment ``collect`` is called."""

    def __init__(self, world: Any) -> None:
        self.world = world

    def collect(self) -> Iterable[Metric]:
        w = self.world
        m = w.metrics
        yield GaugeMetricFamily(
            "dvms_violation_active", "Hosts in violation now.", value=m.in_violation
        )
        durations = list(m.durations)
        yield SummaryMetricFamily(
            "dvms_violation_duration_seconds", "Violations ended so far.",
            count_value=len(durations), sum_value=sum(durations),
        )  # fmt: skip
        events = CounterMetricFamily("dvms_events", "DVMS events raised.", labels=["type"])
        events.add_metric(["overload"], m.overload_events)
        events.add_metric(["launch"], m.launch_requests)
        yield events
        done = CounterMetricFamily(
            "dvms_events_done", "Overload events ended.", labels=["type", "result"]
        )
        done.add_metric(["overload", "solved"], m.overloads_resolved)
        done.add_metric(["overload", "failed"], m.overloads_failed)
        yield done
        outcomes = CounterMetricFamily(
            "dvms_partition_outcome", "Partitions ended, by outcome.", labels=["outcome"]
        )
        sizes: list[int] = []
        for name, members in sorted(m.partitions.items()):
            outcomes.add_metric([_outcome(name)], len(members))
            sizes += members
        yield outcomes
        yield SummaryMetricFamily(
            "dvms_partition_size", "Members of each partition ended.",
            count_value=len(sizes), sum_value=sum(sizes),
        )  # fmt: skip
        migr = list(m.migration_durations)
        migrations = CounterMetricFamily(
            "dvms_migrations", "Migrations ended, by result.", labels=["result"]
        )
        migrations.add_metric(["ok"], len(migr))
        migrations.add_metric(["failed"], m.migrations_failed)
        yield migrations
        yield SummaryMetricFamily(
            "dvms_migration_duration_seconds", "Migrations that succeeded.",
            count_value=len(migr), sum_value=sum(migr),
        )  # fmt: skip
        yield SummaryMetricFamily(
            "dvms_solver_duration_seconds", "Solver runs (virtual time charged).",
            count_value=sum(m.solver_runs.values()), sum_value=m.solver_s,
        )  # fmt: skip
        placed = len(m.launch_latencies)
        attempts = CounterMetricFamily(
            "dvms_schedule_attempts", "Launches ended, by result.", labels=["result"]
        )
        attempts.add_metric(["scheduled"], placed)
        attempts.add_metric(["unschedulable"], m.launch_requests - placed)
        yield attempts
        yield from self._hosts()

    def _hosts(self) -> Iterable[Metric]:
        w = self.world
        up = [h for h in range(len(w.hosts)) if w.host_up[h]]
        yield GaugeMetricFamily(
            "dvms_host_cpu_capacity_cores", "CPUs of the hosts up.",
            value=sum(w.cap[h] for h in up) / UNITS_PER_CORE,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_host_cpu_demand_cores", "CPU demand of the VMs on the hosts up.",
            value=sum(w.host_demand[h] for h in up) / UNITS_PER_CORE,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dvms_host_memory_capacity_bytes", "Memory of the hosts up.",
            value=sum(w.hosts[h].memory_mib for h in up) * MIB,
        )  # fmt: skip
        on_up = sum(len(w.host_vms[h]) for h in up)
        vms = GaugeMetricFamily("dvms_vms", "VMs on the hosts up, by state.", labels=["state"])
        vms.add_metric(["running"], on_up)
        yield vms


class StepWriter:
    """Writes ``metrics.csv`` row by row (``step``) and ``metrics.prom`` at ``close``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.registry: CollectorRegistry | None = None
        self._file: IO[str] = open(out / "metrics.csv", "w", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        self._csv.writerow(("time_s", "metric", "labels", "value"))

    def step(self, world: Any, now: float) -> None:
        if self.registry is None:
            self.registry = CollectorRegistry(auto_describe=True)
            self.registry.register(WorldCollector(world))
        for family in self.registry.collect():
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                self._csv.writerow((f"{now:g}", s.name, labels, f"{s.value:g}"))

    def close(self) -> None:
        self._file.close()
        if self.registry is not None:
            (self.out / "metrics.prom").write_bytes(generate_latest(self.registry))
