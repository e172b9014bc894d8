"""The host monitor: this node's hypervisor as the partition protocol reads it.

``PartitionCore`` asks ``local_state()`` synchronously (a sans-I/O core cannot await a
hypervisor), so the runner keeps a cached ``HostState`` here and refreshes it every
``MonitorConfig.period_s`` and right after each driver call, before the core hears the
call's result: a leader collecting states never sees a host without the VM it has just
created.

It also remembers the spec of every VM created on this node (``specs``): the test
driver's domain XML does not carry minimega's scheduling fields (coschedule, colocate),
and an emulated migration re-creates the VM from its spec on the destination.

Synthetic load (test hosts only, ``dvms debug load``). A libvirt ``test:///`` host
measures no CPU, so its VMs report a demand of 0 and the partition protocol never sees an
overload. ``synthetic`` maps ``(namespace, name)`` to a CPU demand in CPUs that replaces
the measured one while a VM of that name runs here (capped at its vCPUs); it is what a
user *said*, never a measurement, and ``dvms debug loads`` lists it as such. An entry
for a VM that is not here waits for it: set on every node, the load follows the VM when
the partition migrates it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio

from dvms.hypervisor.base import DomainState, Hypervisor, VmInfo
from dvms.hypervisor.errors import HypervisorError
from dvms.names import vm_key
from dvms.partition.messages import HostState, LaunchVm, VmState
from dvms.runtime.messages import MAX_ROWS, HostReply, VmRow

__all__ = ["HostMonitor", "MonitorConfig"]

log = logging.getLogger("dvms.runtime.services.monitor")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    #: How often the node runner refreshes the cached host state, seconds (DVMS: 1 s).
    period_s: float = 1.0
    #: How often the host's size (CPUs, memory) is read again, seconds. It does not change
    #: under a running daemon on our hosts; ``stats()`` dumps and parses every domain's
    #: XML, which cost as much as the VM listing itself on every refresh (ours).
    host_size_period_s: float = 30.0


@dataclass
class HostMonitor:
    hv: Hypervisor
    #: the host name users and placement see (``node1``)
    name: str
    #: how peers would reach this hypervisor (shown in ``host``; ``test:`` URIs are local)
    uri: str
    cpus: int = 0
    memory_mib: int = 0
    vms: tuple[VmInfo, ...] = ()
    #: live migrations in or out of this host still running
    migrating: int = 0
    refreshed: int = 0
    config: MonitorConfig = MonitorConfig()

    def __post_init__(self) -> None:
        self._size_at = -math.inf  # trio time of the last stats() read
        # Refreshes asked while one runs share the next one (see refresh)
        self._reading = False
        self._next: trio.Event | None = None
        #: vm_key (``namespace:name``) -> the spec it was created from here
        self.specs: dict[str, LaunchVm] = {}
        #: (namespace, name) -> synthetic CPU demand in CPUs (``dvms debug load``)
        self.synthetic: dict[tuple[str, str], float] = {}
        self._state: HostState | None = None
        #: trio time of the last read the hypervisor answered (readiness: ``/readyz``)
        self.refreshed_at = -math.inf

    async def refresh(self) -> None:
        """Read the host again. Returns once a read that *started* after the call has
        finished, so a caller sees everything done before it asked. Callers arriving
        while a read runs share the next one (N creations finishing together cost two
        listings, not N); the caller that started reading runs them."""
        if self._reading:
            if self._next is None:
                self._next = trio.Event()
            await self._next.wait()
            return
        self._reading = True
        try:
            await self._read()
            while self._next is not None:
                waiting, self._next = self._next, None
                try:
                    await self._read()
                finally:
                    waiting.set()
        finally:
            self._reading = False
            if self._next is not None:  # cancelled: release the waiters, never hang them
                self._next.set()
                self._next = None

    async def _read(self) -> None:
        now = trio.current_time()
        known = set(self.specs)  # a VM created while we list keeps its spec
        try:
            if now - self._size_at >= self.config.host_size_period_s or not self.cpus:
                stats = await self.hv.stats()
                self.cpus, self.memory_mib = stats.cpus, stats.memory_total_mib
                self._size_at = now
            vms = await self.hv.list_vms()
        except HypervisorError as exc:
            log.warning("host monitor: %s", exc)
            return
        self.vms = tuple(vms)
        for key in known - {v.key for v in vms}:
            self.specs.pop(key, None)  # destroyed behind our back, or migrated away
        self._state = self._host_state()
        self.refreshed += 1
        self.refreshed_at = now

    def state(self) -> HostState | None:
        """The partition core's ``local_state``: None until the first refresh."""
        return self._state

    def set_synthetic_load(self, namespace: str, name: str, cpus: float) -> None:
        """Give VM ``namespace/name`` a synthetic demand of ``cpus`` CPUs (0 removes it);
        the partition core sees it at its next overload check."""
        if cpus > 0:
            self.synthetic[(namespace, name)] = cpus
        else:
            self.synthetic.pop((namespace, name), None)
        if self._state is not None:
            self._state = self._host_state()

    def demand(self, v: VmInfo) -> float:
        """CPU demand of ``v`` in CPUs: the synthetic one if set, else the measured one."""
        synthetic = self.synthetic.get((v.namespace, v.name))
        if synthetic is not None:
            return min(synthetic, float(v.vcpus))
        # test:/// hosts measure nothing; a libvirt host's demand would come from
        # cpu_time deltas (not yet: demand 0 means no overload events)
        return v.cpu_demand * v.vcpus if v.cpu_demand is not None else 0.0

    def _host_state(self) -> HostState:
        rows = []
        for v in self.vms:
            if v.state is DomainState.SHUTOFF:
                continue  # defined but not running: uses nothing
            spec = self.specs.get(v.key)
            rows.append(
                VmState(
                    name=v.name,
                    namespace=v.namespace,
                    vcpus=v.vcpus,
                    memory_mib=v.memory_mib,
                    cpu_demand=self.demand(v),
                    coschedule=spec.coschedule if spec is not None else -1,
                    # the vjob's constraints travel with the spec (set by the leader at
                    # creation), so repairs here never break them
                    constraints=spec.constraints if spec is not None else (),
                )
            )
        return HostState(self.name, self.cpus, self.memory_mib, tuple(rows), self.migrating)

    def spec_of(self, name: str, namespace: str = "") -> LaunchVm | None:
        """The spec to re-create ``namespace/name`` elsewhere: as created here, else
        from libvirt."""
        key = vm_key(name, namespace)
        if key in self.specs:
            return self.specs[key]
        for v in self.vms:
            if v.key == key:
                return LaunchVm(v.name, v.namespace, max(v.vcpus, 1), max(v.memory_mib, 1))
        return None

    def find(self, name: str, namespace: str | None) -> VmInfo | None:
        for v in self.vms:
            if v.name == name and (namespace is None or v.namespace == namespace):
                return v
        return None

    def reply(self, namespace: str | None, vms: bool = True) -> HostReply:
        rows = [
            VmRow.of(v) for v in self.vms if vms and (namespace is None or v.namespace == namespace)
        ]
        return HostReply(
            self.name,
            self.cpus,
            self.memory_mib,
            self.uri,
            tuple(rows[:MAX_ROWS]),
            len(rows) > MAX_ROWS,
        )
