"""The host monitor: this node's hypervisor as the partition protocol reads it.

``PartitionCore`` asks ``local_state()`` synchronously (a sans-I/O core cannot await a
hypervisor), so the runner keeps a cached ``HostState`` here and refreshes it every
second and right after each driver call, before the core hears the call's result: a
leader collecting states never sees a host without the VM it has just created.

It also remembers the spec of every VM created on this node (``specs``): the test
driver's domain XML does not carry minimega's scheduling fields (coschedule, colocate),
and an emulated migration re-creates the VM from its spec on the destination.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dvms.hypervisor.base import Hypervisor, VmInfo, VmState
from dvms.hypervisor.errors import HypervisorError
from dvms.node.messages import MAX_ROWS, HostReply, VmRow
from dvms.partition.messages import HostState, LaunchVm
from dvms.partition.messages import VmState as WireVmState

__all__ = ["HostMonitor"]

log = logging.getLogger("dvms.node.monitor")


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

    def __post_init__(self) -> None:
        self.specs: dict[str, LaunchVm] = {}
        self._state: HostState | None = None

    async def refresh(self) -> None:
        try:
            stats = await self.hv.stats()
            vms = await self.hv.list_vms()
        except HypervisorError as exc:
            log.warning("host monitor: %s", exc)
            return
        self.cpus, self.memory_mib = stats.cpus, stats.memory_total_mib
        self.vms = tuple(vms)
        for name in set(self.specs) - {v.name for v in vms}:
            del self.specs[name]  # destroyed behind our back, or migrated away
        self._state = self._host_state()
        self.refreshed += 1

    def state(self) -> HostState | None:
        """The partition core's ``local_state``: None until the first refresh."""
        return self._state

    def _host_state(self) -> HostState:
        rows = []
        for v in self.vms:
            if v.state is VmState.SHUTOFF:
                continue  # defined but not running: uses nothing
            spec = self.specs.get(v.name)
            rows.append(
                WireVmState(
                    name=v.name,
                    namespace=v.namespace,
                    vcpus=v.vcpus,
                    memory_mib=v.memory_mib,
                    # test:/// hosts measure nothing; a libvirt host's demand would come
                    # from cpu_time deltas (not yet: demand 0 means no overload events)
                    cpu_demand=v.cpu_demand * v.vcpus if v.cpu_demand is not None else 0.0,
                    coschedule=spec.coschedule if spec is not None else -1,
                )
            )
        return HostState(self.name, self.cpus, self.memory_mib, tuple(rows), self.migrating)

    def spec_of(self, name: str) -> LaunchVm | None:
        """The spec to re-create ``name`` elsewhere: as created here, else from libvirt."""
        if name in self.specs:
            return self.specs[name]
        for v in self.vms:
            if v.name == name:
                return LaunchVm(v.name, v.namespace, max(v.vcpus, 1), max(v.memory_mib, 1))
        return None

    def find(self, name: str, namespace: str | None) -> VmInfo | None:
        for v in self.vms:
            if v.name == name and (namespace is None or v.namespace == namespace):
                return v
        return None

    def reply(self, namespace: str | None, vms: bool = True) -> HostReply:
        rows = [
            VmRow(v.name, v.namespace, v.state.value, v.vcpus, v.memory_mib)
            for v in self.vms
            if vms and (namespace is None or v.namespace == namespace)
        ]
        return HostReply(
            self.name,
            self.cpus,
            self.memory_mib,
            self.uri,
            tuple(rows[:MAX_ROWS]),
            len(rows) > MAX_ROWS,
        )
