"""This host's VMs as the protocols act on them: the partition core's driver calls, and the
peers' queries about the host (``HostQuery``, ``KillVms``, ``AdoptVm``)::

    BootVm(op, vm)           --hypervisor.create(spec)--> monitor.add --> (ok, reason)
    MigrateVmTo(op, ...)     --migrate_vm (below)-------------^
    HostQuery                --> the monitor's view of this host (its VMs if asked)
    KillVms(ns, names)       --> destroy + undefine here, names freed in the directory
    AdoptVm(spec)            --> create it here (the destination of an emulated migration)

Migration. On real QEMU hosts the source live-migrates to the destination's advertised
URI (``HostReply.uri``). Between ``test:///`` hosts in different processes no libvirt
call can move a domain (the test driver's state lives in each process), so migration is
*emulated*: the source pauses its copy and sends ``AdoptVm(spec)``, the destination
creates the VM from its spec, then the source destroys and undefines its copy (or
resumes it when the destination refuses). Guest state is not carried over
(a cold re-creation); the placement effect, which is what a test host models, is exact.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dvms.effects import Address
from dvms.hypervisor.base import DomainState, Hypervisor, open_hypervisor
from dvms.hypervisor.errors import AlreadyExists, HypervisorError, InvalidState, VmNotFound
from dvms.names import vm_key
from dvms.partition.events import BootVm, MigrateVmTo
from dvms.partition.messages import LaunchVm
from dvms.placement.spec import VmSpec
from dvms.runtime.capabilities import Handlers, Requester, VmDirectory
from dvms.runtime.messages import Adopted, AdoptVm, HostQuery, HostReply, Killed, KillVms
from dvms.runtime.services.monitor import HostMonitor

__all__ = ["VmDriver", "VmDriverConfig"]

log = logging.getLogger("dvms.runtime.services.vm_driver")

#: Opens the hypervisor of a live-migration's destination: (driver name, uri, host name).
OpenHypervisor = Callable[..., Hypervisor]
#: Makes the files a VM boots from local before it is created (``file:NAME``): the spec
#: with local paths, or "" and the reason it cannot be.
Prepare = Callable[[VmSpec], Awaitable[tuple[VmSpec | None, str]]]


class HaHooks(Protocol):
    """What high availability (``services/ha.py``) hears of the host's VMs."""

    async def created(self, vm: LaunchVm) -> None: ...

    async def removed(self, namespace: str, name: str, *, retire: bool) -> None: ...

    def spec(self, namespace: str, name: str) -> LaunchVm | None: ...


class NetworkHooks(Protocol):
    """What the VM networks (``vmnet.VmNetworks``) do around creations and migrations."""

    async def prepare(self, namespace: str, peers: tuple[str, ...] = ()) -> list[str]: ...

    async def before_migration(self, namespace: str, dst_host: str, dst_ip: str) -> None: ...


@dataclass(frozen=True, slots=True)
class VmDriverConfig:
    #: An emulated migration's ``AdoptVm``: first timeout, seconds (doubled per attempt),
    #: and attempts. The destination creates the VM before it answers.
    adopt_timeout_s: float = 10.0
    adopt_attempts: int = 2
    #: A live migration asks the destination for its hypervisor URI: timeout, seconds,
    #: and attempts.
    destination_timeout_s: float = 2.0
    destination_attempts: int = 3


