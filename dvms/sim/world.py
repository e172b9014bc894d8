"""The simulated datacenter a scheduler runs in: hosts, VMs, load, migrations, metrics.

    Scenario ──> World ──> Engine (one heap, virtual time) <── Scheduler.attach(world)
                  │           ▲   load events, monitor ticks, migration ends, faults
                  ├─ SimCluster (hosts, VMs, pre-copy migration model)
                  ├─ NetworkModel (lan / sites / matrix latency, loss, cuts, crashes)
                  └─ Metrics (violation accounting, fed by every demand change)

Hosts are engine positions 0..n-1 (a scheduler adds its protocol nodes at those
positions). VMs are dealt out round-robin, ``per_host`` each (VMPlaceS, balance =
true). Demand is tracked per VM in *units* (100 = one vCPU fully busy) and summed per
host incrementally; a host is in violation while its demand is strictly above its
capacity and it is up. Every load change is O(1); snapshots cost O(hosts asked + their
VMs).

The overload monitor (``on_overload``) is each host's 1 s monitor (VMPlaceS
MonitorProcess) without its cost: ticks happen at multiples of ``monitor_period_s`` and
only while the host is in violation, so a healthy host costs nothing. The first tick of
a violation marks it detected in the metrics.

A migration (``migrate``) is a pre-copy live migration in ``SimCluster``: the VM keeps
running (and counting) on its source until the end, its memory is reserved on the
destination from the start. It can be refused at the start (``on_done(False, 0.0)``);
once started it completes, even if a host crashes meanwhile (not modelled).

Launches (``[[launches]]`` in the scenario): at their time the world hands each vjob to
the scheduler's launch handler (``on_launch``; without one the vjob counts as not
placed). The scheduler creates VMs with ``create_vm``; a created VM joins the demand
accounting, the load model (events pick among all VMs, at N_VM / interval per second),
the invariant check and the snapshots. ``check_constraints`` (every second and at the
end) verifies that every placed VM's constraints hold: the VMs of a spread group on
distinct hosts, a coschedule-n VM with at most n other VMs on its host.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dvms.hypervisor.base import EventKind, LifecycleEvent
from dvms.hypervisor.errors import HypervisorError
from dvms.hypervisor.simulated import MigrationModel, SimCluster
from dvms.placement import Host, PlacementConfig, Snapshot, Vm
from dvms.placement.model import CPU_DEMAND
from dvms.placement.spec import VmSpec
from dvms.sim.engine import Engine
from dvms.sim.images import ImageModel
from dvms.sim.metrics import Metrics, percentile
from dvms.sim.scenario import DupReorder, LossBurst, Scenario
from dvms.sim.solvercost import model_solver_time
from dvms.sim.topology import build_topology
from dvms.transport.netmodel import NetworkConditions

__all__ = [
    "HostInfo",
    "LaunchRequest",
    "Scheduler",
    "World",
]


class Scheduler(Protocol):
    """A scheduler under test: ``attach`` registers its monitors/timers on the world
    (``dvms.sim.schedulers`` holds the registry by name)."""

    name: str

    def attach(self, world: World) -> None: ...


@dataclass(frozen=True, slots=True)
class HostInfo:
    """One host: name, engine position (= index), CPU capacity (units), memory, site."""

    name: str
    index: int
    cpu_capacity: int
    memory_mib: int
    site: int
    site_name: str


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """One vjob submitted to host ``entry`` at ``at_s``: its VMs and spread groups."""

    name: str
    entry: int
    at_s: float
    vms: tuple[VmSpec, ...]
    spread: tuple[tuple[str, ...], ...] = ()
    create_s: float = 0.0


LaunchHandler = Callable[[LaunchRequest, float], None]
CreateDone = Callable[[bool, str], None]


@dataclass
class _Constraints:
    """What ``check_constraints`` verifies: spread groups and coschedule limits."""

    spread: list[tuple[str, ...]] = field(default_factory=list)
    coschedule: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # each broken rule counted once


class _IndexedCluster(SimCluster):
    """``SimCluster`` with an O(1) ``locate`` (the base scans every host). A migrating
    VM is located on its source until it lands, so demand changes go to the copy that
    the migration carries over."""

    def __init__(self, model: MigrationModel) -> None:
        super().__init__(model=model)
        self.where: dict[str, str] = {}

    def locate(self, name: str) -> str | None:
        return self.where.get(name)

    def create(self, host: str, spec: VmSpec, *, now: float) -> list[LifecycleEvent]:
        events = super().create(host, spec, now=now)
        self.where[spec.name] = host
        return events

    def undefine(self, host: str, name: str, *, now: float) -> list[LifecycleEvent]:
        events = super().undefine(host, name, now=now)
        self.where.pop(name, None)
        return events

    def on_timer(self, *, now: float) -> list[LifecycleEvent]:
        events = super().on_timer(now=now)
        for ev in events:
            if ev.kind is EventKind.MIGRATED_IN:
                self.where[ev.vm] = ev.host
        return events


class _Periodic:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


MigrationDone = Callable[[bool, float], None]


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.duration_s = scenario.duration_s
        self.period = scenario.monitor_period_s
        topo = build_topology(scenario)
        self.sites = topo.site_names
        self.network = topo.network
        self.engine = Engine(self.network)
        n = scenario.hosts.count
        width = max(3, len(str(n - 1)))
        self.hosts = [
            HostInfo(
                f"h{i:0{width}d}",
                i,
                scenario.hosts.cpu_capacity,
                scenario.hosts.memory_mib,
                topo.site_of[i],
                self.sites[topo.site_of[i]],
            )
            for i in range(n)
        ]
        self.host_index = {h.name: h.index for h in self.hosts}
        self.site_of = list(topo.site_of)
        self.cap = [h.cpu_capacity for h in self.hosts]
        self.host_up = [True] * n
        #: hosts whose daemon is frozen (``[[faults.freeze]]``; its VMs run on)
        self.frozen = [False] * n
        #: each host's clock offset, s (``[[faults.clock]]``; schedulers apply it)
        self.clock_offset = [0.0] * n
        for c in scenario.faults.clock:
            self.clock_offset[c.host] = c.offset_s
        self._windows: list[LossBurst | DupReorder] = []
        self._freeze_listeners: list[Callable[[int, bool, float], None]] = []
        self.metrics = Metrics(n, monitor_period_s=self.period, site_of=self.site_of)
        model = MigrationModel()
        self.cluster = _IndexedCluster(model)
        self.placement_config = PlacementConfig(migration_mib_per_s=model.bandwidth_mib_s)
        self._build_vms()
        #: image transfers (``[images]``; None when the scenario has none)
        self.images = ImageModel(self, scenario.images) if scenario.images.count else None
        #: launched VM name -> when its vjob was submitted (VM start latency)
        self._submitted: dict[str, float] = {}
        self.vm_start_latencies: list[float] = []
        self._monitors: list[Callable[[int, float], None]] = []
        self._viol_gen = [0] * n
        self._host_listeners: list[Callable[[int, bool, float], None]] = []
        self._flights: dict[str, tuple[int, int, float, MigrationDone]] = {}
        self.incoming_mib = [0] * n
        self.load_events = 0
        self._load_rng = random.Random(f"{scenario.seed}:load")
        self._load_pending = False
        self._start_load()
        self._schedule_faults()
        self._launch_handlers: list[LaunchHandler] = []
        self._constraints = _Constraints()
        self._creating: set[str] = set()
        self._finish_hooks: list[Callable[[float], None]] = []
        self._schedule_launches()
        self.wall_s = 0.0
        self.scheduler_name = ""
        #: the scheduler attached by ``run_scenario`` (for checks that read its state)
        self.scheduler: Scheduler | None = None
        #: Scheduler-specific data for reports, e.g. ``"vivaldi_map"`` -> a callable
        #: returning (2-D coordinates, partitions) for ``figures.vivaldi_map``; each
        #: entry's shape is agreed between its scheduler and its reader.
        self.extras: dict[str, Callable[[], Any]] = {}
        self.vms_created = 0
        #: VMs removed (``remove_vm``): their index stays, they count nowhere
        self.removed: set[int] = set()
        if scenario.launches:
            self.every(1.0, self.check_constraints)

    # -- building -----------------------------------------------------------------------

    def _build_vms(self) -> None:
        scn = self.scenario
        n, per = scn.hosts.count, scn.vms.per_host
        total = n * per
        width = max(4, len(str(total - 1)))
        self.vm_names = [f"vm{j:0{width}d}" for j in range(total)]
        self.vm_index = {name: j for j, name in enumerate(self.vm_names)}
        self.vcpus = scn.vms.vcpus
        self.vm_memory = scn.vms.memory_mib
        initial = round(scn.load.mu) * self.vcpus if scn.load.initial == "mu" else 0
        self.vm_units = [initial] * total
        # per VM: vCPUs, memory and coschedule limit (launched VMs may differ)
        self.vm_vcpus = [self.vcpus] * total
        self.vm_mem = [self.vm_memory] * total
        self.vm_cosched = [-1] * total
        self.vm_host = [j % n for j in range(total)]  # round-robin: every host gets `per`
        self.host_vms: list[dict[int, None]] = [{} for _ in range(n)]
        self.host_demand = [0] * n
        tags: tuple[tuple[str, str], ...] = ()
        if scn.vms.dirty_intensity is not None:
            tags = (("dirty_intensity", str(scn.vms.dirty_intensity)),)
        for info in self.hosts:
            self.cluster.add_host(info.name)
            self.cluster.hosts[info.name] = type(self.cluster.hosts[info.name])(
                cpus=math.ceil(info.cpu_capacity / 100), memory_mib=info.memory_mib
            )
        for j, name in enumerate(self.vm_names):
            h = self.vm_host[j]
            spec = VmSpec(name, vcpus=self.vcpus, memory_mib=self.vm_memory, tags=tags)
            self.cluster.create(self.hosts[h].name, spec, now=0.0)
            self.host_vms[h][j] = None
            self.host_demand[h] += initial
            if initial:
                self.cluster.set_cpu_demand(name, initial / (100 * self.vcpus), now=0.0)
        for h in range(n):
            if self.host_demand[h] > self.cap[h]:
                self.metrics.set_violation(h, True, 0.0)

    def _start_load(self) -> None:
        if self.vm_names and not self._load_pending:
            self._next_load(self.engine.now)

    def _next_load(self, now: float) -> None:
        """Poisson at N_VM / interval per second, N_VM counting launched VMs too."""
        rate = len(self.vm_names) / self.scenario.load.mean_interval_per_vm_s
        nxt = now + self._load_rng.expovariate(rate)
        self._load_pending = nxt <= self.duration_s
        if self._load_pending:
            self.engine.at(nxt, self._load_event)

    def _load_event(self) -> None:
        """VMPlaceS injector: one VM, uniformly; new demand from the quantised normal."""
        rng, load = self._load_rng, self.scenario.load
        now = self.engine.now
        v = rng.randrange(len(self.vm_names))
        pct = 10 * round(min(100.0, max(0.0, rng.gauss(load.mu, load.sigma))) / 10)
        if v not in self.removed:
            self.set_vm_units(v, pct * self.vm_vcpus[v], now)
        self.load_events += 1
        self._next_load(now)

    def _schedule_faults(self) -> None:
        faults = self.scenario.faults
        at = self.engine.at
        for c in faults.crash:
            at(c.at_s, self.set_host_up, c.host, False)
            if c.recover_at_s is not None:
                at(c.recover_at_s, self.set_host_up, c.host, True)
        for f in faults.freeze:
            at(f.at_s, self.set_frozen, f.host, True)
            if f.resume_at_s is not None:
                at(f.resume_at_s, self.set_frozen, f.host, False)
        for cut in faults.site_cut:
            s = self.sites.index(cut.site)
            inside = [h.index for h in self.hosts if h.site == s]
            outside = [h.index for h in self.hosts if h.site != s]
            self._schedule_cut(inside, outside, cut.at_s, cut.heal_at_s)
        for sp in faults.split:
            inside = list(sp.hosts)
            outside = sorted(set(range(len(self.hosts))) - set(inside))
            self._schedule_cut(inside, outside, sp.at_s, sp.heal_at_s)
        windows: list[LossBurst | DupReorder] = [*faults.loss_burst, *faults.dup_reorder]
        for window in windows:
            at(window.at_s, self._net_window, window, True)
            at(window.until_s, self._net_window, window, False)

    def _schedule_cut(
        self, inside: list[int], outside: list[int], at_s: float, heal_s: float | None
    ) -> None:
        self.engine.at(at_s, self.network.cut, inside, outside)
        if heal_s is not None:
            self.engine.at(heal_s, self.network.uncut, inside, outside)

    def _net_window(self, window: LossBurst | DupReorder, start: bool) -> None:
        """A loss burst or a duplication/reordering window starts or ends: the network's
        conditions become the worst of the windows under way (``message_loss`` at least)."""
        if start:
            self._windows.append(window)
        else:
            self._windows.remove(window)
        bursts = [w.loss for w in self._windows if isinstance(w, LossBurst)]
        disorder = [w for w in self._windows if isinstance(w, DupReorder)]
        self.network.set_conditions(
            NetworkConditions(
                loss=max([self.scenario.faults.message_loss, *bursts]),
                duplicate=max([0.0, *(w.duplicate for w in disorder)]),
                reorder_s=max([0.0, *(w.reorder_s for w in disorder)]),
            )
        )

    def _schedule_launches(self) -> None:
        n = len(self.hosts)
        vjobs = 0
        for k, launch in enumerate(self.scenario.launches):
            for e, entry in enumerate(launch.hosts(n)):
                for j in range(launch.vjobs_per_entry):
                    tag = f"l{k}e{e}j{j}"
                    disk = f"file:{self.images.image_of_vjob(vjobs)}" if self.images else None
                    vjobs += 1
                    vms = tuple(
                        VmSpec(
                            f"{tag}-{i}",
                            vcpus=launch.vcpus,
                            memory_mib=launch.memory_mib,
                            coschedule=0 if i >= launch.vms - launch.coschedule0 else -1,
                            disk=disk,
                        )
                        for i in range(launch.vms)
                    )
                    spread: tuple[tuple[str, ...], ...] = ()
                    if launch.spread >= 2:
                        spread = (tuple(v.name for v in vms[: launch.spread]),)
                    req = LaunchRequest(tag, entry, launch.at_s, vms, spread, launch.create_s)
                    self.engine.at(launch.at_s, self._submit, req)

    def _submit(self, req: LaunchRequest) -> None:
        now = self.engine.now
        cons = self._constraints
        cons.spread.extend(req.spread)
        for vm in req.vms:
            if vm.coschedule >= 0:
                cons.coschedule[vm.name] = vm.coschedule
            if self.images is not None:
                self._submitted[vm.name] = now
        if not self._launch_handlers:
            self.metrics.launch(None, len(req.vms))
        for fn in self._launch_handlers:
            fn(req, now)

    # -- demand and violations ------------------------------------------------------------

    def set_vm_units(self, v: int, units: int, now: float) -> None:
        """VM ``v`` now wants ``units`` (100 = one vCPU); O(1)."""
        h = self.vm_host[v]
        old = self.host_demand[h]
        new = old - self.vm_units[v] + units
        self.vm_units[v] = units
        self.host_demand[h] = new
        self.cluster.set_cpu_demand(self.vm_names[v], units / (100 * self.vm_vcpus[v]), now=now)
        cap = self.cap[h]
        if (old > cap) != (new > cap) and self.host_up[h]:
            self._violation_changed(h, new > cap, now)

    def _violation_changed(self, h: int, over: bool, now: float) -> None:
        self.metrics.set_violation(h, over, now)
        self._viol_gen[h] += 1
        if over and self._monitors:
            k = math.floor(now / self.period) + 1
            self.engine.at(k * self.period, self._monitor_tick, h, self._viol_gen[h], k)

    def _monitor_tick(self, h: int, gen: int, k: int) -> None:
        if self._viol_gen[h] != gen or not self.metrics.is_violated(h):
            return
        now = self.engine.now
        self.metrics.detected(h, now)
        for fn in self._monitors:
            fn(h, now)
        if self._viol_gen[h] == gen and self.metrics.is_violated(h):
            self.engine.at((k + 1) * self.period, self._monitor_tick, h, gen, k + 1)

    def overloaded(self, h: int) -> bool:
        return self.host_up[h] and self.host_demand[h] > self.cap[h]

    def overloaded_hosts(self) -> list[int]:
        """Every host in violation now (O(hosts): for periodic schedulers, not per event)."""
        return [h for h in range(len(self.hosts)) if self.overloaded(h)]

    def set_host_up(self, h: int, up: bool) -> None:
        """Crash (``up=False``) or recover host ``h``: the network drops its datagrams,
        its violation stops counting, listeners (``on_host_change``) are told."""
        if self.host_up[h] == up:
            return
        now = self.engine.now
        over = self.host_demand[h] > self.cap[h]
        if not up and over:
            self._violation_changed(h, False, now)
        self.host_up[h] = up
        self.frozen[h] = False  # a crash ends a freeze; a restarted daemon runs
        if up:
            self.network.set_up(h)
            if over:
                self._violation_changed(h, True, now)
        else:
            self.network.set_down(h)
        for fn in self._host_listeners:
            fn(h, up, now)

    def set_frozen(self, h: int, frozen: bool) -> None:
        """Freeze (``frozen=True``) or resume host ``h``'s daemon: its VMs run on and
        count, listeners (``on_freeze``) stop or resume its node. A down host's daemon
        is not running, so neither happens to it."""
        if self.frozen[h] == frozen or (frozen and not self.host_up[h]):
            return
        self.frozen[h] = frozen
        now = self.engine.now
        for fn in self._freeze_listeners:
            fn(h, frozen, now)

    # -- what a scheduler uses -------------------------------------------------------------

    def on_freeze(self, fn: Callable[[int, bool, float], None]) -> None:
        """``fn(host, frozen, now)`` when a host's daemon freezes or resumes."""
        self._freeze_listeners.append(fn)

    def on_overload(self, fn: Callable[[int, float], None]) -> None:
        """``fn(host, now)`` at every monitor tick while ``host`` is in violation."""
        if not self._monitors:
            for h in range(len(self.hosts)):
                if self.metrics.is_violated(h):
                    k = math.floor(self.engine.now / self.period) + 1
                    self.engine.at(k * self.period, self._monitor_tick, h, self._viol_gen[h], k)
        self._monitors.append(fn)

    def on_launch(self, fn: LaunchHandler) -> None:
        """``fn(request, now)`` when a vjob of the scenario's ``[[launches]]`` is submitted
        (to host ``request.entry``); the scheduler reports it with ``metrics.launch``."""
        self._launch_handlers.append(fn)

    def on_finish(self, fn: Callable[[float], None]) -> None:
        """``fn(end)`` once, when the run is summarised (before the metrics close)."""
        self._finish_hooks.append(fn)

    def create_vm(
        self,
        name: str,
        host: str,
        *,
        vcpus: int,
        memory_mib: int,
        coschedule: int = -1,
        create_s: float = 0.0,
        image: str = "",
        on_done: CreateDone,
    ) -> None:
        """Define and start VM ``name`` on ``host``; ``on_done(ok, reason)`` after
        ``create_s`` (through the engine, also when refused). Its memory is reserved on
        the host meanwhile (``incoming_mib``). Refused when the name exists anywhere, the
        host is unknown or down, or its memory is short at the end; a VM is never
        duplicated. A VM booting from ``image`` (``[images]``) first waits for its host
        to hold it (``dvms.sim.images``)."""
        now = self.engine.now
        h = self.host_index.get(host)
        problem = ""
        if name in self.vm_index or name in self._creating:
            problem = f"vm {name} already exists"
        elif h is None or not self.host_up[h]:
            problem = f"host {host} is unknown or down"
        if problem:
            self.engine.at(now, on_done, False, problem)
            return
        assert h is not None
        self._creating.add(name)
        self.incoming_mib[h] += memory_mib
        spec = VmSpec(name, vcpus=vcpus, memory_mib=memory_mib, coschedule=coschedule)
        if image and self.images is not None:
            model = self.images

            def fetched(ok: bool) -> None:
                if not ok:
                    model.created(h, image)
                    self._creating.discard(name)
                    self.incoming_mib[h] -= memory_mib
                    on_done(False, f"no host up holds image {image}")
                    return
                self.engine.at(self.engine.now + create_s, self._created, h, spec, on_done, image)

            model.before_create(h, name, image, fetched)
            return
        self.engine.at(now + create_s, self._created, h, spec, on_done)

    def _created(self, h: int, spec: VmSpec, on_done: CreateDone, image: str = "") -> None:
        now = self.engine.now
        if image and self.images is not None:
            self.images.created(h, image)
        self._creating.discard(spec.name)
        self.incoming_mib[h] -= spec.memory_mib
        if not self.host_up[h]:
            on_done(False, f"host {self.hosts[h].name} went down")
            return
        try:
            self.cluster.create(self.hosts[h].name, spec, now=now)
        except HypervisorError as exc:
            on_done(False, str(exc))
            return
        v = len(self.vm_names)
        self.vm_names.append(spec.name)
        self.vm_index[spec.name] = v
        self.vm_units.append(0)
        self.vm_vcpus.append(spec.vcpus)
        self.vm_mem.append(spec.memory_mib)
        self.vm_cosched.append(spec.coschedule)
        self.vm_host.append(h)
        self.host_vms[h][v] = None
        self.vms_created += 1
        submitted = self._submitted.pop(spec.name, None)
        if submitted is not None:
            self.vm_start_latencies.append(now - submitted)
        self._start_load()
        on_done(True, "")

    def remove_vm(self, name: str, now: float) -> bool:
        """VM ``name`` stops for good (fenced, or killed with its host): it leaves its
        host, the demand accounting and the snapshots; its name may be created again.
        False (nothing done) when it is unknown or migrating."""
        v = self.vm_index.get(name)
        if v is None or name in self._flights:
            return False
        h = self.vm_host[v]
        if self.host_up[h]:
            self.set_vm_units(v, 0, now)
        else:
            self.host_demand[h] -= self.vm_units[v]
            self.vm_units[v] = 0
        del self.host_vms[h][v]
        del self.vm_index[name]
        self.removed.add(v)
        self.cluster.destroy(self.hosts[h].name, name, now=now)
        self.cluster.undefine(self.hosts[h].name, name, now=now)
        return True

    def check_constraints(self, now: float) -> list[str]:
        """Constraints of placed VMs that do not hold now; each broken rule is reported
        to the metrics once (``constraint_violations``)."""
        problems = []
        cons = self._constraints
        for group in cons.spread:
            hosts = [self.vm_host[self.vm_index[n]] for n in group if n in self.vm_index]
            if len(set(hosts)) != len(hosts):
                problems.append(f"spread {group[0]}..: {len(hosts)} VMs on {len(set(hosts))} hosts")
        for name, limit in cons.coschedule.items():
            v = self.vm_index.get(name)
            if v is not None and len(self.host_vms[self.vm_host[v]]) > limit + 1:
                where = self.hosts[self.vm_host[v]].name
                others = len(self.host_vms[self.vm_host[v]]) - 1
                problems.append(f"coschedule {limit} of {name}: {others} other VMs on {where}")
        for p in problems:
            rule = p.split(":", 1)[0]
            if rule not in cons.broken:
                cons.broken.add(rule)
                self.metrics.constraint_violation(p)
        return problems

    def on_host_change(self, fn: Callable[[int, bool, float], None]) -> None:
        """``fn(host, up, now)`` when a host crashes (up=False) or recovers."""
        self._host_listeners.append(fn)

    def every(
        self, period_s: float, fn: Callable[[float], object], *, start_s: float = 0.0
    ) -> _Periodic:
        """``fn(now)`` at ``start_s + k * period_s`` until the handle is cancelled (what
        ``fn`` returns is ignored)."""
        handle = _Periodic()

        def tick(k: int) -> None:
            if handle.cancelled:
                return
            fn(self.engine.now)
            self.engine.at(start_s + (k + 1) * period_s, tick, k + 1)

        self.engine.at(start_s, tick, 0)
        return handle

    def vms_on(self, h: int) -> list[str]:
        """VMs counted on host ``h`` (a migrating VM stays on its source until it lands)."""
        return [self.vm_names[v] for v in self.host_vms[h]]

    def migrating(self, vm: str) -> bool:
        return vm in self._flights

    def flights_at(self, h: int) -> int:
        """Live migrations into or out of host ``h`` still running."""
        return sum(1 for hs, hd, _, _ in self._flights.values() if h in (hs, hd))

    def snapshot(self, hosts: Iterable[int | str] | None = None) -> Snapshot:
        """Placement and measured CPU demand of ``hosts`` (indices or names; None = all).

        CPU demand is exact (``usage[cpu_demand]`` in milli-CPUs = units * 10); a host's
        memory excludes what incoming migrations reserve; migrating VMs appear on their
        source (pin them with a ``Root`` constraint: see ``migrating``).
        """
        if hosts is None:
            idx: Iterable[int] = range(len(self.hosts))
        else:
            idx = [self.host_index[x] if isinstance(x, str) else x for x in hosts]
        hs, vms = [], []
        for h in idx:
            info = self.hosts[h]
            hs.append(
                Host(
                    info.name,
                    cpus=math.ceil(info.cpu_capacity / 100),
                    memory_mib=info.memory_mib - self.incoming_mib[h],
                    capacity={CPU_DEMAND: info.cpu_capacity * 10},
                    online=self.host_up[h],
                )
            )
            for v in self.host_vms[h]:
                u = self.vm_units[v]
                vms.append(
                    Vm(
                        self.vm_names[v],
                        vcpus=self.vm_vcpus[v],
                        memory_mib=self.vm_mem[v],
                        coschedule=self.vm_cosched[v],
                        host=info.name,
                        cpu_demand=u / 100,
                        usage={CPU_DEMAND: u * 10},
                    )
                )
        return Snapshot(tuple(hs), tuple(vms))

    def solver_time(self, measured_wall_s: float, problem_size: int) -> float:
        """Virtual seconds to charge for one solver call on ``problem_size`` VMs."""
        if self.scenario.solver_time == "measured":
            return measured_wall_s
        return model_solver_time(problem_size)

    def migrate(self, vm: str, src: str, dst: str, on_done: MigrationDone) -> bool:
        """Start a live migration; ``on_done(ok, duration_s)`` is called at its end (or
        right away through the engine, with ok=False, when it cannot start)."""
        now = self.engine.now
        v = self.vm_index.get(vm)
        hs, hd = self.host_index.get(src), self.host_index.get(dst)
        problem = (
            v is None
            or hs is None
            or hd is None
            or self.vm_host[v] != hs
            or vm in self._flights
            or not (self.host_up[hs] and self.host_up[hd])
        )
        if not problem:
            try:
                finish = self.cluster.start_migration(vm, src, dst, now=now)
            except HypervisorError:
                problem = True
        if problem:
            self.metrics.migration_ended(False, 0.0)
            self.engine.at(now, on_done, False, 0.0)
            return False
        assert v is not None and hs is not None and hd is not None
        self._flights[vm] = (hs, hd, now, on_done)
        self.incoming_mib[hd] += self.vm_mem[v]
        self.metrics.migration_started(hs, hd)
        self.engine.at(finish, self._migration_due)
        return True

    def _migration_due(self) -> None:
        now = self.engine.now
        for ev in self.cluster.on_timer(now=now):
            if ev.kind is EventKind.MIGRATED_IN:
                self._land(ev.vm, now)

    def _land(self, vm: str, now: float) -> None:
        hs, hd, started, on_done = self._flights.pop(vm)
        v = self.vm_index[vm]
        units = self.vm_units[v]
        self.incoming_mib[hd] -= self.vm_mem[v]
        self.set_vm_units(v, 0, now)  # leave the source (its violation may end)
        del self.host_vms[hs][v]
        self.vm_host[v] = hd
        self.host_vms[hd][v] = None
        was_over = self.metrics.is_violated(hd)
        self.set_vm_units(v, units, now)  # arrive (may start a violation there)
        if not was_over and self.metrics.is_violated(hd):
            self.metrics.inbound_violation()
        duration = now - started
        self.metrics.migration_ended(True, duration)
        on_done(True, duration)

    # -- running ----------------------------------------------------------------------

    def check_invariants(self) -> list[str]:
        """Every VM on exactly one host (two while migrating), as the world believes."""
        problems = []
        copies: dict[str, int] = {}
        for vms in self.cluster.vms.values():
            for name in vms:
                copies[name] = copies.get(name, 0) + 1
        for v, name in enumerate(self.vm_names):
            if v in self.removed:
                continue
            want = 2 if name in self._flights else 1
            if copies.get(name, 0) != want:
                problems.append(f"vm {name} has {copies.get(name, 0)} copies, expected {want}")
            elif name not in self.cluster.vms[self.hosts[self.vm_host[v]].name]:
                problems.append(f"vm {name} is not on {self.hosts[self.vm_host[v]].name}")
        if len(copies) != len(self.vm_names) - len(self.removed):
            expected = len(self.vm_names) - len(self.removed)
            problems.append(f"{len(copies)} VMs in the cluster, {expected} expected")
        return problems

    def run(self, progress: Callable[[float], None] | None = None, steps: int = 200) -> None:
        """Run to the end of the scenario, calling ``progress(now)`` every 1/steps."""
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            self.engine.run_until(self.duration_s * i / steps)
            if progress is not None:
                progress(self.engine.now)
        self.wall_s += time.perf_counter() - t0

    def summary(self) -> dict:
        """Close the run (once) and return the result dict (JSON-ready)."""
        for hook in self._finish_hooks:
            hook(self.duration_s)
        self._finish_hooks = []
        self.check_constraints(self.duration_s)
        self.metrics.finish(self.duration_s)
        for problem in self.check_invariants():
            self.metrics.invariant_violation(problem)
        self.check_invariants = lambda: []  # type: ignore[method-assign]  # count once
        if self.images is not None:
            lat = self.vm_start_latencies
            self.metrics.extra.update(
                vm_start_p50_s=_round(percentile(lat, 50)),
                vm_start_p99_s=_round(percentile(lat, 99)),
                vm_start_mean_s=_round(sum(lat) / len(lat)) if lat else None,
                **self.images.summary(),
            )
        scn = self.scenario
        out = {
            "scenario": scn.name,
            "scheduler": self.scheduler_name,
            "seed": scn.seed,
            "solver_time": scn.solver_time,
            "hosts": len(self.hosts),
            "vms": len(self.vm_names),
            "vms_created": self.vms_created,
            "sites": len(self.sites),
            "virtual_s": self.duration_s,
            "load_events": self.load_events,
            "engine_events": self.engine.events,
            "engine_messages": dict(sorted(self.engine.messages.items())),
            **self.metrics.summary(),
            "wall_s": round(self.wall_s, 3),
            "virtual_per_wall": round(self.duration_s / self.wall_s, 2) if self.wall_s else None,
        }
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
