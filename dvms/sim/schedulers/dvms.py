"""The DVMS schedulers for the simulated datacenter (``dvms``, ``dvms-ring``,
``dvms-random``): one real ``NodeCore`` (overlay + partition protocol) per host.

Glue only, no protocol: each host of the ``World`` gets a node at its network position;
the overlay joins during the first seconds; the world's overload monitor pokes the node
of an overloaded host (``NodeCore.on_monitor``); ``Solve`` effects run the solver and
deliver its result after the solver time the scenario charges (``solver_time``: model
or measured); driver calls (``BootVm``, ``MigrateVmTo``) become VM creations or live
migrations in the world (both through ``dvms.sim.partition_glue``). The world's
launches (``[[launches]]``) are submitted to the entry node's ``NodeCore.launch``. Every
input goes through ``NodeCore``, as in the daemon. Metrics and the invariant checkers
listen to the emitted events.

Host faults: a crashed host's node stops; when the host recovers its daemon restarts,
a fresh ``NodeCore`` with the same node id that joins the overlay again. A frozen
daemon's node stops processing (``Engine.freeze``) and resumes with its old state; its
host's monitor does not run meanwhile. A host's clock offset shifts its node's clock
(``Engine.set_clock``); the checks below compare each node's times on its own clock.

Fault hooks (``[[faults.partition_crash]]``): the first partition seen in a phase at or
after a time loses its leader or a member (see ``PartitionCrash``); the crash is carried
out by the world (``set_host_up``), so the host's VMs and violation stop counting.

At the end of the run ``overloads_in_flight`` counts overload events still handled at a
live origin, ``overloads_open`` those of them that started more than ``open_grace_s``
(``[scheduler.dvms]``) before the end and that no partition holds any more (neither resolved, nor
failed-and-released, nor being worked on: must be 0; a partition whose members' leases
are stale counts in ``partitions_open``),
``overloads_lost_with_origin`` those whose origin crashed, and ``partitions_open`` live
nodes still in a partition that the lease invariant says must be free by the end
(``InvariantChecker.open_at_end``, the rule it applies while the run goes: last update
older than lease + 1 s, but leaders, ISP holders, and hosts with a migration in or out
running or seen running within ``lease_check_s`` + 1 s). A node frozen at
the end is left out of ``overloads_open`` and ``partitions_open``: it runs nothing.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace
from typing import Any

from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact
from dvms.partition.config import Recruitment
from dvms.partition.core import (
    BootVm,
    EventDone,
    EventStarted,
    MigrateVmTo,
    PartitionChanged,
    PartitionReleased,
    PlanApplied,
    Solve,
)
from dvms.partition.messages import (
    FINISHING,
    PARTITION_MESSAGES,
    CreateVm,
    HostState,
    LaunchVm,
    MigrateVm,
    SetPartition,
    VmState,
    WireConstraint,
)
from dvms.partition.solve import SolveOutcome
from dvms.placement import PlacementConfig
from dvms.sim.engine import SimNode
from dvms.sim.ha import HaSim
from dvms.sim.images import image_root
from dvms.sim.invariants import InvariantChecker
from dvms.sim.metrics import SUCCESS
from dvms.sim.partition_glue import Done, PartitionGlue
from dvms.sim.scenario import PartitionCrash, ScenarioParams
from dvms.sim.world import LaunchRequest, World
from dvms.stack.core import NodeCore, build_cores
from dvms.vivaldi import VivaldiConfig

__all__ = ["DvmsScheduler"]

_PARTITION_TYPES = frozenset(PARTITION_MESSAGES.values())


class DvmsScheduler:
    """``[scheduler.partition]`` configures every node's partition core (``recruitment``
    replaces its recruitment order), ``[scheduler.dvms]`` this glue."""

    def __init__(
        self,
        params: ScenarioParams,
        recruitment: Recruitment | None = None,
        *,
        placement: PlacementConfig | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or ("dvms" if recruitment is None else f"dvms-{recruitment}")
        #: the leaders' placement engine settings (None: the engine's defaults)
        self.placement = placement
        config = params.partition
        self.config = config if recruitment is None else replace(config, recruitment=recruitment)
        self.params = params.dvms
        self.kademlia = KademliaConfig()
        self.nodes: list[SimNode] = []
        self.partitions: dict[int, int] = {}  # pid -> size at its last change
        self._members: dict[int, list[int]] = {}  # pid -> member node ids (for the map)
        self.launches: dict[tuple[int, int], int] = {}  # (entry, event id) -> VMs
        self.create_s: dict[str, float] = {}  # VM name -> creation time
        #: VM name -> the constraints it carries (``LaunchVm.constraints``, set by the
        #: leader that created it): hosts report them, so repairs keep its vjob's rules
        self.carried: dict[str, tuple] = {}
        self.crashes: list[PartitionCrash] = []
        self.crashed: list[str] = []  # what the fault hooks did
        self.restarts = 0
        self.seeds: list[tuple[str, int]] = []
        #: High availability (``[ha]`` in the scenario; None without it)
        self.ha: HaSim | None = None
        #: VM index -> (its demand, ``_carried_version``, its VmState) when last reported
        self._vm_states: dict[int, tuple[int, int, VmState]] = {}
        self._carried_version = 0  # + 1 at every change of ``carried``

    # -- building ----------------------------------------------------------------------

    def attach(self, world: World) -> None:
        self.world = world
        world.extras["vivaldi_map"] = self.vivaldi_map_data
        eng = world.engine
        rng = random.Random(f"{world.scenario.seed}:dvms")
        self.rng = rng
        seeds = self.seeds
        join_rate = self.params.join_rate_per_s
        for h, info in enumerate(world.hosts):
            node = self._make_node(h, info.name, rng, rng.getrandbits(160))
            self.nodes.append(node)
            start = 0.0 if h == 0 else rng.uniform(0.0, len(world.hosts) / join_rate)
            eng.at(start, self._start, node, list(seeds[:3]))
            if len(seeds) < 3:
                seeds.append(node.addr)
        eng.on_emit = self._on_emit
        PartitionGlue(
            eng,
            solve_time=lambda node, wall, size: world.solver_time(wall, size[1]),
            boot=self._boot,
            migrate=self._migrate,
            # Straight to the partition core, like _monitor and _launch: its directory
            # effects wait for its next timer event (NodeCore's wrappers: at once).
            before_solve=self._solve_fault,
            solved=self._solved,
        )
        eng.message_observer = self._observe
        world.on_overload(self._monitor)
        world.on_host_change(self._host_change)
        world.on_freeze(self._freeze)
        world.on_launch(self._launch)
        world.on_finish(self._finish)
        self.crashes = list(world.scenario.faults.partition_crash)
        self.checker = InvariantChecker(self.config, world.metrics.invariant_violation)
        world.every(self.params.check_period_s, self._check)
        if world.scenario.ha.fraction > 0:
            self.ha = HaSim(self, world)
            self.ha.attach()

    def _make_node(self, h: int, name: str, rng: random.Random, node_id: int) -> SimNode:
        contact = Contact(node_id, f"h{h}", self.params.port)
        node_rng = random.Random(rng.getrandbits(64))
        overlay, part = build_cores(
            contact,
            self.kademlia,
            node_rng,
            vivaldi=VivaldiConfig(),
            partition=self.config,
            placement=self.placement,
            local_state=functools.partial(self._host_state, h, name),
            self_monitor=False,
        )
        eng = self.world.engine
        node = eng.add_node(h, contact.addr, node_id, NodeCore(overlay, part))
        eng.set_clock(node, self.world.clock_offset[h])
        return node

    def _start(self, node: SimNode, seeds: list[tuple[str, int]]) -> None:
        self.world.engine.input(node, self._started, node, seeds)

    def _started(self, node: SimNode, seeds: list[tuple[str, int]]) -> None:
        eng = self.world.engine
        eng.apply(node, node.core.overlay.start(seeds, now=node.local(eng.now)))

    def _host_state(self, h: int, name: str) -> HostState | None:
        w = self.world
        if not w.host_up[h]:
            return None
        # A VM's report is the same (immutable) object while its demand and the
        # constraints known to the scheduler stay (its name and size never change):
        # hosts report often (leases, SetPartition answers), and building every VmState
        # anew was ~4 % of a compiled faults-200 run.
        units, cache, version = w.vm_units, self._vm_states, self._carried_version
        vms = []
        for v in w.host_vms[h]:
            hit = cache.get(v)
            if hit is None or hit[0] != units[v] or hit[1] != version:
                name_v = w.vm_names[v]
                state = VmState(
                    name_v,
                    "",
                    w.vm_vcpus[v],
                    w.vm_mem[v],
                    units[v] / 100,
                    w.vm_cosched[v],
                    self.carried.get(name_v, ()),
                )
                hit = cache[v] = (units[v], version, state)
            vms.append(hit[2])
        info = w.hosts[h]
        return HostState(
            name=name,
            cpus=max(1, -(-info.cpu_capacity // 100)),
            memory_mib=info.memory_mib - w.incoming_mib[h],
            vms=tuple(vms),
            migrating=w.flights_at(h),  # in or out of the host (HostState.migrating)
            cpu_milli=info.cpu_capacity * 10,
            images=w.images.reported(h) if w.images is not None else (),
        )

    # -- world events ------------------------------------------------------------------

    def _monitor(self, h: int, now: float) -> None:
        node = self.nodes[h]
        if node.alive and not node.frozen:  # the monitor is the daemon's own loop
            self.world.engine.apply(node, node.core.on_monitor(now=node.local(now)))

    def _host_change(self, h: int, up: bool, now: float) -> None:
        if not up:
            self.world.engine.crash(self.nodes[h])
            self.checker.forget(h)
        elif not self.nodes[h].alive:
            self._restart(h)

    def _restart(self, h: int) -> None:
        """The recovered host's daemon starts again: same node id, no protocol state."""
        old = self.nodes[h]
        self.restarts += 1
        rng = random.Random(f"{self.world.scenario.seed}:restart:{h}:{self.restarts}")
        node = self._make_node(h, self.world.hosts[h].name, rng, old.node_id)
        self.nodes[h] = node
        if self.ha is not None:
            self.ha.add_core(node, random.Random(rng.getrandbits(64)))
        self._start(node, [a for a in self.seeds if a != node.addr])

    def _freeze(self, h: int, frozen: bool, now: float) -> None:
        eng = self.world.engine
        if frozen:
            eng.freeze(self.nodes[h])
        else:
            eng.thaw(self.nodes[h])

    def _launch(self, req: LaunchRequest, now: float) -> None:
        node = self.nodes[req.entry]
        if not node.alive:
            self.world.metrics.launch(None, len(req.vms))
            return
        # a frozen daemon takes the submission when it resumes (the CLI waits)
        self.world.engine.input(node, self._submit, node, req)

    def _submit(self, node: SimNode, req: LaunchRequest) -> None:
        now = node.local(self.world.engine.now)
        vms = tuple(
            LaunchVm(
                v.name,
                "",
                v.vcpus,
                v.memory_mib,
                coschedule=v.coschedule,
                disk=v.disk,
                images=tuple(image_root(ref) for ref in v.file_refs()),
            )
            for v in req.vms
        )
        cons = tuple(WireConstraint("spread", group) for group in req.spread)
        for v in req.vms:
            self.create_s[v.name] = req.create_s
        eid, out = node.core.launch(vms, cons, now=now)
        self.launches[(node.index, eid)] = len(vms)
        self.world.engine.apply(node, out)

    def _observe(self, src: SimNode, dst: SimNode, msg: Any) -> None:
        if type(msg) in _PARTITION_TYPES:
            site = self.world.site_of
            self.world.metrics.message(site[src.pos], site[dst.pos], type(msg).__name__)
            if self.crashes:
                self._fault_hook(src, dst, msg)

    # -- fault hooks -------------------------------------------------------------------

    def _fault_hook(self, src: SimNode, dst: SimNode, msg: Any) -> None:
        """Carry out a ``PartitionCrash`` on the first message that shows its phase."""
        now = self.world.engine.now
        for fault in list(self.crashes):
            if now < fault.after_s:
                continue
            victim = None
            if fault.phase == "acting" and isinstance(msg, MigrateVm | CreateVm):
                victim = src if fault.role == "leader" else dst
            elif fault.phase == "collecting" and isinstance(msg, SetPartition):
                view = msg.view
                if (
                    view.leader.node_id == src.node_id
                    and dst.node_id != view.initiator.node_id
                    and view.state != FINISHING
                ):
                    victim = dst
            if victim is not None:
                self._crash(fault, victim, f"{type(msg).__name__} {src.pos}->{dst.pos}")
                return

    def _crash(self, fault: PartitionCrash, node: SimNode, why: str) -> None:
        self.crashes.remove(fault)
        w = self.world
        self.crashed.append(
            f"{fault.role}/{fault.phase}: host {node.pos} at {w.engine.now:.3f} s ({why})"
        )
        w.engine.at(w.engine.now, w.set_host_up, node.pos, False)

    # -- effects -----------------------------------------------------------------------

    def _solve_fault(self, node: SimNode, eff: Solve, now: float) -> None:
        """A ``solving`` fault due now crashes the node that is about to solve."""
        for fault in self.crashes:
            if fault.phase == "solving" and now >= fault.after_s:
                self._crash(fault, node, f"solving on {eff.request.size[0]} hosts")
                break

    def _solved(self, outcome: SolveOutcome, wall: float, cost: float) -> None:
        self.world.metrics.solver_run(cost, wall, "SUCCESS" if outcome.ok else "NO_SOLUTION")

    def _boot(self, node: SimNode, eff: BootVm, done: Done) -> None:
        vm = eff.vm
        ha = self.ha if vm.ha is not None else None
        wname = ha.boot_name(vm) if ha is not None else vm.name

        def created(ok: bool, reason: str) -> None:
            if ok and vm.constraints:
                self.carried[wname] = vm.constraints
                self._carried_version += 1
            if ok and ha is not None:
                ha.booted(node, vm, wname)
            done(ok, reason)

        self.world.create_vm(
            wname,
            self.world.hosts[node.pos].name,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            coschedule=vm.coschedule,
            create_s=self.create_s.get(vm.name, 0.0),
            image=next(iter(vm.to_spec().file_refs()), ""),
            on_done=created,
        )

    def _migrate(self, node: SimNode, eff: MigrateVmTo, done: Done) -> None:
        name = eff.vm

        src = node.pos

        def moved(ok: bool, duration: float) -> None:
            if ok and self.ha is not None:
                dst = self.world.host_index[eff.dst_host]
                self.ha.migrated(name, src, dst)
            done(ok, "" if ok else f"migration of {name} refused")

        self.world.migrate(name, self.world.hosts[node.pos].name, eff.dst_host, moved)

    # -- metrics -----------------------------------------------------------------------

    def _on_emit(self, node: SimNode, event: Any, now: float) -> None:
        m = self.world.metrics
        if isinstance(event, EventStarted):
            if event.kind == "overload":
                m.overload_event()
        elif isinstance(event, EventDone):
            if event.kind == "overload":
                m.overload_outcome(event.ok)
            if event.kind == "launch":
                vms = self.launches.pop((node.index, event.event_id), 1)
                m.launch(event.finished - event.started if event.ok else None, vms)
        elif isinstance(event, PlanApplied):
            m.partition(event.size, SUCCESS if not event.failed else "action_failed")
            m.reconfiguration(event.duration)
        elif isinstance(event, PartitionChanged):
            self.checker.changed(node.pos, event.view, event.role, now)
            if event.role == "leader":
                self._members[event.view.pid] = [m.node_id for m in event.view.members]
        elif isinstance(event, PartitionReleased):
            self.checker.released(node.pos, event.pid, now)

    def vivaldi_map_data(self, last: int = 40) -> tuple[list[tuple[float, ...]], list[list[int]]]:
        """Final coordinates projected on their two main axes (ms), and the members (host
        indices, newest first) of the ``last`` partitions, for ``figures.vivaldi_map``."""
        import numpy as np

        vecs = np.array([n.core.overlay.vivaldi.coordinate.vec for n in self.nodes]) * 1000.0
        centred = vecs - vecs.mean(axis=0)
        _, _, axes = np.linalg.svd(centred, full_matrices=False)
        coords = [tuple(p) for p in (centred @ axes[:2].T).tolist()]
        pos_of = {n.node_id: n.pos for n in self.nodes}
        parts = [[pos_of[i] for i in ids if i in pos_of] for ids in self._members.values()]
        return coords, parts[-last:]

    def _check(self, now: float) -> None:
        self.checker.check(self.nodes, now)

    def _finish(self, end: float) -> None:
        """Events and partitions still open at the end (see the module docstring)."""
        open_, lost, flying = 0, 0, 0
        for node in self.nodes:
            part = node.core.partition
            local_end = node.local(end)
            for own in part.own.values():
                if own.event.kind != "overload":
                    continue
                if not node.alive:
                    lost += 1
                else:
                    flying += 1
                    # stuck: old, and no partition holds it (a plan of several
                    # sequential migrations legitimately runs for a minute)
                    held = part.view is not None or part._holding is not None
                    old = own.started < local_end - self.params.open_grace_s
                    open_ += not held and old and not node.frozen
        self.world.metrics.extra.update(
            overloads_in_flight=flying,
            overloads_open=open_,
            overloads_lost_with_origin=lost,
            # a daemon frozen at the end runs nothing: not stuck, stopped (like a crash)
            partitions_open=self.checker.open_at_end(self.nodes, end),
            launches_open=sum(1 for (i, _eid) in self.launches if self.world.engine.nodes[i].alive),
            partition_crashes=list(self.crashed),
        )
