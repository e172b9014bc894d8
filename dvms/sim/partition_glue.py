"""The partition core's solver and driver effects on the discrete-event ``Engine``,
carried out once for every simulated shell (the DVMS scheduler of the simulated
datacenter, the in-memory test harness)::

    Solve(token, request)   run_solve(request) now, wall time measured
                            --> at now + solve_time(node, wall, size): on_computed
    BootVm(op, vm)          boot(node, effect, done)     the shell's host model
    MigrateVmTo(op, ...)    migrate(node, effect, done)  calls done(ok, reason) once
                            --> on_driver_result(op, ok, reason)

A result reaches its node only while the node runs (a crashed node gets nothing, a
frozen one gets it when it thaws: ``Engine.input``), on the node's clock. What
differs between shells is passed in: the solver's virtual time, what a host does for a
boot and a migration, and hooks (``before_solve``: fault injection; ``solved``:
metrics). Each host callable schedules its own engine events and calls ``done`` from
one of them, or never when the host died meanwhile.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from dvms.partition.core import BootVm, MigrateVmTo, Solve
from dvms.partition.solve import SolveOutcome, run_solve
from dvms.sim.engine import Engine, SimNode

__all__ = ["Done", "PartitionGlue"]

#: How a driver call ended: ``done(ok, reason)``.
Done = Callable[[bool, str], None]
#: Virtual seconds a solve takes: ``solve_time(node, wall_s, (hosts, vms))``.
SolveTime = Callable[[SimNode, float, tuple[int, int]], float]


class PartitionGlue:
    """Registers the ``Solve``, ``BootVm`` and ``MigrateVmTo`` handlers on ``engine``.

    Results go to the node through ``NodeCore.on_computed`` / ``on_driver_result``, as
    in the daemon: the directory's overlay effects are carried out at once."""

    def __init__(
        self,
        engine: Engine,
        *,
        solve_time: SolveTime,
        boot: Callable[[SimNode, BootVm, Done], None],
        migrate: Callable[[SimNode, MigrateVmTo, Done], None],
        before_solve: Callable[[SimNode, Solve, float], None] | None = None,
        solved: Callable[[SolveOutcome, float, float], None] | None = None,
    ) -> None:
        """``solved(outcome, wall_s, virtual_s)`` runs after each solve."""
        self.engine = engine
        self.solve_time = solve_time
        self.boot = boot
        self.migrate = migrate
        self.before_solve = before_solve
        self.solved = solved
        engine.effect_handlers[Solve] = self._solve
        engine.effect_handlers[BootVm] = self._drive
        engine.effect_handlers[MigrateVmTo] = self._drive

    def _solve(self, node: SimNode, eff: Solve, now: float) -> None:
        if self.before_solve is not None:
            self.before_solve(node, eff, now)
        t0 = time.perf_counter()
        outcome = run_solve(eff.request)
        wall = time.perf_counter() - t0
        cost = self.solve_time(node, wall, eff.request.size)
        if self.solved is not None:
            self.solved(outcome, wall, cost)
        self.engine.at(
            now + cost, self.engine.input, node, self._computed, node, eff.token, outcome
        )

    def _computed(self, node: SimNode, token: int, outcome: SolveOutcome) -> None:
        now = node.local(self.engine.now)
        self.engine.apply(node, node.core.on_computed(token, outcome, now=now))

    def _drive(self, node: SimNode, eff: BootVm | MigrateVmTo, now: float) -> None:
        done = functools.partial(self._driven, node, eff.op)
        if isinstance(eff, BootVm):
            self.boot(node, eff, done)
        else:
            self.migrate(node, eff, done)

    def _driven(self, node: SimNode, op: int, ok: bool, reason: str) -> None:
        self.engine.input(node, self._driver_result, node, op, ok, reason)

    def _driver_result(self, node: SimNode, op: int, ok: bool, reason: str) -> None:
        now = node.local(self.engine.now)
        self.engine.apply(node, node.core.on_driver_result(op, ok, reason, now=now))
