"""PNG figures of simulation results (matplotlib, Agg backend: no display needed).

Each function takes plain data (lists, dicts keyed by scheduler name) and a path, so a
scheduler can feed them without the world:

    violation_over_time({"centralized": (t, n), ...}, "viol.png")
    violation_cdf({"centralized": durations, ...}, "cdf.png")
    partition_sizes({"dvms": sizes, ...}, "psize.png")
    comparison_bars(rows, "cumulated_violation_s", "bars.png")   # mean +- std
    vivaldi_map(coords, site_of, site_names, partitions, "map.png")  # DVMS runs only
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "comparison_bars",
    "partition_sizes",
    "violation_cdf",
    "violation_over_time",
    "vivaldi_map",
]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def violation_over_time(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path
) -> None:
    """Mean number of hosts in violation per time bin, one line per scheduler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (t, y) in series.items():
        ax.plot(t, y, label=name, linewidth=1)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("hosts in violation")
    ax.set_title("Hosts in violation over time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def violation_cdf(durations: Mapping[str, Sequence[float]], path: str | Path) -> None:
    """Empirical CDF of violation durations, one curve per scheduler (log x axis)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in durations.items():
        xs = sorted(v for v in values if v > 0)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{name} (n={len(xs)})")
    ax.set_xscale("log")
    ax.set_xlabel("violation duration (s)")
    ax.set_ylabel("fraction of violations")
    ax.set_title("CDF of violation durations")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def partition_sizes(sizes: Mapping[str, Sequence[int]], path: str | Path) -> None:
    """Histogram of partition sizes per scheduler (a note when there are none)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for name, values in sizes.items():
        if values:
            top = max(values)
            ax.hist(values, bins=range(1, top + 2), alpha=0.6, label=name, align="left")
            drawn = True
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no partitions (baselines only)", ha="center", transform=ax.transAxes)
    ax.set_xlabel("partition size (hosts)")
    ax.set_ylabel("partitions")
    ax.set_title("Partition sizes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_bars(
    rows: Sequence[Mapping], metric: str, path: str | Path, *, label: str = ""
) -> None:
    """Mean of ``metric`` per scheduler over its runs, with std-dev error bars when
    there are several runs (one run draws none). ``label``: the metric in words with
    its unit, for the axis and title.

    ``rows`` are run results (``summary()`` dicts with a ``scheduler`` key)."""
    plt = _plt()
    names = sorted({r["scheduler"] for r in rows})
    means, errs = [], []
    for name in names:
        vals = [float(r[metric]) for r in rows if r["scheduler"] == name and r[metric] is not None]
        means.append(statistics.fmean(vals) if vals else 0.0)
        errs.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
    seeds = max(len(r) for r in _runs(rows, names))
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(names)), 4))
    ax.bar(names, means, yerr=errs if seeds > 1 else None, capsize=6, color="tab:blue",
           alpha=0.8)  # fmt: skip
    words = label or metric
    ax.set_ylabel(words)
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    ax.set_title(f"{words[0].upper()}{words[1:]} by scheduler\n({spread})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_host_violation(rows: Sequence[Mapping], path: str | Path) -> None:
    """Cumulated violation time per host against the number of hosts, one line per
    scheduler (mean ± std over the runs of each size): flat = scales.

    ``rows`` are run results (``summary()`` dicts with ``scheduler`` and ``hosts``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["scheduler"] for r in rows}):
        sizes = sorted({int(r["hosts"]) for r in rows if r["scheduler"] == name})
        means, errs = [], []
        for n in sizes:
            vals = [
                float(r["cumulated_violation_s"]) / n
                for r in rows
                if r["scheduler"] == name and int(r["hosts"]) == n
            ]
            means.append(statistics.fmean(vals))
            errs.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        bars = errs if any(errs) else None  # one seed per size: no error bar to draw
        ax.errorbar(sizes, means, yerr=bars, marker="o", capsize=4, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hosts")
    ax.set_ylabel("cumulated violation per host (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Violation time per host as the datacenter grows")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _runs(rows: Sequence[Mapping], names: list[str]) -> list[list[Mapping]]:
    return [[r for r in rows if r["scheduler"] == n] for n in names]


def vivaldi_map(
    coords: Sequence[tuple[float, float]],
    site_of: Sequence[int],
    site_names: Sequence[str],
    partitions: Sequence[Sequence[int]],
    path: str | Path,
    *,
    title: str = "Vivaldi coordinates by site, with partitions",
) -> None:
    """Hosts at their (2-D) Vivaldi coordinates coloured by site; each partition (a list
    of host indices) drawn as a polyline joining its members in recruitment order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for s, name in enumerate(site_names):
        pts = [coords[h] for h in range(len(coords)) if site_of[h] == s]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=8, color=cmap(s % 10), label=name, alpha=0.7)
    for members in partitions:
        if len(members) > 1:
            xs, ys = zip(*(coords[h] for h in members), strict=True)
            ax.plot(xs, ys, color="black", linewidth=0.6, alpha=0.5)
            ax.scatter(xs[:1], ys[:1], marker="x", color="black", s=20)
    ax.set_xlabel("coordinate x (ms)")
    ax.set_ylabel("coordinate y (ms)")
    ax.set_title(title)
    ax.legend(markerscale=2, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
