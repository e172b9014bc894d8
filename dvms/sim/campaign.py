"""Many simulation runs at once: the runs of ``dvms sim compare`` in this process, in
local worker processes (``--jobs N``) or on an existing Dask cluster (``--dask ADDR``).

A run is a pure function of (scenario, scheduler, seed): the simulator injects every
random source and orders events by virtual time, so a run gives the same result
whichever process or machine runs it. Only the two wall-clock fields of a summary
(``wall_s``, ``virtual_per_wall``) measure the machine, not the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from dvms.sim.report import RunRecord, record_run
from dvms.sim.scenario import Scenario

R = TypeVar("R")

#: Fields of a run's summary that measure the machine, not the simulation.
WALL_FIELDS = ("wall_s", "virtual_per_wall")


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a campaign: a scenario (its seed set) under a scheduler."""

    scenario: Scenario
    scheduler: str

    @property
    def label(self) -> str:
        return f"{self.scheduler} seed {self.scenario.seed}"


class CampaignError(Exception):
    """A campaign cannot run as asked (e.g. ``--dask`` without the optional extra)."""


def plan_runs(base: Scenario, schedulers: Sequence[str], seeds: int) -> list[Run]:
    """Each scheduler on seeds ``base.seed, base.seed + 1, ...`` (same seed = same load
    trace for every scheduler), seed-major as ``compare`` lists them."""
    return [Run(replace(base, seed=base.seed + i), s) for i in range(seeds) for s in schedulers]


def run_one(run: Run) -> RunRecord:
    """One run, start to end, in whatever process calls it."""
    from dvms.sim.run import run_scenario

    summary, world = run_scenario(run.scenario, run.scheduler)
    return record_run(summary, world)


def run_all(
    runs: Sequence[Run],
    *,
    jobs: int = 1,
    dask: str | None = None,
    on_done: Callable[[int, Run], None] | None = None,
    task: Callable[[Run], Any] = run_one,
) -> list[Any]:
    """Every run's record, in the order of ``runs`` whatever order they finish in.
    ``on_done(finished, run)`` after each. ``jobs`` > 1: local worker processes;
    ``dask``: the address of a running Dask scheduler (``tcp://host:8786``). ``task``
    turns a run into its record (``run_one``; a module-level function, so that worker
    processes can import it)."""
    done = on_done or (lambda _n, _r: None)
    if dask:
        return _on_dask(runs, dask, done, task)
    if jobs <= 1:
        out = []
        for i, run in enumerate(runs):
            out.append(task(run))
            done(i + 1, run)
        return out
    return _on_processes(runs, jobs, done, task)


def _on_processes(
    runs: Sequence[Run], jobs: int, done: Callable[[int, Run], None], task: Callable[[Run], R]
) -> list[R]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    records: list[R | None] = [None] * len(runs)
    # spawn: a fresh interpreter per worker, nothing inherited from this process
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(task, run): i for i, run in enumerate(runs)}
        for n, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            records[i] = fut.result()
            done(n, runs[i])
    return [r for r in records if r is not None]


def _on_dask(
    runs: Sequence[Run], address: str, done: Callable[[int, Run], None], task: Callable[[Run], R]
) -> list[R]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise CampaignError(
            "--dask needs Dask's distributed package: pip install 'dvms[dask]'"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except OSError as exc:
        raise CampaignError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
    records: list[R | None] = [None] * len(runs)
    with client:
        futures = [client.submit(task, run, pure=False) for run in runs]
        index = {f.key: i for i, f in enumerate(futures)}
        for n, fut in enumerate(as_completed(futures), 1):
            i = index[fut.key]
            records[i] = fut.result()
            done(n, runs[i])
    return [r for r in records if r is not None]


def default_jobs() -> int:
    """Worker processes when ``--jobs`` is given without a number: the usable CPUs."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
