"""The node runner: the Trio shell around a whole ``NodeCore`` (overlay + partition).

It extends the overlay-only shell (``dvms.runtime.shell.OverlayNode``: receive loop,
timer loop, Send/Emit) with what the partition protocol asks for and with the
control-plane queries one daemon makes of another::

    Compute(token, fn)      --trio.to_thread--> fn()     --> partition.on_computed
    DriverCall(op, create)  --hypervisor.create(spec)---> monitor.refresh --> on_driver_result
    DriverCall(op, migrate) --see _migrate------------------^
    monitor task (1 s)      --hypervisor.stats/list_vms--> HostMonitor (local_state())
    Emit(EventDone)         --> the submit waiting on it;  Emit(Partition*) --> PartitionLog
    HostQuery/KillVms/AdoptVm/PartitionsQuery  <--> answered here (node/messages.py)

Migration. On real QEMU hosts the source live-migrates to the destination's advertised
URI (``HostReply.uri``). Between ``test:///`` hosts in different processes no libvirt
call can move a domain (the test driver's state lives in each process), so migration is
*emulated*: the source sends ``AdoptVm(spec)``, the destination creates the VM from its
spec, then the source destroys and undefines its copy. Guest state is not carried over
(a cold re-creation); the placement effect, which is what a test host models, is exact.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dvms.effects import Address, Send
from dvms.hypervisor.base import Hypervisor
from dvms.hypervisor.errors import AlreadyExists, HypervisorError, InvalidState, VmNotFound
from dvms.names import vm_key
from dvms.overlay.messages import Contact
from dvms.overlay.records import Identity
from dvms.partition.core import Compute, DriverCall, EventDone, PartitionCore
from dvms.partition.directory import (
    CLAIMED,
    FREE,
    Location,
    encode_location,
    location_of,
    record_name,
)
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.partition.solve import SolveOutcome
from dvms.runtime.messages import (
    REQUESTS,
    RESPONSES,
    Adopted,
    AdoptVm,
    HostQuery,
    HostReply,
    Killed,
    KillVms,
    PartitionsQuery,
    PartitionsReply,
    StateCas,
    StateRead,
)
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.partition_log import PartitionLog
from dvms.runtime.services.state import ReplicatedState, answer_state
from dvms.runtime.shell import OverlayNode
from dvms.stack.core import NodeCore
from dvms.transport.base import Transport
from dvms.wire.envelope import WireCodec

__all__ = ["NodeRunner"]

log = logging.getLogger("dvms.runtime.node")

#: How often the host monitor refreshes the cached host state, seconds (DVMS: 1 s).
MONITOR_PERIOD_S = 1.0


class NodeRunner(OverlayNode):
    def __init__(
        self,
        node: NodeCore,
        transport: Transport,
        codec: WireCodec,
        monitor: HostMonitor,
        *,
        wall: Callable[[], float] = time.time,
        monitor_period_s: float = MONITOR_PERIOD_S,
        identity: Identity | None = None,
    ) -> None:
        super().__init__(node.overlay, transport, codec, wall=wall, machine=node)
        self.node = node
        self.monitor = monitor
        self.monitor_period_s = monitor_period_s
        self.partitions = PartitionLog()
        #: node id -> host name, learnt from every HostReply
        self.names: dict[int, str] = {node.node_id: monitor.name}
        #: every peer that ever answered a HostQuery: one that left the routing table
        #: since (crashed, evicted) is reported unreachable by cluster-wide commands
        self.known: dict[int, Contact] = {}
        self._rng = random.Random()
        self._nursery: trio.Nursery | None = None
        self._rpcs: dict[int, tuple[Address, trio.Event, list[Any]]] = {}
        self._events: dict[int, tuple[trio.Event, list[EventDone]]] = {}
        #: answers to further request types, registered by the daemon's services
        self.handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {}
        #: cluster state in DHT records (namespaces, vjobs), written as this identity
        self.state = ReplicatedState(self, identity or Identity.generate())

    @property
    def hv(self) -> Hypervisor:
        return self.monitor.hv

    @property
    def partition(self) -> PartitionCore:
        assert self.node.partition is not None
        return self.node.partition

    # -- service -----------------------------------------------------------------------

    async def run(self, seeds: list[tuple[str, int]], *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.monitor.refresh()
            nursery.start_soon(self._monitor_loop)
            nursery.start_soon(self._names_loop)
            await nursery.start(super().run, seeds)
            task_status.started()

    async def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM: let a plan being applied here finish (at most ``grace_s``), then
        release the partition (members told at once) and fail our pending events."""
        with trio.move_on_after(grace_s):
            while self.partition.acting():
                await trio.sleep(0.05)
        await self._apply(self.node.shutdown(now=trio.current_time()))

    async def _monitor_loop(self) -> None:
        while True:
            await trio.sleep(self.monitor_period_s)
            await self.monitor.refresh()

    async def _names_loop(self) -> None:
        """Learn the host name of every peer that enters the routing table."""
        asking: set[int] = set()

        async def ask(c: Contact) -> None:
            try:
                await self.request(c.addr, HostQuery(vms=False))
            finally:
                asking.discard(c.node_id)

        while True:
            for c in self.peer_contacts():
                if c.node_id not in self.names and c.node_id not in asking:
                    asking.add(c.node_id)
                    self.spawn(ask, c)
            await trio.sleep(self.monitor_period_s)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the running node (for the node's services)."""
        assert self._nursery is not None, "the runner is not running"
        self._nursery.start_soon(fn, *args)

    # -- effects -----------------------------------------------------------------------

    async def _effect(self, eff: Any) -> None:
        if type(eff) is Compute:
            self.spawn(self._compute, eff)
        elif type(eff) is DriverCall:
            self.spawn(self._drive, eff)
        else:
            await super()._effect(eff)

    async def _compute(self, eff: Compute) -> None:
        try:
            result = await trio.to_thread.run_sync(eff.fn)
        except Exception as exc:  # a solver bug: log it, fail this partition, keep the node
            log.exception("solver failed")
            result = SolveOutcome(False, f"solver error: {exc!r}")
        await self._apply(self.node.on_computed(eff.token, result, now=trio.current_time()))

    async def _drive(self, eff: DriverCall) -> None:
        self.monitor.migrating += eff.kind == "migrate"
        try:
            if eff.kind == "create":
                ok, reason = await self._create(eff.args["vm"])
            elif eff.kind == "migrate":
                ok, reason = await self.migrate_vm(eff.args)
            else:
                ok, reason = False, f"unknown driver call {eff.kind!r}"
        finally:
            self.monitor.migrating -= eff.kind == "migrate"
        await self.monitor.refresh()  # before the core (and the next leader) hears of it
        if not ok:
            log.warning("%s failed: %s", eff.kind, reason)
        await self._apply(self.node.on_driver_result(eff.op, ok, reason, now=self._now()))

    async def _create(self, vm: LaunchVm) -> tuple[bool, str]:
        try:
            await self.hv.create(vm.to_spec())
        except AlreadyExists as exc:
            if self.monitor.specs.get(vm_key(vm.name, vm.namespace)) == vm:
                return True, ""  # a retransmitted AdoptVm: it is here already
            return False, str(exc)
        except (HypervisorError, ValueError) as exc:
            return False, str(exc)
        self.monitor.specs[vm_key(vm.name, vm.namespace)] = vm
        return True, ""

    async def migrate_vm(self, args: dict[str, Any]) -> tuple[bool, str]:
        """Move VM ``args["vm"]`` (of ``args["namespace"]``) from this host to the node at
        ``args["dst_addr"]`` (``args["dst_host"]``): live on QEMU, re-created on test
        hosts. Returns ``(ok, reason)``."""
        name, dst = args["vm"], tuple(args["dst_addr"])
        key = vm_key(name, args.get("namespace", ""))
        spec = self.monitor.spec_of(name, args.get("namespace", ""))
        if spec is None:
            return False, f"vm {name!r} is not on {self.monitor.name}"
        if not self.monitor.uri.startswith("test:"):
            return await self._live_migrate(key, dst)
        reply = await self.request(dst, AdoptVm(spec), timeout=10.0, attempts=2)
        if not isinstance(reply, Adopted):
            return False, f"{args['dst_host']} did not answer"
        if not reply.ok:
            return False, reply.reason
        try:
            await self._remove(key)
        except HypervisorError as exc:
            return False, f"{name} runs on {args['dst_host']} but stays here: {exc}"
        return True, ""

    async def _live_migrate(self, name: str, dst: tuple[str, int]) -> tuple[bool, str]:
        from dvms.hypervisor.base import open_hypervisor

        info = await self.request(dst, HostQuery(vms=False), timeout=2.0)
        if not isinstance(info, HostReply):
            return False, "destination did not answer"
        dest = open_hypervisor("libvirt", info.uri, host=info.name)
        try:
            await self.hv.migrate(name, dest)
        except HypervisorError as exc:
            return False, str(exc)
        finally:
            await dest.aclose()
        self.monitor.specs.pop(name, None)  # name: the vm_key
        return True, ""

    async def _remove(self, key: str) -> None:
        """Destroy and undefine the VM the hypervisor knows as ``key``."""
        with contextlib.suppress(InvalidState):  # not running: undefine is enough
            await self.hv.destroy(key)
        await self.hv.undefine(key)
        self.monitor.specs.pop(key, None)

    def _emit(self, event: Any) -> None:
        self.partitions.on_event(event, self.wall())
        if isinstance(event, EventDone):
            waiter = self._events.pop(event.event_id, None)
            if waiter is not None:
                waiter[1].append(event)
                waiter[0].set()
        super()._emit(event)

    def _now(self) -> float:
        return trio.current_time()

    # -- commands ----------------------------------------------------------------------

    async def launch(
        self, vms: tuple[LaunchVm, ...], constraints: tuple[WireConstraint, ...]
    ) -> EventDone:
        """Place and create ``vms``: a launch event from this node; returns when it ends."""
        event_id, effects = self.node.launch(vms, constraints, now=self._now())
        done = trio.Event()
        box: list[EventDone] = []
        self._events[event_id] = (done, box)
        await self._apply(effects)
        await done.wait()
        return box[0]

    def peer_contacts(self) -> list[Contact]:
        return [e.contact for _, e in sorted(self.core.table.index.items())]

    async def gather(self, msg: Any, timeout: float = 0.5) -> tuple[list[Any], list[Contact]]:
        """Ask every peer of the routing table and answer ``msg`` locally too; returns
        (replies, peers that did not answer). A peer known before that is no longer in
        the routing table (the overlay dropped it after failed RPCs) counts as silent
        without being asked."""
        replies: list[Any] = [await self._answer(msg)]
        table = self.core.table.index
        silent = [c for node_id, c in self.known.items() if node_id not in table]

        async def ask(c: Contact) -> None:
            reply = await self.request(c.addr, msg, timeout=timeout)
            if reply is None:
                silent.append(c)
            else:
                replies.append(reply)

        async with trio.open_nursery() as nursery:
            for c in self.peer_contacts():
                nursery.start_soon(ask, c)
        return replies, silent

    def hosts(self) -> dict[str, Contact]:
        """Host name -> contact of every peer whose name we learnt, and ourselves."""
        out = {self.names[c.node_id]: c for c in self.peer_contacts() if c.node_id in self.names}
        out[self.monitor.name] = self.core.contact
        return out

    async def ask_host(self, host: str, msg: Any, *, timeout: float = 1.0, attempts: int = 3):
        """``msg`` answered by the node named ``host`` (ourselves included); None if it
        is unknown or does not answer."""
        if host == self.monitor.name:
            return await self._answer(msg)
        contact = self.hosts().get(host)
        if contact is None:
            return None
        return await self.request(contact.addr, msg, timeout=timeout, attempts=attempts)

    def name_of(self, c: Contact) -> str:
        return self.names.get(c.node_id) or f"{c.host}:{c.port}"

    # -- control-plane RPC -------------------------------------------------------------

    async def request(
        self, dst: Address, msg: Any, *, timeout: float = 1.0, attempts: int = 3
    ) -> Any | None:
        """Send ``msg`` to ``dst`` until answered (timeout doubles per attempt); None if
        it never is."""
        dst = (dst[0], dst[1])
        for attempt in range(attempts):
            rid = self._rng.getrandbits(64)
            done = trio.Event()
            box: list[Any] = []
            self._rpcs[rid] = (dst, done, box)
            try:
                await self._send(Send(dst, rid, msg))
                with trio.move_on_after(timeout * 2**attempt):
                    await done.wait()
            finally:
                self._rpcs.pop(rid, None)
            if box:
                return box[0]
        return None

    def _local_message(self, src: Any, sender: int, rid: int, msg: Any) -> bool:
        if type(msg) in RESPONSES:
            waiter = self._rpcs.get(rid)
            if waiter is None or waiter[0] != (src[0], src[1]):
                self.core.stats["unexpected_node_reply"] += 1
                return True
            if isinstance(msg, HostReply):
                self.names[sender] = msg.name
                self.known[sender] = Contact(sender, src[0], src[1])
            waiter[2].append(msg)
            waiter[1].set()
            return True
        if type(msg) in REQUESTS:
            self.spawn(self._serve, src, rid, msg)
            return True
        return False

    async def _serve(self, src: Address, rid: int, msg: Any) -> None:
        await self._send(Send(src, rid, await self._answer(msg)))

    async def _answer(self, msg: Any) -> Any:
        if isinstance(msg, HostQuery):
            if msg.vms:
                await self.monitor.refresh()
            return self.monitor.reply(msg.namespace, msg.vms)
        if isinstance(msg, KillVms):
            return await self._kill(msg)
        if isinstance(msg, AdoptVm):
            ok, reason = await self._create(msg.vm)
            await self.monitor.refresh()
            return Adopted(ok, reason[:512])
        if isinstance(msg, StateRead | StateCas):
            return answer_state(self.core.store, msg, self._now())
        if isinstance(msg, PartitionsQuery):
            return PartitionsReply(self.monitor.name, self.partitions.rows(self.name_of)[-256:])
        handler = self.handlers.get(type(msg))
        if handler is not None:
            return await handler(msg)
        raise TypeError(f"no answer for {msg!r}")

    async def forget(self, namespace: str, name: str) -> None:
        """``namespace/name`` was removed from this host for good: free its name in the
        DHT directory."""
        await self._apply(self.node.forget_vm(namespace, name, now=self._now()))

    async def free_claim(self, namespace: str, name: str, claimer: int) -> None:
        """Free ``namespace/name`` in the DHT directory if node ``claimer`` (dead, its
        launch lost) still claims it, so that whoever took its vjob over can claim it."""
        rname = record_name(namespace, name)
        rec = await self.get(rname)
        loc = location_of(rec)
        if rec is None or loc is None or loc.state != CLAIMED or loc.node_id != claimer:
            return
        free = self.node.identity().sign_record(
            rname, encode_location(Location(FREE)), seq=rec.seq + 1, ttl_s=rec.ttl_s
        )
        await self.put(free)
        self.core.unpublish(rname)

    async def located(self, namespace: str, name: str, host: str, node_id: int) -> None:
        await self._apply(self.node.located(namespace, name, host, node_id, now=self._now()))

    async def _kill(self, msg: KillVms) -> Killed:
        await self.monitor.refresh()
        killed: list[str] = []
        errors: list[str] = []
        for name in msg.names:
            info = self.monitor.find(name, msg.namespace)
            if info is None:
                continue
            try:
                await self._remove(info.key)
                await self.forget(info.namespace, name)
                killed.append(name)
            except VmNotFound:
                pass  # gone meanwhile
            except HypervisorError as exc:
                errors.append(str(exc)[:512])
        await self.monitor.refresh()
        return Killed(self.monitor.name, tuple(killed), tuple(errors[:64]))
