"""Results of several runs: the data kept for figures, the side-by-side table, files.

``RunRecord`` keeps what figures need from one run (the violation series binned, the
violation durations, partition sizes) next to its ``summary()`` dict, so a compare of
many runs does not keep every world alive.

Files written by ``write_compare(records, out)``:

    results.json             every run's summary (list)
    results.csv              one row per run, scalar keys only
    table.md                 mean ± std per scheduler of the headline metrics
    violation_over_time.png  hosts in violation (mean over seeds), one line per scheduler
    violation_cdf.png        CDF of violation durations (pooled over seeds)
    partition_sizes.png      partition sizes (DVMS schedulers; a note otherwise)
    cumulated_violation.png  mean ± std of the cumulated violation time
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dvms.sim import figures
from dvms.sim.metrics import SUCCESS
from dvms.sim.world import World

__all__ = ["TABLE_METRICS", "RunRecord", "format_table", "record_run", "write_compare"]

#: Rows of the side-by-side table (summary keys).
TABLE_METRICS = (
    "cumulated_violation_s",
    "violations",
    "mean_violation_s",
    "mean_detection_s",
    "mean_fix_s",
    "migrations",
    "mean_migration_s",
    "solver_s",
    "reconfiguration_s",
    "mean_partition_size",
    "inter_site_operations",
    "invariant_violations",
    "wall_s",
    "virtual_per_wall",
)
_BINS = 360

#: What each table metric means, in words with its unit (table rows, figure axes).
METRIC_LABELS = {
    "cumulated_violation_s": "cumulated violation time (s)",
    "violations": "violations",
    "mean_violation_s": "mean violation (s)",
    "mean_detection_s": "mean detection (s)",
    "mean_fix_s": "mean fix (s)",
    "migrations": "migrations",
    "mean_migration_s": "mean migration (s)",
    "solver_s": "solver time (s)",
    "reconfiguration_s": "reconfiguration time (s)",
    "mean_partition_size": "mean partition size (hosts)",
    "inter_site_operations": "inter-site operations",
    "invariant_violations": "invariant violations",
    "wall_s": "wall time (s)",
    "virtual_per_wall": "speed (virtual s per wall s)",
}


def for_people(x: float) -> str:
    """A number as a table shows it: thousands separated, three significant digits
    below 1,000, whole numbers above (4,316 not 4316.217; 0.493 not 0.49312)."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.3g}"


@dataclass(slots=True)
class RunRecord:
    summary: dict
    series_t: list[float] = field(default_factory=list)
    series_y: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    partition_sizes: list[int] = field(default_factory=list)


def record_run(summary: dict, world: World) -> RunRecord:
    m = world.metrics
    t, y = m.binned_violations(world.duration_s / _BINS, world.duration_s)
    return RunRecord(summary, t, y, list(m.durations), list(m.partitions.get(SUCCESS, [])))


def _stats(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(records: list[RunRecord]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """scheduler -> metric -> (mean, std) over its runs (None when never filled)."""
    out: dict[str, dict[str, tuple[float, float] | None]] = {}
    for name in dict.fromkeys(r.summary["scheduler"] for r in records):
        runs = [r.summary for r in records if r.summary["scheduler"] == name]
        out[name] = {
            k: _stats([float(s[k]) for s in runs if s.get(k) is not None]) for k in TABLE_METRICS
        }
    return out


def format_table(records: list[RunRecord]) -> str:
    """A Markdown table, one column per scheduler, cells ``mean ± std`` over its runs
    (the mean alone for a single run), rounded for people."""
    agg = aggregate(records)
    names = list(agg)
    runs = {n: sum(r.summary["scheduler"] == n for r in records) for n in names}
    head = "| metric | " + " | ".join(f"{n} ({runs[n]} runs)" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for k in TABLE_METRICS:
        cells = []
        for n in names:
            st = agg[n][k]
            if st is None:
                cells.append("n/a")
            elif runs[n] == 1:
                cells.append(for_people(st[0]))
            else:
                cells.append(f"{for_people(st[0])} ± {for_people(st[1])}")
        lines.append(f"| {METRIC_LABELS.get(k, k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scalar_rows(records: list[RunRecord]) -> tuple[list[str], list[dict]]:
    rows = [{k: v for k, v in r.summary.items() if not isinstance(v, dict | list)} for r in records]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return keys, rows


def write_compare(records: list[RunRecord], out: Path) -> list[Path]:
    """Write the files listed in the module docstring; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "results.json"
    path.write_text(json.dumps([r.summary for r in records], indent=1, sort_keys=True) + "\n")
    written.append(path)
    keys, rows = _scalar_rows(records)
    path = out / "results.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    written.append(path)
    path = out / "table.md"
    path.write_text(format_table(records) + "\n")
    written.append(path)
    written += write_figures(records, out)
    return written


def write_figures(records: list[RunRecord], out: Path) -> list[Path]:
    names = list(dict.fromkeys(r.summary["scheduler"] for r in records))
    series, durations, sizes = {}, {}, {}
    for name in names:
        mine = [r for r in records if r.summary["scheduler"] == name]
        t = mine[0].series_t
        ys = [statistics.fmean(col) for col in zip(*(r.series_y for r in mine), strict=True)]
        series[name] = (t, ys)
        durations[name] = [d for r in mine for d in r.durations]
        sizes[name] = [s for r in mine for s in r.partition_sizes]
    paths = [
        out / "violation_over_time.png",
        out / "violation_cdf.png",
        out / "partition_sizes.png",
        out / "cumulated_violation.png",
    ]
    figures.violation_over_time(series, paths[0])
    figures.violation_cdf(durations, paths[1])
    figures.partition_sizes(sizes, paths[2])
    figures.comparison_bars(
        [r.summary for r in records],
        "cumulated_violation_s",
        paths[3],
        label=METRIC_LABELS["cumulated_violation_s"],
    )
    return paths
