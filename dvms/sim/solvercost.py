"""Solver time in virtual time: a deterministic cost model of our placement engine.

VMPlaceS charges every solver call its measured wall time in simulated time.
``--solver-time measured`` does the same with our Python solver; ``model``
(the default) charges

    t(V) = C0 + C1 * V + C2 * V**2      seconds, V = VMs in the solver's snapshot

so that a seed gives byte-identical results on any machine. The constants were fitted
(least squares on relative error) to ``solve_repair(relief=True)`` wall times on
VMPlaceS-like snapshots (10 VMs of 1 vCPU per 700-unit host, demand drawn from the
injector's distribution) on the 2-core development machine; ``python -m
dvms.sim.solvercost`` re-measures and prints the fit next to the model:

    hosts    VMs   measured_s   model_s     (median of 3 seeds; fit of these rows,
        4     40      0.00024   0.00044      C0 rounded up from -0.0002 to 5e-5)
       16    160      0.00167   0.00165
       64    640      0.00752   0.00634
      256   2560      0.03025   0.02611
     1024  10240      0.11562   0.11909
     4096  40960      0.70661   0.71277
    10000 100000      2.909     2.85        (one run, checked after the fit)

Our solver is a heuristic, much faster than VMPlaceS's Entropy (Java CP with a time
limit of min(30, n/8) s), so the centralized baseline here is a *strong* one.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from dvms.placement import Host, PlacementConfig, Snapshot, Vm, solve_repair
from dvms.placement.model import CPU_DEMAND

__all__ = ["C0", "C1", "C2", "calibrate", "model_solver_time", "vmplaces_snapshot"]

C0 = 5.0e-5
C1 = 9.7e-6
C2 = 1.88e-10


def model_solver_time(problem_size: int) -> float:
    """Virtual seconds the model charges for a snapshot of ``problem_size`` VMs."""
    v = max(0, problem_size)
    return C0 + C1 * v + C2 * v * v


def vmplaces_snapshot(hosts: int, seed: int = 1) -> Snapshot:
    """A VMPlaceS-like steady state: 10 VMs per host, demand from the injector law."""
    rng = random.Random(seed)
    hs = tuple(
        Host(f"h{i}", cpus=7, memory_mib=32768, capacity={CPU_DEMAND: 7000}) for i in range(hosts)
    )
    vms = []
    for i in range(hosts * 10):
        units = 10 * round(min(100.0, max(0.0, rng.gauss(60, 20))) / 10)
        vms.append(
            Vm(f"v{i}", vcpus=1, memory_mib=1024, host=f"h{i % hosts}", cpu_demand=units / 100)
        )
    return Snapshot(hs, tuple(vms))


def calibrate(sizes: tuple[int, ...] = (4, 16, 64, 256, 1024), repeats: int = 3) -> list[tuple]:
    """(hosts, VMs, median measured wall s, model s) for each size."""
    config = PlacementConfig(migration_mib_per_s=125.0)
    rows = []
    for hosts in sizes:
        times = []
        for r in range(repeats):
            snap = vmplaces_snapshot(hosts, seed=r + 1)
            t0 = time.perf_counter()
            solve_repair(snap, (), config, relief=True)
            times.append(time.perf_counter() - t0)
        v = hosts * 10
        rows.append((hosts, v, statistics.median(times), model_solver_time(v)))
    return rows


def fit(rows: list[tuple]) -> tuple[float, float, float]:
    """Least-squares (relative error) fit of C0, C1, C2 to calibration rows."""
    import numpy as np

    v = np.array([r[1] for r in rows], dtype=float)
    t = np.array([r[2] for r in rows], dtype=float)
    a = np.stack([np.ones_like(v), v, v * v], axis=1) / t[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def main(argv: list[str] | None = None) -> int:
    sizes = tuple(int(x) for x in (argv or sys.argv[1:])) or (4, 16, 64, 256, 1024)
    rows = calibrate(sizes)
    print(f"{'hosts':>6} {'VMs':>7} {'measured_s':>11} {'model_s':>9}")
    for hosts, v, measured, model in rows:
        print(f"{hosts:>6} {v:>7} {measured:>11.5f} {model:>9.5f}")
    c0, c1, c2 = fit(rows)
    print(f"refit: C0={c0:.3g} C1={c1:.3g} C2={c2:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
