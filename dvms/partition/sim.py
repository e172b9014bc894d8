"""The DVMS schedulers for the simulated datacenter (``dvms``, ``dvms-ring``,
``dvms-random``): one real ``NodeCore`` (overlay + partition protocol) per host.

Glue only, no protocol: each host of the ``World`` gets a node at its network position;
the overlay joins during the first seconds; the world's overload monitor pokes the
partition core of an overloaded host; ``Compute`` effects run the solver and deliver its
result after the solver time the scenario charges; ``DriverCall`` effects become live
migrations in the world. Metrics and the invariant checkers listen to the emitted events.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

from dvms.node.core import NodeCore
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact
from dvms.partition.config import PartitionConfig
from dvms.partition.core import (
    Compute,
    DriverCall,
    EventDone,
    EventStarted,
    PartitionChanged,
    PartitionCore,
    PartitionReleased,
    PlanApplied,
)
from dvms.partition.invariants import InvariantChecker
from dvms.partition.messages import PARTITION_MESSAGES, HostState, VmState
from dvms.sim.engine import SimNode
from dvms.sim.metrics import SUCCESS
from dvms.sim.scenario import ScenarioParams
from dvms.sim.world import World, register_scheduler
from dvms.vivaldi import VivaldiClient, VivaldiConfig

__all__ = ["DvmsScheduler"]

_PORT = 7400
_PARTITION_TYPES = frozenset(PARTITION_MESSAGES.values())
#: Hosts start their overlay node at this rate (nodes per virtual second) from t = 0.
JOIN_RATE = 500.0


class DvmsScheduler:
    def __init__(self, params: ScenarioParams, recruitment: str | None = None) -> None:
        self.name = "dvms" if recruitment is None else f"dvms-{recruitment}"
        self.config = replace(
            PartitionConfig(),
            lease_s=params.partition_lease_s,
            min_partition_size=params.min_partition_size,
            recruitment=recruitment or params.recruitment,
        )
        self.kademlia = KademliaConfig()
        self.nodes: list[SimNode] = []
        self.partitions: dict[int, int] = {}  # pid -> size at its last change

    # -- building ----------------------------------------------------------------------

    def attach(self, world: World) -> None:
        self.world = world
        eng = world.engine
        rng = random.Random(f"{world.scenario.seed}:dvms")
        self.rng = rng
        seeds: list[tuple[str, int]] = []
        for h, info in enumerate(world.hosts):
            node = self._make_node(h, info.name, rng)
            self.nodes.append(node)
            start = 0.0 if h == 0 else rng.uniform(0.0, len(world.hosts) / JOIN_RATE)
            eng.at(start, self._start, node, list(seeds[:3]))
            if len(seeds) < 3:
                seeds.append(node.addr)
        eng.on_emit = self._on_emit
        eng.effect_handlers[Compute] = self._compute
        eng.effect_handlers[DriverCall] = self._driver
        eng.message_observer = self._observe
        world.on_overload(self._monitor)
        world.on_host_change(self._host_change)
        self.checker = InvariantChecker(self.config, world.metrics.invariant_violation)
        world.every(1.0, self._check)

    def _make_node(self, h: int, name: str, rng: random.Random) -> SimNode:
        node_id = rng.getrandbits(160)
        contact = Contact(node_id, f"h{h}", _PORT)
        node_rng = random.Random(rng.getrandbits(64))
        vivaldi = VivaldiClient(VivaldiConfig(), random.Random(node_rng.getrandbits(64)))
        overlay = OverlayCore(contact, self.kademlia, node_rng, vivaldi=vivaldi)
        part = PartitionCore(
            contact,
            overlay,
            self.config,
            random.Random(node_rng.getrandbits(64)),
            local_state=lambda h=h, name=name: self._host_state(h, name),
            self_monitor=False,
        )
        return self.world.engine.add_node(h, contact.addr, node_id, NodeCore(overlay, part))

    def _start(self, node: SimNode, seeds: list[tuple[str, int]]) -> None:
        eng = self.world.engine
        eng.apply(node, node.core.overlay.start(seeds, now=eng.now))

    def _host_state(self, h: int, name: str) -> HostState | None:
        w = self.world
        if not w.host_up[h]:
            return None
        vms = tuple(
            VmState(vm, "", w.vcpus, w.vm_memory, w.vm_units[w.vm_index[vm]] / 100)
            for vm in w.vms_on(h)
        )
        info = w.hosts[h]
        return HostState(
            name=name,
            cpus=max(1, -(-info.cpu_capacity // 100)),
            memory_mib=info.memory_mib - w.incoming_mib[h],
            vms=vms,
            migrating=sum(w.migrating(vm) for vm in w.vms_on(h)),
            cpu_milli=info.cpu_capacity * 10,
        )

    # -- world events ------------------------------------------------------------------

    def _monitor(self, h: int, now: float) -> None:
        node = self.nodes[h]
        if node.alive:
            self.world.engine.apply(node, node.core.partition.on_monitor(now=now))

    def _host_change(self, h: int, up: bool, now: float) -> None:
        if not up:
            self.world.engine.crash(self.nodes[h])
            self.checker.forget(h)

    def _observe(self, src: SimNode, dst: SimNode, msg: Any) -> None:
        if type(msg) in _PARTITION_TYPES:
            site = self.world.site_of
            self.world.metrics.message(site[src.pos], site[dst.pos], type(msg).__name__)

    # -- effects -----------------------------------------------------------------------

    def _compute(self, node: SimNode, eff: Compute, now: float) -> None:
        t0 = time.perf_counter()
        result = eff.fn()
        wall = time.perf_counter() - t0
        cost = self.world.solver_time(wall, eff.size[1])
        self.world.metrics.solver_run(cost, wall, "SUCCESS" if result.ok else "NO_SOLUTION")
        self.world.engine.at(now + cost, self._computed, node, eff.token, result)

    def _computed(self, node: SimNode, token: int, result: Any) -> None:
        if node.alive:
            eng = self.world.engine
            eng.apply(node, node.core.partition.on_computed(token, result, now=eng.now))

    def _driver(self, node: SimNode, eff: DriverCall, now: float) -> None:
        eng = self.world.engine
        if eff.kind != "migrate":
            eng.at(now, self._driven, node, eff.op, False, f"{eff.kind} is not simulated")
            return
        src = self.world.hosts[node.pos].name
        vm, dst = eff.args["vm"], eff.args["dst_host"]

        def done(ok: bool, duration: float) -> None:
            self._driven(node, eff.op, ok, "" if ok else f"migration of {vm} refused")

        self.world.migrate(vm, src, dst, done)

    def _driven(self, node: SimNode, op: int, ok: bool, reason: str) -> None:
        if node.alive:
            eng = self.world.engine
            eng.apply(node, node.core.partition.on_driver_result(op, ok, reason, now=eng.now))

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
                m.launch(event.finished - event.started if event.ok else None)
        elif isinstance(event, PlanApplied):
            m.partition(event.size, SUCCESS if not event.failed else "action_failed")
            m.reconfiguration(event.duration)
        elif isinstance(event, PartitionChanged):
            self.checker.changed(node.pos, event.view, event.role, now)
        elif isinstance(event, PartitionReleased):
            self.checker.released(node.pos, event.pid, now)

    def _check(self, now: float) -> None:
        self.checker.check(self.nodes, now)


def _factory(recruitment: str | None):
    return lambda params: DvmsScheduler(params, recruitment)


register_scheduler("dvms", _factory(None))
register_scheduler("dvms-ring", _factory("ring"))
register_scheduler("dvms-random", _factory("random"))
