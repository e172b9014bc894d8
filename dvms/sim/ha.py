"""High availability in the simulated datacenter: the real HA core (``dvms.ha``) on
every DVMS node, a watchdog per host, and the HA metrics.

Glue only, no protocol. With ``[ha]`` in the scenario, each node's ``NodeCore`` gets an
``HaCore``; a ``fraction`` of the initial VMs become HA VMs whose hosts adopt them at
``start_s``. Effects: ``Fence`` removes the host's copy; ``ArmWatchdog`` sets the host's
watchdog, which runs beside the daemon (a frozen daemon's watchdog still fires) and
removes every HA copy of its host when it expires; ``StartLaunch`` is a launch event
(``NodeCore``), and the host that creates the VM adopts it (``booted``). A host crash
kills its HA guests. In the world, the copy of generation g > 1 of VM ``x`` is named
``x.g<g>`` (world names are unique; the protocol sees ``x``). A fenced ``pause`` copy
is removed like a destroyed one (its memory is not kept reserved).

Metrics (in the run's summary when ``[ha]`` is on)::

    ha_vms            HA VMs
    host_failures     hosts that crashed, froze or were split off
    ha_restarts       copies started by a restart
    ha_restart_p50_s  from the failure (the owner host's fault, or the moment its last
    ha_restart_p99_s  copy stopped if no fault is known) to the new copy running
    ha_lost           HA VMs with no running copy at the end, including by design a VM
                      whose guardian majority died before the owner replaced them (no
                      quorum, no restart: docs/ha.md)
    ha_double_run_s   total time two copies of one VM ran at once (hosts up)
    ha_fenced         copies stopped by their owner's fence or its host's watchdog
"""

from __future__ import annotations

import functools
import random
from typing import TYPE_CHECKING, Any

from dvms.ha import ArmWatchdog, Fence, HaCore, tag_for
from dvms.partition.messages import LaunchVm
from dvms.placement.hapolicy import PRIORITIES, HaPolicy
from dvms.sim.engine import SimNode
from dvms.sim.metrics import percentile

if TYPE_CHECKING:
    from dvms.sim.schedulers.dvms import DvmsScheduler
    from dvms.sim.world import World

__all__ = ["HaSim", "world_name"]

#: A host fault older than this no longer explains a copy stopping, virtual seconds.
FAULT_MEMORY_S = 120.0


def world_name(name: str, generation: int) -> str:
    """The world's name of generation ``generation`` of HA VM ``name``."""
    return name if generation <= 1 else f"{name}.g{generation}"


