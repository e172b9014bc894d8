"""An in-memory cluster for testing the partition protocol: real ``NodeCore``s on the
discrete-event ``Engine``, a constant-latency ``NetworkModel`` and a fake host per node.

Shipped in the package (style rule 5: the simulated versions ship, not only in tests) so
that any test or notebook can drive the real protocol code in virtual time::

    c = FakeCluster(8, seed=1)           # every node knows every other (no Kademlia join)
    c.add_vms(0, [1.0] * 5)              # host 0: five VMs demanding one CPU each
    c.poke(0)                            # its monitor sees the overload now
    c.run(10.0)
    c.views()                            # every node's partition (None = free)
    c.done                               # EventDone per (origin position, event id)

What is fake and what is real:

- The overlay is real but never joins: ``connect_all`` writes every other node into each
  routing table directly (with the network's RTT, so RPC timeouts are realistic), so a
  test is fast and its peers exact. Vivaldi is off: ``vivaldi`` recruitment then ranks
  peers by node id.
- Each node's host is a ``FakeHost``: CPU capacity, memory and VMs with a settable CPU
  demand; ``local_state`` answers from it.
- ``Solve`` effects (the solver) run at once and their result is delivered after
  ``solve_delay`` virtual seconds (a number, a function of the node's position, or
  ``"model"``: the simulator's solver cost model for the snapshot's size).
- Driver calls take ``driver_delay`` virtual seconds: ``MigrateVmTo`` moves the VM to
  the destination's fake host (refused when the VM is not on this host or the
  destination is down), ``BootVm`` adds it here. Every creation is counted, so a test
  can prove each VM was created exactly once. ``dvms.sim.partition_glue`` carries out
  these effects, as it does for the simulated datacenter.
- The host monitor is the harness's: every ``monitor_period_s`` (or never, with
  ``monitor=False``) it calls ``on_monitor`` on each live node whose host is overloaded,
  like the simulated datacenter does. ``poke`` calls it once, now.
- ``InvariantChecker`` runs every ``check_period_s`` and ``vm_problems()`` checks that no
  VM was lost or duplicated.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dvms.effects import Emit, Send
from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact
from dvms.overlay.records import Validator, key_of
from dvms.partition.config import PartitionConfig
from dvms.partition.core import (
    BootVm,
    EventDone,
    EventStarted,
    MigrateVmTo,
    OwnEvent,
    PartitionChanged,
    PartitionCore,
    PartitionReleased,
)
from dvms.partition.directory import Location, decode_location, record_name
from dvms.partition.messages import (
    GROWING,
    Event,
    HostState,
    LaunchVm,
    PartitionState,
    PartitionView,
    VmState,
    WireConstraint,
)
from dvms.sim.engine import NODE_PORT, Engine, SimNode
from dvms.sim.invariants import InvariantChecker
from dvms.sim.partition_glue import Done, PartitionGlue
from dvms.sim.solvercost import model_solver_time
from dvms.stack.core import NodeCore, build_cores
from dvms.transport.netmodel import ConstantLatency, NetworkConditions, NetworkModel

__all__ = ["FakeCluster", "FakeHost", "FakeVm"]


@dataclass
class FakeVm:
    """A VM on a fake host, with a demand tests change in place; ``state`` is its wire
    ``VmState`` (deliberately separate: the wire type is frozen)."""

    name: str
    namespace: str = ""
    vcpus: int = 1
    memory_mib: int = 512
    demand: float = 0.0  # CPUs
    coschedule: int = -1
    constraints: tuple[WireConstraint, ...] = ()  # carried, as a created VM keeps them

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def state(self) -> VmState:
        return VmState(
            self.name,
            self.namespace,
            self.vcpus,
            self.memory_mib,
            self.demand,
            self.coschedule,
            self.constraints,
        )


@dataclass
class FakeHost:
    """A fake host whose VMs tests add, move and load in place; ``state`` is what it
    reports to its leader (the wire ``HostState``, None while it is down)."""

    name: str
    cpus: int = 4
    memory_mib: int = 16384
    vms: dict[str, FakeVm] = field(default_factory=dict)
    migrating: int = 0
    up: bool = True

    def demand(self) -> float:
        return sum(v.demand for v in self.vms.values())

    def overloaded(self) -> bool:
        return round(self.demand() * 1000) > self.cpus * 1000

    def state(self) -> HostState | None:
        if not self.up:
            return None
        return HostState(
            name=self.name,
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            vms=tuple(v.state() for v in self.vms.values()),
            migrating=self.migrating,
        )


#: A virtual duration: seconds, or a function of the node's position; for the solver
#: also "model", the simulator's solver cost model (``dvms.sim.solvercost``).
Delay = float | str | Callable[[int], float]


class FakeCluster:
    """``n`` nodes at positions 0..n-1; host ``i`` is named ``h{i}``."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        config: PartitionConfig | None = None,
        rtt_s: float = 0.001,
        loss: float = 0.0,
        jitter: float = 0.0,
        ids: Iterable[int] | None = None,
        cpus: int = 4,
        memory_mib: int = 16384,
        solve_delay: Delay = 0.01,
        driver_delay: Delay = 0.1,
        monitor: bool = True,
        check_period_s: float = 0.25,
        connect: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or PartitionConfig()
        self.rtt_s = rtt_s
        cond = NetworkConditions(loss=loss, jitter=jitter)
        self.network = NetworkModel(ConstantLatency(rtt_s), cond, random.Random(self.rng.random()))
        self.engine = Engine(self.network, on_emit=self._on_emit)
        PartitionGlue(
            self.engine,
            solve_time=self._solve_time,
            boot=self._boot,
            migrate=self._migrate,
        )
        self.engine.message_observer = self._observe
        self.solve_delay = solve_delay
        self.driver_delay = driver_delay
        self.monitor = monitor
        id_list = list(ids) if ids is not None else [self.rng.getrandbits(160) for _ in range(n)]
        if len(id_list) != n or len(set(id_list)) != n:
            raise ValueError("need n distinct node ids")
        self.hosts = [FakeHost(f"h{i}", cpus, memory_mib) for i in range(n)]
        self.nodes: list[SimNode] = [self._make_node(i, id_list[i]) for i in range(n)]
        self.by_id = {node.node_id: node.pos for node in self.nodes}
        #: Every emitted event: (position, event, virtual time).
        self.log: list[tuple[int, Any, float]] = []
        self.started: dict[tuple[int, int], tuple[str, float]] = {}
        self.done: dict[tuple[int, int], EventDone] = {}
        #: Every partition message handed to the network: (time, src pos, dst pos, msg).
        self.messages: list[tuple[float, int, int, Any]] = []
        self.created: dict[str, int] = {}  # VM key -> creations
        self.initial_vms: set[str] = set()  # VMs placed by add_vms
        self.expected_vms: set[str] = set()  # those and every VM submitted for launch
        self.violations: list[str] = []
        self.checker = InvariantChecker(self.config, self.violations.append)
        if connect:
            self.connect_all()
        self._tick_check(check_period_s)
        if monitor:
            self._tick_monitor()

    # -- building ----------------------------------------------------------------------

    def _make_node(self, pos: int, node_id: int) -> SimNode:
        contact = Contact(node_id, f"n{pos}", NODE_PORT)
        node_rng = random.Random(self.rng.getrandbits(64))
        overlay, part = build_cores(
            contact,
            KademliaConfig(),
            node_rng,
            partition=self.config,
            local_state=self.hosts[pos].state,
            self_monitor=False,
        )
        return self.engine.add_node(pos, contact.addr, node_id, NodeCore(overlay, part))

    def contact(self, pos: int) -> Contact:
        return self.core(pos).me

    def core(self, pos: int) -> PartitionCore:
        part = self.nodes[pos].core.partition
        assert part is not None
        return part

    def members_of(self, pos: int) -> set[int]:
        """The positions of the members of the view node ``pos`` holds (none: empty)."""
        view = self.core(pos).view
        return set() if view is None else {self.by_id[m.node_id] for m in view.members}

    def connect_all(self) -> None:
        """Seed every routing table with every other node (no Kademlia join)."""
        for a in self.nodes:
            table = a.core.overlay.table
            for b in self.nodes:
                if b is not a:
                    rtt = self.network.latency.rtt(a.pos, b.pos)
                    table.seen(self.contact(b.pos), self.engine.now, rtt or None)

    def add_vms(
        self, pos: int, demands: Iterable[float], *, prefix: str | None = None, **kw: Any
    ) -> list[FakeVm]:
        """Add VMs with the given CPU demands to host ``pos``."""
        host = self.hosts[pos]
        added = []
        for d in demands:
            name = f"{prefix or host.name}-vm{len(self.expected_vms)}"
            vm = FakeVm(name, demand=d, **kw)
            host.vms[vm.key] = vm
            self.expected_vms.add(vm.key)
            self.initial_vms.add(vm.key)
            added.append(vm)
        return added

    def set_demand(self, pos: int, total: float) -> None:
        """Spread ``total`` CPUs of demand evenly over host ``pos``'s VMs."""
        vms = list(self.hosts[pos].vms.values())
        for v in vms:
            v.demand = total / len(vms)

    # -- driving -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.engine.now

    def run(self, seconds: float) -> None:
        self.engine.run_until(self.engine.now + seconds)

    def run_until(self, when: float) -> None:
        self.engine.run_until(when)

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self.engine.at(when, fn, *args)

    def poke(self, pos: int) -> None:
        """The host monitor of ``pos`` runs now."""
        node = self.nodes[pos]
        if node.alive:
            self.engine.apply(node, node.core.on_monitor(now=self.engine.now))

    def launch(
        self,
        pos: int,
        vms: Iterable[LaunchVm],
        constraints: Iterable[WireConstraint] = (),
        *,
        prefer: Iterable[int] = (),
    ) -> int:
        """A launch from node ``pos``; ``prefer``: positions it recruits first."""
        vms = tuple(vms)
        for v in vms:
            self.expected_vms.add(f"{v.namespace}/{v.name}" if v.namespace else v.name)
        first = tuple(self.contact(i) for i in prefer)
        eid, out = self.nodes[pos].core.launch(
            vms, tuple(constraints), now=self.engine.now, prefer=first
        )
        self.engine.apply(self.nodes[pos], out)
        return eid

    def crash(self, pos: int) -> None:
        """The node stops; its host is down (its VMs stay on it, unreachable)."""
        self.engine.crash(self.nodes[pos])
        self.network.set_down(pos)
        self.hosts[pos].up = False
        self.checker.forget(pos)

    def install(
        self,
        members: list[int],
        *,
        initiator: int,
        leader: int,
        state: PartitionState = GROWING,
        lap: int = 1,
        overload: bool = True,
    ) -> PartitionView:
        """Put ``members`` (positions, newest first) into one partition by hand, as the
        DVMS deadlock test does with ``SetCurrentPartition``: every member adopts the view
        (nobody is solving), and the initiator owns an in-flight ``overload`` event when
        ``overload``. ``begin_transmission(leader)`` then sends its ISP on."""
        now = self.engine.now
        ini = self.core(initiator)
        events: tuple[Event, ...] = ()
        if overload:
            event = Event("overload", ini.me, ini.rng.getrandbits(63))
            ini.own[event.event_id] = OwnEvent(event, now, attempts=1, in_flight=True)
            self.engine.apply(
                self.nodes[initiator], [Emit(EventStarted(event.event_id, "overload"))]
            )
            events = (event,)
        view = PartitionView(
            pid=self.rng.getrandbits(64),
            version=1,
            initiator=ini.me,
            leader=self.contact(leader),
            members=tuple(self.contact(p) for p in members),
            state=state,
            events=events,
            lap=lap,
        )
        for p in members:
            out: list[Any] = []
            self.core(p)._adopt(view, now, out, "leader" if p == leader else "member")
            self.engine.apply(self.nodes[p], out)
        return view

    def fork(self, view: PartitionView, member: int, leaders: dict[int, float]) -> None:
        """Fork ``view`` as a lost ISP does under heavy loss: each of ``leaders``
        (position: seconds to run first, in order) takes over a later version of the
        same partition id holding itself and ``member``, as after a takeover of a leader
        that was alive."""
        for pos, wait in leaders.items():
            copy = replace(
                view,
                version=view.version + 4,
                leader=self.contact(pos),
                members=(self.contact(pos), self.contact(member)),
            )
            self.run(wait)
            out: list[Any] = []
            self.core(pos)._become_leader(copy, (), 0, self.engine.now, out)
            self.engine.apply(self.nodes[pos], out)

    def begin_transmission(self, pos: int) -> None:
        """The node at ``pos`` (in an installed partition) passes its ISP on to the first
        node outside the partition, as a leader whose solver found nothing would."""
        core = self.core(pos)
        assert core.view is not None
        out: list[Any] = []
        core._forward(core.view, set(), 1, False, self.engine.now, out)
        self.engine.apply(self.nodes[pos], out)

    def deliver(self, src: int, dst: int, msg: Any) -> None:
        """Hand ``msg`` to the network as if ``src`` had sent it (a fresh request id)."""
        self.engine.apply(
            self.nodes[src], [Send(self.nodes[dst].addr, self.rng.getrandbits(64), msg)]
        )

    def set_loss(self, loss: float) -> None:
        self.network.set_conditions(NetworkConditions(loss=loss))

    def _tick_monitor(self) -> None:
        period = self.config.monitor_period_s
        if self.monitor:
            for pos, host in enumerate(self.hosts):
                if host.up and host.overloaded():
                    self.poke(pos)
        self.engine.at(self.engine.now + period, self._tick_monitor)

    def _tick_check(self, period: float) -> None:
        self.checker.check(self.nodes, self.engine.now)
        self.engine.at(self.engine.now + period, self._tick_check, period)

    # -- reading -----------------------------------------------------------------------

    def views(self) -> list[PartitionView | None]:
        return [self.core(i).view if n.alive else None for i, n in enumerate(self.nodes)]

    def free(self) -> list[bool]:
        """Per node: alive and in no partition (and not holding an ISP)."""
        return [
            n.alive and self.core(i).view is None and self.core(i)._holding is None
            for i, n in enumerate(self.nodes)
        ]

    def positions(self, contacts: Iterable[Contact]) -> list[int]:
        return [self.by_id[c.node_id] for c in contacts]

    def events_of(self, kind: type) -> list[tuple[int, Any, float]]:
        return [e for e in self.log if isinstance(e[1], kind)]

    def pending_events(self) -> list[tuple[int, int]]:
        """Events started at a live origin that have not ended yet."""
        return [k for k in self.started if k not in self.done and self.nodes[k[0]].alive]

    def directory(self, namespace: str, name: str) -> Location | None:
        """The directory record of a VM as a reader would find it: the winning version
        among the copies every live node stores (None: no record)."""
        key = key_of(record_name(namespace, name))
        best = None
        for n in self.nodes:
            if n.alive:
                rec = n.core.overlay.store.get(key, self.engine.now)
                if rec is not None:
                    best = rec if best is None else Validator.select(best, rec)
        return decode_location(best.value) if best is not None else None

    def host_of(self, key: str) -> list[int]:
        return [i for i, h in enumerate(self.hosts) if key in h.vms]

    def vm_problems(self) -> list[str]:
        """No VM lost, duplicated, or created more than once."""
        problems = []
        seen: dict[str, list[int]] = {}
        for i, h in enumerate(self.hosts):
            for key in h.vms:
                seen.setdefault(key, []).append(i)
        for key, where in seen.items():
            if len(where) > 1:
                problems.append(f"{key} on hosts {where}")
            if key not in self.expected_vms:
                problems.append(f"{key} appeared from nowhere on {where}")
        for key, count in self.created.items():
            if count > 1:
                problems.append(f"{key} created {count} times")
        placed = self.initial_vms | set(self.created)
        problems += [f"{k} lost" for k in sorted(placed - set(seen))]
        return problems

    # -- effects -----------------------------------------------------------------------

    def _delay(self, d: Delay, pos: int) -> float:
        if isinstance(d, str):
            raise ValueError(f"unknown delay {d!r}")
        return d(pos) if callable(d) else d

    def _on_emit(self, node: SimNode, event: Any, now: float) -> None:
        self.log.append((node.pos, event, now))
        if isinstance(event, EventStarted):
            self.started[(node.pos, event.event_id)] = (event.kind, now)
        elif isinstance(event, EventDone):
            key = (node.pos, event.event_id)
            if key in self.done:
                self.violations.append(f"event {event.event_id:x} ended twice at {node.pos}")
            self.done[key] = event
        elif isinstance(event, PartitionChanged):
            self.checker.changed(node.pos, event.view, event.role, now)
        elif isinstance(event, PartitionReleased):
            self.checker.released(node.pos, event.pid, now)

    def _observe(self, src: SimNode, dst: SimNode, msg: Any) -> None:
        self.messages.append((self.engine.now, src.pos, dst.pos, msg))

    def _solve_time(self, node: SimNode, wall: float, size: tuple[int, int]) -> float:
        if self.solve_delay == "model":
            return model_solver_time(size[1])
        return self._delay(self.solve_delay, node.pos)

    def _boot(self, node: SimNode, eff: BootVm, done: Done) -> None:
        delay = self._delay(self.driver_delay, node.pos)
        self.engine.at(self.engine.now + delay, self._created, node.pos, eff.vm, done)

    def _migrate(self, node: SimNode, eff: MigrateVmTo, done: Done) -> None:
        host = self.hosts[node.pos]
        delay = self._delay(self.driver_delay, node.pos)
        now = self.engine.now
        key = f"{eff.namespace}/{eff.vm}" if eff.namespace else eff.vm
        dst = next((h for h in self.hosts if h.name == eff.dst_host), None)
        if key not in host.vms or dst is None:
            self.engine.at(now, done, False, f"cannot migrate {key}")
            return
        host.migrating += 1
        dst.migrating += 1
        self.engine.at(now + delay, self._migrated, host, key, dst, done)

    def _migrated(self, src: FakeHost, key: str, dst: FakeHost, done: Done) -> None:
        src.migrating -= 1
        dst.migrating -= 1
        if not (src.up and dst.up) or key not in src.vms:
            done(False, f"migration of {key} failed")
            return
        dst.vms[key] = src.vms.pop(key)
        done(True, "")

    def _created(self, pos: int, vm: LaunchVm, done: Done) -> None:
        host = self.hosts[pos]
        if not host.up:
            return
        fake = FakeVm(
            vm.name, vm.namespace, vm.vcpus, vm.memory_mib, 0.0, vm.coschedule, vm.constraints
        )
        self.created[fake.key] = self.created.get(fake.key, 0) + 1
        host.vms[fake.key] = fake
        done(True, "")
