"""Seeded random faults: a scenario's ``[faults.random]`` rates -> concrete fault entries.

``with_random_faults(scenario)`` draws, from ``Random(f"{seed}:faults")`` (a stream of
its own: the load trace and the network's draws do not move), a number of faults of
each kind (Poisson around the ``*_per_run`` rate), each at a uniform time after
``start_s`` and lasting a uniform time in its range, and returns the scenario with them
added to its own entries and the rates cleared. The same scenario and seed always give
the same faults, so one seed of a campaign is replayed by ``dvms sim run S --seed X``.

    crash        a host goes down, its daemon restarts after crash_down_s
    freeze       a host's daemon stops for freeze_s, then resumes
    loss_burst   every datagram is lost with a probability in burst_loss
    dup_reorder  duplication up to duplicate_max, reordering up to reorder_max_s
    split        a share split_hosts of the hosts is cut off from the others for split_s
    clock        a share clock_hosts of the hosts has an offset within +-clock_max_s

A host is crashed or frozen by at most one fault at a time (a draw that overlaps an
earlier one on the same host is moved to another host, or dropped).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from dvms.sim.scenario import (
    ClockOffset,
    CrashFault,
    DupReorder,
    FaultsConfig,
    Freeze,
    LossBurst,
    RandomFaults,
    Scenario,
    Split,
)

__all__ = ["random_faults", "with_random_faults"]


def with_random_faults(scenario: Scenario) -> Scenario:
    """``scenario`` with its ``[faults.random]`` drawn into concrete entries (itself when
    it has none)."""
    rates = scenario.faults.random
    if not rates.enabled():
        return scenario
    drawn = random_faults(rates, scenario.hosts.count, scenario.duration_s, scenario.seed)
    f = scenario.faults
    faults = replace(
        f,
        crash=f.crash + drawn.crash,
        freeze=f.freeze + drawn.freeze,
        loss_burst=f.loss_burst + drawn.loss_burst,
        dup_reorder=f.dup_reorder + drawn.dup_reorder,
        split=f.split + drawn.split,
        clock=_merge_clocks(f.clock, drawn.clock),
        random=RandomFaults(),
    )
    return replace(scenario, faults=faults)


def _merge_clocks(
    own: tuple[ClockOffset, ...], drawn: tuple[ClockOffset, ...]
) -> tuple[ClockOffset, ...]:
    taken = {c.host for c in own}
    return own + tuple(c for c in drawn if c.host not in taken)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: the means here are small)."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _span(rng: random.Random, lo_hi: tuple[float, ...]) -> float:
    return rng.uniform(lo_hi[0], lo_hi[1])


def random_faults(rates: RandomFaults, hosts: int, duration_s: float, seed: int) -> FaultsConfig:
    """The faults of one run: ``hosts`` hosts, ``duration_s`` long, seed ``seed``."""
    rng = random.Random(f"{seed}:faults")
    start = min(rates.start_s, duration_s)
    busy: dict[int, list[tuple[float, float]]] = {}  # host -> (down, up) windows

    def when() -> float:
        return rng.uniform(start, duration_s)

    def free_host(at: float, until: float) -> int | None:
        """A host neither crashed nor frozen during [at, until] (a few tries)."""
        for _ in range(8):
            h = rng.randrange(hosts)
            if all(until < a or at > b for a, b in busy.get(h, [])):
                busy.setdefault(h, []).append((at, until))
                return h
        return None

    crashes = []
    for _ in range(_poisson(rng, rates.crashes_per_run)):
        at = when()
        up = at + _span(rng, rates.crash_down_s)
        h = free_host(at, up)
        if h is not None:
            crashes.append(CrashFault(h, round(at, 3), round(up, 3) if up < duration_s else None))
    freezes = []
    for _ in range(_poisson(rng, rates.freezes_per_run)):
        at = when()
        end = at + _span(rng, rates.freeze_s)
        h = free_host(at, end)
        if h is not None:
            freezes.append(Freeze(h, round(at, 3), round(end, 3) if end < duration_s else None))
    bursts = []
    for _ in range(_poisson(rng, rates.loss_bursts_per_run)):
        at = when()
        end = at + _span(rng, rates.loss_burst_s)
        bursts.append(
            LossBurst(round(at, 3), round(end, 3), round(_span(rng, rates.burst_loss), 3))
        )
    disorder = []
    for _ in range(_poisson(rng, rates.dup_reorders_per_run)):
        at = when()
        end = at + _span(rng, rates.dup_reorder_s)
        dup = round(rng.uniform(0, rates.duplicate_max), 3)
        reorder = round(rng.uniform(0, rates.reorder_max_s), 4)
        disorder.append(DupReorder(round(at, 3), round(end, 3), dup, reorder))
    splits = []
    for _ in range(_poisson(rng, rates.splits_per_run)):
        at = when()
        end = at + _span(rng, rates.split_s)
        size = min(hosts - 1, max(1, round(_span(rng, rates.split_hosts) * hosts)))
        cut = tuple(sorted(rng.sample(range(hosts), size)))
        splits.append(Split(cut, round(at, 3), round(end, 3) if end < duration_s else None))
    clocks = []
    if rates.clock_hosts > 0:
        count = round(rates.clock_hosts * hosts)
        for h in sorted(rng.sample(range(hosts), min(hosts, count))):
            offset = round(rng.uniform(-rates.clock_max_s, rates.clock_max_s), 3)
            clocks.append(ClockOffset(h, offset))
    return FaultsConfig(
        crash=tuple(crashes),
        freeze=tuple(freezes),
        loss_burst=tuple(bursts),
        dup_reorder=tuple(disorder),
        split=tuple(splits),
        clock=tuple(clocks),
    )