class HaSim:
    def __init__(self, sched: DvmsScheduler, world: World) -> None:
        self.sched = sched
        self.world = world
        self.cfg = world.scenario.ha
        self.copies: dict[str, dict[str, int]] = {}  # HA name -> world name -> host
        self.key_of: dict[str, str] = {}  # world name -> HA name
        self.down_since: dict[str, float] = {}
        self.double_since: dict[str, float] = {}
        self.double_s = 0.0
        self.restart_s: list[float] = []
        self.fenced = 0
        self.failed_hosts: set[int] = set()
        self.fault_at: dict[int, float] = {}
        self.doomed: set[str] = set()
        self.watchdog: dict[int, float | None] = {}

    # -- building ----------------------------------------------------------------------

    def attach(self) -> None:
        w, eng = self.world, self.world.engine
        rng = random.Random(f"{w.scenario.seed}:ha")
        for node in self.sched.nodes:
            self.add_core(node, random.Random(rng.getrandbits(64)))
        eng.effect_handlers[Fence] = self._fence
        eng.effect_handlers[ArmWatchdog] = self._arm
        total = len(w.vm_names)
        chosen = sorted(rng.sample(range(total), round(self.cfg.fraction * total)))
        for k, v in enumerate(chosen):
            name = w.vm_names[v]
            self.copies[name] = {name: w.vm_host[v]}
            self.key_of[name] = name
            prio = PRIORITIES[k % len(PRIORITIES)]
            eng.at(self.cfg.start_s, self._adopt_initial, v, prio)
        w.on_host_change(self._host_change)
        faults = w.scenario.faults
        for fz in faults.freeze:
            eng.at(fz.at_s, self._fault, (fz.host,))
        for sp in faults.split:
            eng.at(sp.at_s, self._fault, tuple(sp.hosts))
        w.on_finish(self._finish)

    def add_core(self, node: SimNode, rng: random.Random) -> None:
        """Give ``node`` its HA core (at the start, and when a host's daemon restarts)."""
        node.core.ha = HaCore(
            node.core.overlay.contact,
            functools.partial(node.core.overlay.table.closest, healthy=True),
            self.cfg.protocol,
            rng,
        )

    def _adopt_initial(self, v: int, priority: str) -> None:
        w = self.world
        name = w.vm_names[v]
        if name not in w.vm_index:
            return  # its host crashed before HA started
        policy = HaPolicy(mode="restart", priority=priority, fence=self.cfg.fence)
        vm = LaunchVm(name, "", w.vm_vcpus[v], w.vm_mem[v], ha=tag_for(policy))
        node = self.sched.nodes[w.vm_host[v]]
        self._call(node, lambda core, now: core.ha_adopt(vm, now=now))

    def _call(self, node: SimNode, fn: Any) -> None:
        """``fn(node_core, now)`` as a shell input of ``node`` (held while it is frozen,
        dropped if it crashed), its effects carried out."""
        self.world.engine.input(node, self._run, node, fn)

    def _run(self, node: SimNode, fn: Any) -> None:
        eng = self.world.engine
        eng.apply(node, fn(node.core, node.local(eng.now)))

    # -- hooks from the dvms scheduler -------------------------------------------------

    def boot_name(self, vm: LaunchVm) -> str:
        if vm.ha is None:
            return vm.name
        wname = world_name(vm.name, vm.ha.generation)
        self.key_of[wname] = vm.name
        return wname

    def booted(self, node: SimNode, vm: LaunchVm, wname: str) -> None:
        """A launch created ``vm`` (HA) on ``node``'s host as ``wname``."""
        now = self.world.engine.now
        name = vm.name
        copies = self.copies.setdefault(name, {})
        if not copies and name in self.down_since:
            self.restart_s.append(now - self.down_since.pop(name))
        copies[wname] = node.pos
        self._count(name, now)
        self._call(node, lambda core, t: core.ha_adopt(vm, now=t))

    def migrated(self, wname: str, src: int, dst: int) -> None:
        name = self.key_of.get(wname)
        if name is None:
            return
        now = self.world.engine.now
        self.copies[name][wname] = dst
        src_node, dst_node = self.sched.nodes[src], self.sched.nodes[dst]
        owned = src_node.core.ha.owned.get(("", name)) if src_node.alive else None
        if wname in self.doomed or owned is None or owned.fenced:
            self.doomed.discard(wname)
            self._remove(name, wname, now)
            return
        vm = owned.vm
        self._call(src_node, lambda core, t: core.ha_release("", name, retire=False, now=t))
        self._call(dst_node, lambda core, t: core.ha_adopt(vm, now=t))

    # -- effects -----------------------------------------------------------------------

    def _fence(self, node: SimNode, eff: Fence, now: float) -> None:
        wname = world_name(eff.name, eff.generation)
        if self.copies.get(eff.name, {}).get(wname) == node.pos:
            self.fenced += 1
            self._remove(eff.name, wname, self.world.engine.now)

    def _arm(self, node: SimNode, eff: ArmWatchdog, now: float) -> None:
        until = eff.until
        if until is not None:
            until -= node.clock  # the host's clock -> engine time
        self.watchdog[node.pos] = until
        if until is not None:
            self.world.engine.at(until, self._watchdog_due, node.pos, until)

    def _watchdog_due(self, h: int, until: float) -> None:
        if self.watchdog.get(h) != until or not self.world.host_up[h]:
            return
        now = self.world.engine.now
        node = self.sched.nodes[h]
        for name, copies in list(self.copies.items()):
            for wname, host in list(copies.items()):
                if host == h:
                    self.fenced += 1
                    self._remove(name, wname, now)
                    self._call(node, lambda core, t, n=name: core.ha_stopped("", n, now=t))

    # -- faults and accounting ---------------------------------------------------------

    def _fault(self, hosts: tuple[int, ...]) -> None:
        now = self.world.engine.now
        for h in hosts:
            self.failed_hosts.add(h)
            self.fault_at[h] = now

    def _host_change(self, h: int, up: bool, now: float) -> None:
        if up:
            return
        self._fault((h,))
        for name, copies in list(self.copies.items()):
            for wname, host in list(copies.items()):
                if host == h:
                    self._remove(name, wname, now)  # a crash kills its guests

    def _remove(self, name: str, wname: str, now: float) -> None:
        copies = self.copies.get(name, {})
        host = copies.get(wname)
        if host is None:
            return
        if not self.world.remove_vm(wname, now) and self.world.migrating(wname):
            self.doomed.add(wname)  # removed where it lands
            return
        del copies[wname]
        if not copies:
            fault = self.fault_at.get(host)
            fresh = fault is not None and now - fault <= FAULT_MEMORY_S
            self.down_since[name] = fault if fresh and fault is not None else now
        self._count(name, now)

    def _count(self, name: str, now: float) -> None:
        running = sum(self.world.host_up[h] for h in self.copies.get(name, {}).values())
        if running >= 2 and name not in self.double_since:
            self.double_since[name] = now
        elif running < 2 and name in self.double_since:
            self.double_s += now - self.double_since.pop(name)

    def _finish(self, end: float) -> None:
        for name in list(self.double_since):
            self.double_s += end - self.double_since.pop(name)
        lost = sum(
            1
            for copies in self.copies.values()
            if not any(self.world.host_up[h] for h in copies.values())
        )
        r = self.restart_s
        self.world.metrics.extra.update(
            {
                "ha_vms": len(self.copies),
                "host_failures": len(self.failed_hosts),
                "ha_restarts": len(r),
                "ha_restart_p50_s": _r(percentile(r, 50)),
                "ha_restart_p99_s": _r(percentile(r, 99)),
                "ha_restart_max_s": _r(max(r) if r else None),
                "ha_lost": lost,
                "ha_double_run_s": round(self.double_s, 3),
                "ha_fenced": self.fenced,
            }
        )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
