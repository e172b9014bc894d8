"""The ``centralized`` scheduler: VMPlaceS's Entropy loop.

``centralized`` reproduces VMPlaceS ``CentralizedResolver`` + ``Entropy2RP``
(VMPlaceS's):

    every period (30 s start to start; back-to-back when a run lasts longer):
      t0: every host in violation is *detected* (trace state violation-det)
      snapshot of ALL hosts -> solve_repair(relief=True) -> charge the solver time
      t0 + solver time: apply the plan's migrations in its order (below)
      last migration ends: reconfiguration time = end - (t0 + solver time)
      next run at max(t0 + period, end)

Applying a plan: an action planned to start at s starts once every action the plan
ends at or before s has really finished (failed or not), so the plan's order and its
per-host concurrency caps (``PlacementConfig.max_migrations_*``) hold even though real
migration times differ from the planned ones. A migration that cannot start (the load
moved since the snapshot and memory no longer fits...) is counted failed; the next run
repairs what is left.

Differences from VMPlaceS, deliberate: when no host is in violation at t0 the solver is
not called (outcome ``no_reconfiguration_needed``, 0 s charged); our solver has no time
limit (it is a heuristic, far under min(30, n/8) s up to 10,000 hosts), a run charged
more than the limit is counted in ``solver_over_limit`` and still applied.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from functools import partial

from dvms.placement import Action, Plan, solve_repair
from dvms.sim.scenario import ScenarioParams
from dvms.sim.world import World

__all__ = ["Centralized"]


class Centralized:
    name = "centralized"

    def __init__(self, params: ScenarioParams) -> None:
        self.period = params.centralized_period_s
        self.runs = 0

    def attach(self, world: World) -> None:
        self.world = world
        self.limit = world.scenario.centralized_time_limit_s
        world.engine.at(0.0, self._run)

    # -- one run ------------------------------------------------------------------------

    def _run(self) -> None:
        world = self.world
        metrics = world.metrics
        t0 = world.engine.now
        self.runs += 1
        over = world.overloaded_hosts()
        for h in over:
            metrics.detected(h, t0)
            metrics.overload_event()
        if not over:
            metrics.solver_run(0.0, 0.0, "no_reconfiguration_needed")
            self._done(t0)
            return
        w0 = time.perf_counter()
        snapshot = world.snapshot()
        plan = solve_repair(snapshot, (), world.placement_config, relief=True)
        wall = time.perf_counter() - w0
        charged = world.solver_time(wall, len(snapshot.vms))
        metrics.solver_run(charged, wall, plan.status, over_limit=charged > self.limit)
        metrics.overload_outcome(plan.status == "solved", len(over))
        world.engine.at(t0 + charged, self._apply, plan, t0)

    def _apply(self, plan: Plan, t0: float) -> None:
        migrations = [a for a in plan.actions if a.kind == "migrate"]
        if not migrations:
            self._done(t0)
            return
        _PlanRunner(self.world, migrations, lambda: self._done(t0)).pump()

    def _done(self, t0: float) -> None:
        world = self.world
        nxt = max(t0 + self.period, world.engine.now)
        if nxt < world.duration_s:
            world.engine.at(nxt, self._run)


class _PlanRunner:
    """Starts a plan's migrations in order (see the module docstring); calls ``done``
    when the last one has ended and charges the reconfiguration time."""

    def __init__(self, world: World, actions: list[Action], done: Callable[[], None]) -> None:
        self.world = world
        self.actions = sorted(actions, key=lambda a: (a.start, a.end, a.vm))
        self.planned_ends = sorted(a.end for a in self.actions)
        self.finished_ends: list[int] = []
        self.next = 0
        self.running = 0
        self.done = done
        self.started_at = world.engine.now

    def pump(self) -> None:
        while self.next < len(self.actions):
            a = self.actions[self.next]
            needed = bisect.bisect_right(self.planned_ends, a.start)
            if bisect.bisect_right(self.finished_ends, a.start) < needed:
                break
            self.next += 1
            self.running += 1
            assert a.src is not None and a.dst is not None
            self.world.migrate(a.vm, a.src, a.dst, partial(self._migrated, a))
        if self.running == 0 and self.next == len(self.actions):
            self.world.metrics.reconfiguration(self.world.engine.now - self.started_at)
            self.done()

    def _migrated(self, action: Action, ok: bool, duration_s: float) -> None:
        """``World.migrate``'s callback: the migration ended (either way)."""
        self.running -= 1
        bisect.insort(self.finished_ends, action.end)
        self.pump()
