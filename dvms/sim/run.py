"""One simulation run: a scenario, a scheduler by name, the summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dvms.sim.scenario import Scenario
from dvms.sim.schedulers import make_scheduler
from dvms.sim.world import World

__all__ = ["run_scenario"]


def run_scenario(
    scenario: Scenario,
    scheduler: str,
    *,
    progress: Callable[[float], None] | None = None,
) -> tuple[dict[str, Any], World]:
    """Build the world, attach ``scheduler`` (a registered name), run, summarise."""
    sched = make_scheduler(scheduler, scenario.scheduler)
    t0 = time.perf_counter()
    world = World(scenario)
    world.scheduler_name = scheduler
    sched.attach(world)
    world.wall_s = time.perf_counter() - t0  # building counts in wall time
    world.run(progress)
    return world.summary(), world
