"""The simulator writes the daemon's metric families per time step: the same names and
labels, counts that agree with the run's summary, and the same run with or without it."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dvms.sim.promfile import StepWriter
from dvms.sim.run import run_scenario
from dvms.sim.scenario import load_scenario

DAEMON = Path(__file__).resolve().parents[2] / "dvms" / "runtime" / "services" / "metrics.py"
WALL = ("wall_s", "virtual_per_wall")


def daemon_families() -> set[str]:
    """Every family name the daemon's metrics module defines."""
    return set(re.findall(r'"(dvms_[a-z_]+)"', DAEMON.read_text()))


def test_a_run_writes_the_daemons_families_per_step(tmp_path):
    scn = replace(load_scenario("vmplaces-64"), duration_s=300.0)
    writer = StepWriter(tmp_path)
    summary, _ = run_scenario(scn, "dvms", on_step=writer.step)
    writer.close()
    plain, _ = run_scenario(scn, "dvms")
    assert {k: v for k, v in summary.items() if k not in WALL} == {
        k: v for k, v in plain.items() if k not in WALL
    }, "sampling changed the run"

    final = {}
    families = set()
    for family in text_string_to_metric_families((tmp_path / "metrics.prom").read_text()):
        families.add(family.name)
        for s in family.samples:
            final[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert families <= daemon_families(), families - daemon_families()
    assert summary["migrations"] > 0 and summary["violations"] > 0
    assert final[("dvms_migrations_total", (("result", "ok"),))] == summary["migrations"]
    assert final[("dvms_violation_duration_seconds_count", ())] == summary["violations"]
    assert final[("dvms_events_total", (("type", "overload"),))] == summary["overload_events"]
    solved = final[("dvms_partition_outcome_total", (("outcome", "solved"),))]
    assert solved == summary["partitions"]["success"]

    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    with open(tmp_path / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            series[(row["metric"], row["labels"])].append(
                (float(row["time_s"]), float(row["value"]))
            )
    migrations = series[("dvms_migrations_total", "result=ok")]
    times = [t for t, _ in migrations]
    assert len(times) == 200 and times == sorted(times) and times[-1] == 300.0
    values = [v for _, v in migrations]
    assert values == sorted(values) and values[0] < values[-1]  # a counter, growing
    assert max(v for _, v in series[("dvms_violation_active", "")]) >= 1
