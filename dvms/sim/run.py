"""One simulation run: a scenario, a scheduler by name, the summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dvms.sim.faultgen import with_random_faults
from dvms.sim.scenario import Scenario
from dvms.sim.schedulers import make_scheduler
from dvms.sim.world import World

__all__ = ["run_scenario"]


def run_scenario(
    scenario: Scenario,
    scheduler: str,
    *,
    progress: Callable[[float], None] | None = None,
    on_step: Callable[[World, float], None] | None = None,
) -> tuple[dict[str, Any], World]:
    """Build the world, attach ``scheduler`` (a registered name), run, summarise.
    ``on_step(world, now)`` after each of the run's steps (``promfile.StepWriter``).
    The scenario's ``[faults.random]`` are drawn from its seed first (``faultgen``)."""
    scenario = with_random_faults(scenario)
    sched = make_scheduler(scheduler, scenario.scheduler)
    t0 = time.perf_counter()
    world = World(scenario)
    world.scheduler_name = scheduler
    world.scheduler = sched
    sched.attach(world)
    world.wall_s = time.perf_counter() - t0  # building counts in wall time
    if on_step is None:
        world.run(progress)
        return world.summary(), world

    def step(now: float) -> None:
        if now < world.duration_s:  # the last step is sampled once the run is closed
            on_step(world, now)
        if progress is not None:
            progress(now)

    world.run(step)
    summary = world.summary()  # closes the violations still open
    on_step(world, world.duration_s)
    return summary, world
