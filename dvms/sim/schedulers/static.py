"""The ``static`` scheduler: nothing moves after the balanced initial placement (the
lower bound every other scheduler is compared to)."""

from __future__ import annotations

from dvms.sim.scenario import ScenarioParams
from dvms.sim.world import World

__all__ = ["Static"]


class Static:
    name = "static"

    def __init__(self, params: ScenarioParams) -> None:
        self.params = params

    def attach(self, world: World) -> None:
        self.world = world