class VmDriver:
    """Creates, moves and removes VMs on this node's hypervisor (``monitor.hv``) and keeps
    the monitor's specs and refreshes in step with what it did."""

    def __init__(
        self,
        monitor: HostMonitor,
        *,
        requests: Requester,
        directory: VmDirectory,
        handlers: Handlers,
        config: VmDriverConfig | None = None,
        open_destination: OpenHypervisor = open_hypervisor,
    ) -> None:
        self.monitor = monitor
        self.requests = requests
        self.directory = directory
        self.config = config or VmDriverConfig()
        self._open_destination = open_destination
        #: set by the file service (``services/files.py``); None: paths are used as given
        self.prepare: Prepare | None = None
        #: Set by the host side on real hypervisors: a VM's namespace bridge exists
        #: before the VM is created or migrated onto a host.
        self.networks: NetworkHooks | None = None
        #: Set by the daemon: HA VMs created here are adopted, removed ones released.
        self.ha: HaHooks | None = None
        handlers.register(HostQuery, self._answer_host)
        handlers.register(KillVms, self._kill)
        handlers.register(AdoptVm, self._adopt)

    @property
    def hv(self) -> Hypervisor:
        return self.monitor.hv

    # -- driver calls ------------------------------------------------------------------

    async def carry_out(self, eff: BootVm | MigrateVmTo) -> tuple[bool, str]:
        """Carry out a driver call of the partition core; the monitor is refreshed before
        this returns, so the core (and the next leader) hears of the result after the
        host state shows it. Returns ``(ok, reason)``."""
        migrating = type(eff) is MigrateVmTo
        with self.monitor.in_flight() if migrating else contextlib.nullcontext():
            if isinstance(eff, BootVm):
                ok, reason = await self.create(eff.vm)
            else:
                ok, reason = await self.migrate_vm(eff)
        if migrating or not ok:
            await self.monitor.refresh()
        # else: the created VM is listed already (``create``: ``monitor.add``)
        if not ok:
            log.warning("%s failed: %s", "migrate" if migrating else "create", reason)
        return ok, reason

    async def create(self, vm: LaunchVm) -> tuple[bool, str]:
        try:
            spec: VmSpec | None = vm.to_spec()
        except ValueError as exc:  # a peer's VM outside what a spec accepts
            return False, f"vm {vm.name}: {exc}"
        if self.prepare is not None and spec is not None:
            spec, reason = await self.prepare(spec)
            if spec is None:
                return False, reason
        assert spec is not None
        if vm.networks and self.networks is not None:
            errors = await self.networks.prepare(vm.namespace)
            if errors:
                return False, f"vm {vm.name}: namespace network: {errors[0]}"
        key = vm_key(vm.name, vm.namespace)
        try:
            try:
                info = await self.hv.create(spec)
            except AlreadyExists:
                if self.monitor.specs.get(key) == vm:
                    await self.monitor.refresh()
                    return True, ""  # a retransmitted AdoptVm: it is here already
                if not await self._replace_fenced(vm, key):
                    raise
                info = await self.hv.create(spec)
        except (HypervisorError, ValueError) as exc:
            return False, str(exc)
        self.monitor.specs[key] = vm
        self.monitor.add(info)
        if self.ha is not None:
            await self.ha.created(vm)
        return True, ""

    async def _replace_fenced(self, vm: LaunchVm, key: str) -> bool:
        """A newer generation of an HA VM comes to a host that keeps an older, stopped
        copy (fenced by pausing it, or found at start): the old copy goes."""
        if vm.ha is None:
            return False
        try:
            old = await self.hv.info(key)
        except HypervisorError:
            return False
        if old.ha_generation <= 0 or old.ha_generation >= vm.ha.generation:
            return False
        if old.state is DomainState.RUNNING:
            return False  # a running copy is fenced by its own lease, not here
        await self.remove(key)
        return True

    async def migrate_vm(self, move: MigrateVmTo) -> tuple[bool, str]:
        """Move VM ``move.vm`` (of ``move.namespace``) from this host to the node at
        ``move.dst_addr`` (host ``move.dst_host``): live on QEMU, re-created on test
        hosts. Returns ``(ok, reason)``."""
        name, dst = move.vm, (move.dst_addr[0], move.dst_addr[1])
        key = vm_key(name, move.namespace)
        spec = self.monitor.spec_of(name, move.namespace)
        ha = self.ha.spec(move.namespace, name) if self.ha is not None else None
        if spec is None:
            return False, f"vm {name!r} is not on {self.monitor.name}"
        if not self.monitor.uri.startswith("test:"):
            if ha is not None or spec.ha is not None:
                # the destination would not adopt it (libvirt moves it, not dvms)
                return False, f"vm {name}: high-availability VMs are not live-migrated"
            if spec.networks and self.networks is not None:
                await self.networks.before_migration(move.namespace, move.dst_host, dst[0])
            info = self.monitor.find(name, move.namespace)
            local_disk = spec.disk is not None or (info is not None and info.disks > 0)
            return await self._live_migrate(key, dst, copy_storage=local_disk)
        cfg = self.config
        # As at a live migration's switch-over, the copy here stops before the
        # destination's starts, so no instant sees the VM running on two hosts; it runs
        # on here when the destination does not take it.
        paused = await self._pause(key)
        reply = await self.requests.request(
            dst, AdoptVm(ha or spec), timeout=cfg.adopt_timeout_s, attempts=cfg.adopt_attempts
        )
        if not isinstance(reply, Adopted) or not reply.ok:
            if paused:
                with contextlib.suppress(HypervisorError):
                    await self.hv.resume(key)
            if not isinstance(reply, Adopted):
                return False, f"{move.dst_host} did not answer"
            return False, reply.reason
        try:
            await self.remove(key)
        except HypervisorError as exc:
            return False, f"{name} runs on {move.dst_host} but stays here: {exc}"
        if self.ha is not None:
            await self.ha.removed(move.namespace, name, retire=False)
        return True, ""

    async def _live_migrate(
        self, key: str, dst: Address, *, copy_storage: bool = False
    ) -> tuple[bool, str]:
        cfg = self.config
        info = await self.requests.request(
            dst,
            HostQuery(vms=False),
            timeout=cfg.destination_timeout_s,
            attempts=cfg.destination_attempts,
        )
        if not isinstance(info, HostReply):
            return False, "destination did not answer"
        dest = self._open_destination("libvirt", info.uri, host=info.name)
        try:
            await self.hv.migrate(key, dest, copy_storage=copy_storage)
        except HypervisorError as exc:
            return False, str(exc)
        finally:
            await dest.aclose()
        self.monitor.specs.pop(key, None)
        return True, ""

    async def _pause(self, key: str) -> bool:
        """Pause the running VM ``key`` before it moves; False if it was not running."""
        try:
            await self.hv.suspend(key)
        except HypervisorError:  # not running (or already paused): nothing to stop
            return False
        return True

    async def remove(self, key: str) -> None:
        """Destroy and undefine the VM the hypervisor knows as ``key``."""
        with contextlib.suppress(InvalidState):  # not running: undefine is enough
            await self.hv.destroy(key)
        await self.hv.undefine(key)
        self.monitor.specs.pop(key, None)

    async def forgotten(self, namespace: str, name: str) -> None:
        """Its user stopped or removed VM ``namespace/name`` here: no HA restart."""
        if self.ha is not None:
            await self.ha.removed(namespace, name, retire=True)

    # -- peers' queries ----------------------------------------------------------------

    async def _answer_host(self, msg: HostQuery) -> HostReply:
        # From the monitor's cached list, never after a read of every domain: on a host
        # of thousands of VMs one read takes seconds, longer than a cluster-wide query
        # waits, and each retransmission would queue one more read. The cache is what
        # this node's own driver calls left (each updates it before it answers) and
        # the periodic read (``MonitorConfig.period_s``) for changes made behind it.
        return self.monitor.reply(msg.namespace, msg.vms, msg.offset, msg.listing)

    async def _adopt(self, msg: AdoptVm) -> Adopted:
        # the destination of an emulated migration: held like its source until it lands
        with self.monitor.in_flight():
            ok, reason = await self.create(msg.vm)
        await self.monitor.refresh()
        return Adopted(ok, reason[:512])

    async def _kill(self, msg: KillVms) -> Killed:
        await self.monitor.refresh()
        killed: list[str] = []
        errors: list[str] = []
        for name in msg.names:
            info = self.monitor.find(name, msg.namespace)
            if info is None:
                continue
            try:
                await self.remove(info.key)
                await self.directory.forget(info.namespace, name)
                await self.forgotten(info.namespace, name)
                killed.append(name)
            except VmNotFound:
                pass  # gone meanwhile
            except HypervisorError as exc:
                errors.append(str(exc)[:512])
        await self.monitor.refresh()
        return Killed(self.monitor.name, tuple(killed), tuple(errors[:64]))
