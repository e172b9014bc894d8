"""The simulated hypervisor: a pure model of hosts, VMs and pre-copy live migration.

``SimCluster`` is sans-I/O: every method takes ``now`` (seconds, any clock) and returns
the lifecycle events it caused; migrations finish in ``on_timer(now=...)`` and
``next_deadline()`` says when the next one is due, so a discrete-event simulator drives
it with its virtual clock. ``SimHypervisor`` is the thin Trio adapter implementing the
``Hypervisor`` interface for one host of a cluster (it reads ``trio.current_time()``, so
under ``MockClock`` it runs in virtual time).

Migration model (pre-copy, as SimGrid/VMPlaceS model it): round 0 sends all memory at the
migration bandwidth B; during each round the guest dirties memory at
``intensity * B * cpu_load`` MiB/s (VMPlaceS: dirty-page intensity 10-80 % of the
migration bandwidth, scaled by the CPU work the VM does), capped at its memory size; the
next round resends what was dirtied. When a round would fit in ``max_downtime_s``, or
after ``max_rounds``, the VM is paused and the rest is sent (stop-and-copy = downtime).
1 GiB at 125 MiB/s: 8.2 s bare copy; ~11 s at intensity 45 % and load 60 %, the VMPlaceS
sample mean being 10.9 s (VMPlaceS).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dvms.hypervisor.base import (
    DomainState,
    EventKind,
    Hypervisor,
    LifecycleEvent,
    MigrationResult,
    VmInfo,
)
from dvms.hypervisor.errors import (
    AlreadyExists,
    InvalidSpec,
    InvalidState,
    MigrationFailed,
    VmNotFound,
)
from dvms.hypervisor.stats import HostStats, commitments

if TYPE_CHECKING:
    import trio

    from dvms.placement.spec import VmSpec

__all__ = [
    "MigrationEstimate",
    "MigrationModel",
    "SimCluster",
    "SimHostConfig",
    "SimHypervisor",
    "estimate_migration",
    "open_sim",
]


@dataclass(frozen=True, slots=True)
class MigrationModel:
    """Pre-copy live migration parameters.

    - ``bandwidth_mib_s``: migration bandwidth, MiB/s; default 125 (VMPlaceS vm_classes).
    - ``max_downtime_s``: stop-and-copy once a round fits in this, s; default 0.03
      (SimGrid's default max downtime).
    - ``max_rounds``: give up converging after this many pre-copy rounds; default 30.
    - ``setup_s``: fixed cost (connection, destination set-up), s; default 0.
    - ``default_intensity``: dirty-page intensity of a VM that sets none (tag
      ``dirty_intensity``), fraction of the bandwidth; default 0.45 (mid 10-80 %).
    """

    bandwidth_mib_s: float = 125.0
    max_downtime_s: float = 0.03
    max_rounds: int = 30
    setup_s: float = 0.0
    default_intensity: float = 0.45


@dataclass(frozen=True, slots=True)
class MigrationEstimate:
    """Whole duration (s), stop-and-copy downtime (s), MiB sent, pre-copy rounds (the first
    full copy counts as one)."""

    duration_s: float
    downtime_s: float
    transferred_mib: float
    rounds: int


def estimate_migration(
    memory_mib: float, intensity: float, cpu_load: float, model: MigrationModel
) -> MigrationEstimate:
    """Duration, downtime and volume of one pre-copy migration (pure)."""
    bw = model.bandwidth_mib_s
    dirty_rate = max(0.0, intensity) * bw * min(max(cpu_load, 0.0), 1.0)
    remaining = float(memory_mib)
    total = model.setup_s
    sent = 0.0
    rounds = 0
    while True:
        round_s = remaining / bw
        if round_s <= model.max_downtime_s or rounds >= model.max_rounds:
            return MigrationEstimate(total + round_s, round_s, sent + remaining, rounds)
        total += round_s
        sent += remaining
        rounds += 1
        remaining = min(dirty_rate * round_s, float(memory_mib))


@dataclass(frozen=True, slots=True)
class SimHostConfig:
    """Capacity of a simulated host: logical CPUs and memory (MiB). VMPlaceS 2016: 8/32768."""

    cpus: int = 8
    memory_mib: int = 32768


@dataclass(slots=True)
class _Vm:
    spec: VmSpec
    state: DomainState
    cpu_demand: float = 0.0  # fraction of the VM's vCPUs in use, 0..1
    intensity: float | None = None


@dataclass(frozen=True, slots=True)
class _Migration:
    vm: str
    source: str
    destination: str
    started: float
    finish_at: float
    estimate: MigrationEstimate


@dataclass(slots=True)
class SimCluster:
    """Hosts and their VMs; every input takes ``now``; outputs are returned events."""

    model: MigrationModel = field(default_factory=MigrationModel)
    hosts: dict[str, SimHostConfig] = field(default_factory=dict)
    vms: dict[str, dict[str, _Vm]] = field(default_factory=dict)
    migrations: dict[str, _Migration] = field(default_factory=dict)
    results: dict[str, MigrationResult] = field(default_factory=dict)
    #: Trio adapters attached to hosts (event fan-out only; the model never reads it)
    adapters: dict[str, SimHypervisor] = field(default_factory=dict, repr=False)
    #: VM name -> the host it runs on (the source while it migrates): O(1) ``locate``
    #: for load injectors that touch a random VM of 100,000 at every event.
    where: dict[str, str] = field(default_factory=dict, repr=False)

    def add_host(self, name: str, config: SimHostConfig | None = None) -> None:
        self.hosts[name] = config or SimHostConfig()
        self.vms.setdefault(name, {})

    def _host(self, host: str) -> dict[str, _Vm]:
        try:
            return self.vms[host]
        except KeyError:
            raise VmNotFound(f"unknown sim host {host!r}", host=host) from None

    def _vm(self, host: str, name: str) -> _Vm:
        vm = self._host(host).get(name)
        if vm is None:
            raise VmNotFound(f"vm {name!r} on {host}: no such VM on this host", vm=name, host=host)
        return vm

    def _free_memory(self, host: str) -> int:
        used = sum(vm.spec.memory_mib for vm in self.vms[host].values())
        return self.hosts[host].memory_mib - used

    def locate(self, name: str) -> str | None:
        return self.where.get(name)

    # -- lifecycle ------------------------------------------------------------------------
    def create(self, host: str, spec: VmSpec, *, now: float) -> list[LifecycleEvent]:
        vms = self._host(host)
        if name_host := self.locate(spec.name):
            raise AlreadyExists(f"vm {spec.name!r} already exists on {name_host}", vm=spec.name)
        if spec.memory_mib > self._free_memory(host):
            raise InvalidSpec(
                f"vm {spec.name!r} on {host}: needs {spec.memory_mib} MiB, "
                f"{self._free_memory(host)} MiB free",
                vm=spec.name,
                host=host,
            )
        intensity = dict(spec.tags).get("dirty_intensity")
        vms[spec.name] = _Vm(
            spec, DomainState.RUNNING, 0.0, float(intensity) if intensity else None
        )
        self.where[spec.name] = host
        return [
            LifecycleEvent(host, spec.name, EventKind.DEFINED, at=now),
            LifecycleEvent(host, spec.name, EventKind.STARTED, at=now),
        ]

    def _stop(
        self, host: str, name: str, kind: EventKind, now: float, *, paused_too: bool
    ) -> list[LifecycleEvent]:
        vm = self._vm(host, name)
        if vm.state is not DomainState.RUNNING and not (
            paused_too and vm.state is DomainState.PAUSED
        ):
            raise InvalidState(f"vm {name!r} on {host}: not running ({vm.state.value})", vm=name)
        vm.state, vm.cpu_demand = DomainState.SHUTOFF, 0.0
        return [LifecycleEvent(host, name, kind, at=now)]

    def shutdown(self, host: str, name: str, *, now: float) -> list[LifecycleEvent]:
        """A guest's own shutdown: only a running guest can do it."""
        return self._stop(host, name, EventKind.SHUTDOWN, now, paused_too=False)

    def destroy(self, host: str, name: str, *, now: float) -> list[LifecycleEvent]:
        """Power off, as libvirt's destroy: a running or a paused guest."""
        return self._stop(host, name, EventKind.STOPPED, now, paused_too=True)

    def undefine(self, host: str, name: str, *, now: float) -> list[LifecycleEvent]:
        vm = self._vm(host, name)
        if vm.state is not DomainState.SHUTOFF:
            raise InvalidState(f"vm {name!r} on {host}: still {vm.state.value}", vm=name)
        del self.vms[host][name]
        self.where.pop(name, None)
        return [LifecycleEvent(host, name, EventKind.UNDEFINED, at=now)]

    def set_state(
        self, host: str, name: str, want: DomainState, *, now: float
    ) -> list[LifecycleEvent]:
        """Pause (``PAUSED``), resume or boot (``RUNNING``) a VM."""
        vm = self._vm(host, name)
        allowed = {
            DomainState.PAUSED: (DomainState.RUNNING,),
            DomainState.RUNNING: (DomainState.PAUSED, DomainState.SHUTOFF),
        }[want]
        if vm.state not in allowed:
            raise InvalidState(f"vm {name!r} on {host}: {vm.state.value}", vm=name, host=host)
        kind = {
            DomainState.PAUSED: EventKind.SUSPENDED,
            DomainState.RUNNING: EventKind.RESUMED
            if vm.state is DomainState.PAUSED
            else EventKind.STARTED,
        }[want]
        vm.state = want
        if want is DomainState.PAUSED:
            vm.cpu_demand = 0.0
        return [LifecycleEvent(host, name, kind, at=now)]

    def set_cpu_demand(self, name: str, demand: float, *, now: float) -> None:
        """Load injector input: fraction (0..1) of the VM's vCPUs it wants."""
        host = self.locate(name)
        if host is None:
            raise VmNotFound(f"vm {name!r}: not on any sim host", vm=name)
        self.vms[host][name].cpu_demand = min(max(demand, 0.0), 1.0)

    # -- migration ------------------------------------------------------------------------
    def start_migration(self, name: str, source: str, destination: str, *, now: float) -> float:
        """Begin migrating; returns the virtual time at which ``on_timer`` completes it."""
        vm = self._vm(source, name)
        self._host(destination)
        if source == destination:
            raise MigrationFailed(f"vm {name!r}: source and destination are both {source}")
        if vm.state is not DomainState.RUNNING:
            raise InvalidState(f"vm {name!r} on {source}: not running ({vm.state.value})")
        if vm.spec.memory_mib > self._free_memory(destination):
            raise MigrationFailed(
                f"migrate vm {name!r} {source} -> {destination}: not enough memory there",
                vm=name,
            )
        intensity = vm.intensity if vm.intensity is not None else self.model.default_intensity
        est = estimate_migration(vm.spec.memory_mib, intensity, vm.cpu_demand, self.model)
        vm.state = DomainState.MIGRATING
        # the destination reserves the memory for the whole migration (as VMPlaceS does)
        self.vms[destination][name] = _Vm(vm.spec, DomainState.BUILDING)
        self.migrations[name] = _Migration(
            name, source, destination, now, now + est.duration_s, est
        )
        return now + est.duration_s

    def next_deadline(self) -> float | None:
        return min((m.finish_at for m in self.migrations.values()), default=None)

    def on_timer(self, *, now: float) -> list[LifecycleEvent]:
        events: list[LifecycleEvent] = []
        for mig in sorted(self.migrations.values(), key=lambda m: (m.finish_at, m.vm)):
            if mig.finish_at > now:
                continue
            del self.migrations[mig.vm]
            vm = self.vms[mig.source].pop(mig.vm)
            self.vms[mig.destination][mig.vm] = replace(vm, state=DomainState.RUNNING)
            self.where[mig.vm] = mig.destination
            est = mig.estimate
            self.results[mig.vm] = MigrationResult(
                mig.vm,
                mig.source,
                mig.destination,
                est.duration_s,
                est.downtime_s * 1000.0,
                est.transferred_mib,
                "sim-precopy",
                {"rounds": est.rounds},
            )
            events.append(LifecycleEvent(mig.source, mig.vm, EventKind.MIGRATED_OUT, at=now))
            events.append(LifecycleEvent(mig.destination, mig.vm, EventKind.MIGRATED_IN, at=now))
        return events

    # -- queries --------------------------------------------------------------------------
    def info(self, host: str, name: str) -> VmInfo:
        vm = self._vm(host, name)
        return VmInfo(
            name,
            host,
            vm.state,
            vm.spec.vcpus,
            vm.spec.memory_mib,
            vm.spec.namespace,
            cpu_demand=vm.cpu_demand,
        )

    def list_vms(self, host: str) -> list[VmInfo]:
        return [self.info(host, name) for name in sorted(self._host(host))]

    def stats(self, host: str) -> HostStats:
        cfg = self.hosts[host]
        vms = list(self._host(host).values())
        commit = commitments(
            (
                v.state in (DomainState.RUNNING, DomainState.MIGRATING),
                v.spec.vcpus,
                v.spec.memory_mib,
                len(v.spec.networks),
            )
            for v in vms
        )
        demand = sum(
            v.cpu_demand * v.spec.vcpus for v in vms if v.state is not DomainState.BUILDING
        )
        return HostStats(
            host=host,
            cpus=cfg.cpus,
            memory_total_mib=cfg.memory_mib,
            commit=commit,
            source="sim",
            cpu_percent=100.0 * demand / cfg.cpus,
            cpu_demand=demand,
            memory_available_mib=cfg.memory_mib - commit.memory_mib,
        )


class SimHypervisor(Hypervisor):
    """Trio adapter: one host of a ``SimCluster``, clock = ``trio.current_time()``."""

    def __init__(self, cluster: SimCluster, host: str) -> None:
        if host not in cluster.hosts:
            cluster.add_host(host)
        self.cluster = cluster
        self.host = host
        self._subscribers: list[trio.MemorySendChannel[LifecycleEvent]] = []
        # adapters of one cluster share it, so migration events reach both hosts
        cluster.adapters[host] = self

    @staticmethod
    def _now() -> float:
        import trio

        return trio.current_time()

    def _publish(self, events: list[LifecycleEvent]) -> None:
        for event in events:
            target = self.cluster.adapters.get(event.host)
            if target is None:
                continue
            for chan in list(target._subscribers):
                try:
                    chan.send_nowait(event)
                except Exception:  # closed or full subscriber: drop it, never block
                    target._subscribers.remove(chan)

    async def create(self, spec: VmSpec) -> VmInfo:
        self._publish(self.cluster.create(self.host, spec, now=self._now()))
        return self.cluster.info(self.host, spec.name)

    async def shutdown(self, name: str) -> None:
        self._publish(self.cluster.shutdown(self.host, name, now=self._now()))

    async def destroy(self, name: str) -> None:
        self._publish(self.cluster.destroy(self.host, name, now=self._now()))

    async def undefine(self, name: str) -> None:
        self._publish(self.cluster.undefine(self.host, name, now=self._now()))

    async def suspend(self, name: str) -> None:
        self._publish(self.cluster.set_state(self.host, name, DomainState.PAUSED, now=self._now()))

    async def resume(self, name: str) -> None:
        self._publish(self.cluster.set_state(self.host, name, DomainState.RUNNING, now=self._now()))

    async def start(self, name: str) -> None:
        self._publish(self.cluster.set_state(self.host, name, DomainState.RUNNING, now=self._now()))

    async def migrate(
        self, name: str, dest: Hypervisor, *, copy_storage: bool = False
    ) -> MigrationResult:
        import trio

        if not isinstance(dest, SimHypervisor) or dest.cluster is not self.cluster:
            raise MigrationFailed(f"vm {name!r}: destination is not a host of this sim cluster")
        finish = self.cluster.start_migration(name, self.host, dest.host, now=self._now())
        await trio.sleep_until(finish)
        self._publish(self.cluster.on_timer(now=self._now()))
        return self.cluster.results.pop(name)

    async def list_vms(self) -> list[VmInfo]:
        return self.cluster.list_vms(self.host)

    async def info(self, name: str) -> VmInfo:
        return self.cluster.info(self.host, name)

    async def stats(self) -> HostStats:
        return self.cluster.stats(self.host)

    def events(self) -> trio.MemoryReceiveChannel[LifecycleEvent]:
        import trio

        send, recv = trio.open_memory_channel[LifecycleEvent](1024)
        self._subscribers.append(send)
        return recv

    async def aclose(self) -> None:
        for chan in self._subscribers:
            chan.close()
        self._subscribers.clear()
        if self.cluster.adapters.get(self.host) is self:
            del self.cluster.adapters[self.host]


def open_sim(host: str, cluster: SimCluster | None = None) -> SimHypervisor:
    """Registry factory: ``open_hypervisor("sim", "h1", cluster)``."""
    return SimHypervisor(cluster if cluster is not None else SimCluster(), host)
