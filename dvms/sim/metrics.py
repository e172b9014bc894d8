"""VMPlaceS's metrics, recorded incrementally.

The world tells ``Metrics`` when a host enters or leaves violation (Σ VM CPU demand >
capacity) and when migrations start and end; schedulers tell it what they noticed and
did (``detected``, ``solver_run``, ``partition``, ``message``...). Nothing here scans
hosts per event: every call is O(1) (``finish`` is O(hosts), once).

A violation runs from the moment a host's demand exceeds its capacity to the moment it
does not. It is *detected* the first time a scheduler notices it (VMPlaceS trace state
``violation-det``: the DVMS monitor's tick, or the start of a centralized run), which
splits its time into detection (start -> noticed) and fix (noticed -> end). Violations
still open at the end of the run are closed at that time. A crashed host is not in
violation (VMPlaceS: switched-off hosts do not count).

Keys of ``summary()`` a scheduler cannot fill are 0 or null (``None``):
``mean_partition_size`` is null without partitions (baselines), the launch latencies are
null without launches (a launch is one vjob; its latency runs from submission to the
entry node learning that every VM was created), ``mean_violation_s`` and
``mean_migration_s`` are null when there was none.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from typing import Any

__all__ = ["SUCCESS", "Metrics", "percentile"]

#: Partition outcome counted by ``mean_partition_size`` (VMPlaceS ``psize``: successful
#: solver runs only).
SUCCESS = "success"
_NOT = -1.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


class Metrics:
    def __init__(self, hosts: int, *, monitor_period_s: float, site_of: list[int]) -> None:
        self.hosts = hosts
        self.monitor_period_s = monitor_period_s
        self.site_of = site_of
        self.start = [_NOT] * hosts  # start of the open violation, or _NOT
        self.noticed = [_NOT] * hosts  # detection time of the open violation, or _NOT
        self.in_violation = 0
        # closed violations
        self.durations = array("d")
        self.detect_s = 0.0  # cumulated time before detection
        self.fix_s = 0.0  # cumulated time after detection
        self.detected_count = 0
        self.open_at_end = 0
        # time series of the number of hosts in violation (change points)
        self.series_t = array("d", [0.0])
        self.series_n = array("i", [0])
        # scheduler activity
        self.overload_events = 0
        self.overloads_resolved = 0
        self.overloads_failed = 0
        self.solver_s = 0.0
        self.solver_wall_s = 0.0
        self.solver_runs: Counter[str] = Counter()
        self.solver_over_limit = 0
        self.reconfiguration_s = 0.0
        self.migrations_started = 0
        self.migrations_failed = 0
        self.migration_durations = array("d")
        self.inter_site_migrations = 0
        self.inbound_violations = 0
        self.partitions: dict[str, list[int]] = {}
        self.messages: Counter[str] = Counter()
        self.inter_site_messages = 0
        self.launch_requests = 0
        self.launch_latencies: list[float] = []
        self.launch_vms = 0
        self.launch_vms_placed = 0
        self.constraint_violations = 0
        self.constraint_examples: list[str] = []
        #: Scheduler-specific result keys (set by the scheduler, e.g. at the end).
        self.extra: dict[str, Any] = {}
        self.invariant_violations = 0
        self.invariant_examples: list[str] = []
        self.finished_at: float | None = None

    # -- violations (called by the world) -------------------------------------------

    def set_violation(self, h: int, over: bool, now: float) -> None:
        """Host ``h`` enters (``over``) or leaves violation at ``now``; idempotent."""
        if over:
            if self.start[h] != _NOT:
                return
            self.start[h] = now
            self.in_violation += 1
        else:
            began = self.start[h]
            if began == _NOT:
                return
            self._close(h, began, now)
            self.in_violation -= 1
        self.series_t.append(now)
        self.series_n.append(self.in_violation)

    def _close(self, h: int, began: float, now: float) -> None:
        self.durations.append(now - began)
        seen = self.noticed[h]
        if seen == _NOT:
            self.detect_s += now - began
        else:
            self.detected_count += 1
            self.detect_s += seen - began
            self.fix_s += now - seen
        self.start[h] = self.noticed[h] = _NOT

    def is_violated(self, h: int) -> bool:
        return self.start[h] != _NOT

    def detected(self, h: int, now: float) -> bool:
        """A scheduler noticed host ``h``'s violation; True if this is the first time."""
        if self.start[h] == _NOT or self.noticed[h] != _NOT:
            return False
        self.noticed[h] = now
        return True

    # -- scheduler activity -----------------------------------------------------------

    def overload_event(self) -> None:
        """A scheduler started handling one overloaded host (an ISP, a host in a run)."""
        self.overload_events += 1

    def overload_outcome(self, resolved: bool, count: int = 1) -> None:
        if resolved:
            self.overloads_resolved += count
        else:
            self.overloads_failed += count

    def solver_run(
        self, virtual_s: float, wall_s: float, outcome: str, *, over_limit: bool = False
    ) -> None:
        """One call of the placement engine, charged ``virtual_s`` of virtual time."""
        self.solver_s += virtual_s
        self.solver_wall_s += wall_s
        self.solver_runs[outcome] += 1
        self.solver_over_limit += over_limit

    def reconfiguration(self, duration_s: float) -> None:
        """A plan took ``duration_s`` virtual seconds to apply (first start -> last end)."""
        self.reconfiguration_s += duration_s

    def migration_started(self, src: int, dst: int) -> None:
        self.migrations_started += 1
        if self.site_of[src] != self.site_of[dst]:
            self.inter_site_migrations += 1

    def migration_ended(self, ok: bool, duration_s: float) -> None:
        if ok:
            self.migration_durations.append(duration_s)
        else:
            self.migrations_failed += 1

    def inbound_violation(self) -> None:
        """A migration's landing put its destination in violation (VMPlaceS trace state
        ``violation-out``: a violation the scheduler made)."""
        self.inbound_violations += 1

    def partition(self, size: int, outcome: str, **_details: Any) -> None:
        """A DVMS partition ended: ``size`` hosts, ``outcome`` (``SUCCESS`` counts for
        ``mean_partition_size``; any other string is kept for the per-outcome table)."""
        self.partitions.setdefault(outcome, []).append(size)

    def message(self, src_site: int, dst_site: int, kind: str) -> None:
        """One protocol message of ``kind`` between two sites (inter-site if they differ)."""
        self.messages[kind] += 1
        if src_site != dst_site:
            self.inter_site_messages += 1

    def launch(self, latency_s: float | None, vms: int = 1) -> None:
        """One launch request (a vjob of ``vms`` VMs); ``latency_s`` is None when it was
        not placed."""
        self.launch_requests += 1
        self.launch_vms += vms
        if latency_s is not None:
            self.launch_latencies.append(latency_s)
            self.launch_vms_placed += vms

    def constraint_violation(self, what: str) -> None:
        """A placed VM's constraint does not hold (spread, coschedule)."""
        self.constraint_violations += 1
        if len(self.constraint_examples) < 10:
            self.constraint_examples.append(what)

    def invariant_violation(self, what: str) -> None:
        self.invariant_violations += 1
        if len(self.invariant_examples) < 10:
            self.invariant_examples.append(what)

    # -- end of run -------------------------------------------------------------------

    def finish(self, now: float) -> None:
        """Close the violations still open at ``now`` (the end of the run); once."""
        if self.finished_at is not None:
            return
        for h in range(self.hosts):
            if self.start[h] != _NOT:
                self.open_at_end += 1
                self._close(h, self.start[h], now)
        self.finished_at = now

    def binned_violations(self, step_s: float, until: float) -> tuple[list[float], list[float]]:
        """Time-weighted mean number of hosts in violation per ``step_s`` bin."""
        bins = max(1, math.ceil(until / step_s))
        acc = [0.0] * bins
        t, n = self.series_t, self.series_n
        for i in range(len(t)):
            a = t[i]
            b = t[i + 1] if i + 1 < len(t) else until
            while a < b and n[i]:
                k = min(int(a // step_s), bins - 1)
                edge = min(b, (k + 1) * step_s) if k < bins - 1 else b
                if edge <= a:  # float division put a bin edge in the bin before it
                    k = min(k + 1, bins - 1)
                    edge = min(b, (k + 1) * step_s) if k < bins - 1 else b
                acc[k] += n[i] * (edge - a)
                a = edge
        return [k * step_s for k in range(bins)], [x / step_s for x in acc]

    def summary(self) -> dict[str, Any]:
        """The result keys (see the module docstring for null/0 conventions)."""
        durations = list(self.durations)
        migr = list(self.migration_durations)
        success = self.partitions.get(SUCCESS, [])
        lat = self.launch_latencies
        count = len(durations)
        return {
            "overload_events": self.overload_events,
            "overloads_resolved": self.overloads_resolved,
            "overloads_failed": self.overloads_failed,
            "cumulated_violation_s": _r(sum(durations)),
            "violations": count,
            "mean_violation_s": _r(sum(durations) / count) if count else None,
            "violation_detection_s": _r(self.detect_s),
            "violation_fix_s": _r(self.fix_s),
            "mean_detection_s": _r(self.detect_s / count) if count else None,
            "mean_fix_s": _r(self.fix_s / self.detected_count) if self.detected_count else None,
            "violations_detected": self.detected_count,
            "violations_open_at_end": self.open_at_end,
            "violations_by_inbound_migration": self.inbound_violations,
            "migrations": len(migr),
            "migrations_started": self.migrations_started,
            "migrations_failed": self.migrations_failed,
            "mean_migration_s": _r(sum(migr) / len(migr)) if migr else None,
            "inter_site_migrations": self.inter_site_migrations,
            "inter_site_messages": self.inter_site_messages,
            "inter_site_operations": self.inter_site_migrations + self.inter_site_messages,
            "mean_partition_size": _r(sum(success) / len(success)) if success else None,
            "partitions": {k: len(v) for k, v in sorted(self.partitions.items())},
            "messages": dict(sorted(self.messages.items())),
            "solver_s": _r(self.solver_s),
            "solver_runs": dict(sorted(self.solver_runs.items())),
            "solver_over_limit": self.solver_over_limit,
            "reconfiguration_s": _r(self.reconfiguration_s),
            "invariant_violations": self.invariant_violations,
            "launch_requests": self.launch_requests,
            "launches_placed": len(lat),
            "launch_latency_p50_s": _r(percentile(lat, 50)),
            "launch_latency_p99_s": _r(percentile(lat, 99)),
            "launch_vms": self.launch_vms,
            "launch_vms_placed": self.launch_vms_placed,
            "constraint_violations": self.constraint_violations,
            "constraint_examples": list(self.constraint_examples),
            "invariant_examples": list(self.invariant_examples),
            **self.extra,
            "monitor_period_s": self.monitor_period_s,
        }
