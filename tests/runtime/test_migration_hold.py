"""A host taking part in a live migration holds itself in its partition until the VM
lands (``PartitionCore.held_by_migration``, fed by the monitor's ``HostState.migrating``):
the destination as well as the source."""

from __future__ import annotations

import trio
import trio.testing

from dvms.hypervisor.base import DomainState, VmInfo
from dvms.partition.messages import LaunchVm
from dvms.placement.spec import VmSpec
from dvms.runtime.capabilities import Handlers
from dvms.runtime.messages import AdoptVm
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.vm_driver import VmDriver


class SlowHost:
    """A hypervisor whose ``create`` waits for ``go``: a VM still on its way here."""

    def __init__(self) -> None:
        self.vms: list[VmInfo] = []
        self.go = trio.Event()
        self.creating = trio.Event()

    async def stats(self) -> object:
        return type("Stats", (), {"cpus": 8, "memory_total_mib": 16384})()

    async def list_vms(self) -> list[VmInfo]:
        return list(self.vms)

    async def create(self, spec: VmSpec) -> VmInfo:
        self.creating.set()
        await self.go.wait()
        info = VmInfo(spec.name, "dst", DomainState.RUNNING, 1, 512)
        self.vms.append(info)
        return info


def _migrating(mon: HostMonitor) -> int:
    state = mon.state()
    assert state is not None
    return state.migrating


async def test_the_destination_of_an_emulated_migration_holds_itself_until_it_lands():
    hv = SlowHost()
    mon = HostMonitor(hv, "dst", "test:///")  # type: ignore[arg-type]
    await mon.refresh()
    driver = VmDriver(mon, requests=None, directory=None, handlers=Handlers())  # type: ignore[arg-type]
    assert _migrating(mon) == 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            driver._adopt, AdoptVm(LaunchVm.from_spec(VmSpec("web", memory_mib=512)))
        )
        await hv.creating.wait()
        assert _migrating(mon) == 1, "the VM on its way here is not in the host's state yet"
        hv.go.set()
    assert _migrating(mon) == 0
    assert [v.name for v in mon.vms] == ["web"]


async def test_a_domain_the_hypervisor_lists_as_migrating_holds_its_host():
    """A live migration is driven by the source's daemon; the destination sees it only
    as an incoming domain in its hypervisor's listing."""
    hv = SlowHost()
    hv.vms = [VmInfo("web", "dst", DomainState.MIGRATING, 1, 512)]
    mon = HostMonitor(hv, "dst", "test:///")  # type: ignore[arg-type]
    await mon.refresh()
    assert _migrating(mon) == 1
    hv.vms = [VmInfo("web", "dst", DomainState.RUNNING, 1, 512)]
    await mon.refresh()
    assert _migrating(mon) == 0
