"""The node runner: the Trio shell around one ``NodeCore`` (overlay + partition), the only
code of a node that awaits. It owns the loops and carries out the core's effects; the
node's services (``services/``) get narrow capabilities of it (``capabilities.py``)::

    transport.receive() -> WireCodec.decode -+-> control-plane reply/request (below)
                                             +-> core.on_message ----------------+
    timer loop (sleep until next_deadline, woken when an input moves it) -> on_timer -+
    commands (lookup/get/put/launch) -> core ----------------------------------------+
                                                                                     v
    effects, by type:  Send       -> WireCodec.encode -> transport.send
                       Emit       -> waiters (lookup, put, join, event) + partition log
                                     + listeners
                       Solve      -> trio.to_thread: run_solve(request) -> core.on_computed
                       BootVm, MigrateVmTo -> VmDriver (hypervisor) -> core.on_driver_result
    monitor loop (MonitorConfig.period_s) -> HostMonitor.refresh (the core's local_state)

Control-plane requests between daemons (``dvms.runtime.messages``) bypass the core: a
request is answered by the service that registered its type in ``handlers``; a reply
wakes the ``request`` waiting on its request id. Every ``HostReply`` teaches the node a
peer's host name; a peer entering the routing table is asked for it.

Two clocks: the core runs on ``trio.current_time()`` (monotonic, virtual under
``MockClock``); envelopes carry ``wall()`` (``time.time`` by default) because replay
windows compare clocks of different hosts. Peer input never raises out of the receive
loop: the codec drops and counts bad datagrams, and the core counts bad messages.
Against a peer that asks too much (``dvms.stack.limits``): node-to-node queries are
rate-limited per peer and at most ``serving`` are answered at once, at most
``pending_rpcs`` of our own await answers, and peers remembered for answering are
bounded; each drop is counted in the codec's table (``busy``, ``rpc_table_full``,
``rate_request``...).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from dvms.effects import Address, Emit, Send
from dvms.overlay.clock import ClockNote
from dvms.overlay.core import (
    CrawlDone,
    Joined,
    LeaveDone,
    LookupDone,
    OverlayCore,
    PeerLeft,
    PutDone,
)
from dvms.overlay.crawl import CrawlResult
from dvms.overlay.lookup import LookupResult
from dvms.overlay.messages import Contact, Record
from dvms.overlay.records import Identity, RecordStore
from dvms.partition.core import BootVm, EventDone, MigrateVmTo, PartitionCore, Solve
from dvms.partition.directory import (
    CLAIMED,
    FREE,
    Location,
    encode_location,
    location_of,
    record_name,
)
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.partition.solve import SolveOutcome, run_solve
from dvms.runtime.capabilities import Handlers
from dvms.runtime.messages import (
    REQUESTS,
    RESPONSES,
    HostQuery,
    HostReply,
    PartitionsQuery,
    PartitionsReply,
)
from dvms.runtime.services.ha import HaShell
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.observed import DriverCallDone, SolverRan
from dvms.runtime.services.partition_log import PartitionLog
from dvms.runtime.services.state import ReplicatedState, StateConfig
from dvms.runtime.services.vm_driver import VmDriver, VmDriverConfig
from dvms.stack.core import NodeCore
from dvms.stack.limits import LimitsConfig
from dvms.transport.base import Transport, TransportError
from dvms.wire.envelope import WireCodec

__all__ = ["NodeRunner", "RunnerConfig"]

log = logging.getLogger("dvms.runtime.node")


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    #: A control-plane request (``request``, ``ask_host``) by default: first timeout,
    #: seconds (doubled per attempt), and attempts: 1 + 2 + 4 = 7 s before "no answer".
    request_timeout_s: float = 1.0
    request_attempts: int = 3
    #: First timeout per peer of a cluster-wide query (``gather``), seconds: a silent peer
    #: is reported after 0.5 + 1 + 2 = 3.5 s.
    gather_timeout_s: float = 0.5
    #: Peers a cluster-wide query asks at once (ours: a 10,000-node cluster is asked in
    #: rounds, not with 10,000 datagrams in one burst).
    gather_parallelism: int = 64
    #: How long ``stop`` lets a plan being applied here finish before it releases the
    #: partition, seconds.
    stop_grace_s: float = 30.0
    #: Then how long ``stop`` waits for the routing table's peers to acknowledge our
    #: leave (``OverlayCore.leave``), seconds.
    leave_timeout_s: float = 3.0
    #: Rows of this node's partition log answered to a ``PartitionsQuery``.
    partition_rows: int = 256
    #: Testing knob, seconds added to this node's wall clock (the timestamps its
    #: datagrams carry and the clock it checks theirs against), to test how a cluster
    #: names a node with a wrong clock. 0 (default) in any real deployment.
    clock_offset_s: float = 0.0
    #: A peer whose datagrams are signed with a key this node lacks is told which key
    #: this node signs with (a key hint: 9 bytes, unauthenticated) at most this often, s.
    key_hint_interval_s: float = 5.0


class NodeRunner:
    def __init__(
        self,
        node: NodeCore,
        transport: Transport,
        codec: WireCodec,
        monitor: HostMonitor,
        *,
        rng: random.Random,
        identity: Identity | None = None,
        wall: Callable[[], float] = time.time,
        config: RunnerConfig | None = None,
        state_config: StateConfig | None = None,
        driver_config: VmDriverConfig | None = None,
    ) -> None:
        """``rng`` draws request ids (and seeds the state service's own generator);
        ``identity`` signs the cluster state this node writes (a fresh one if None)."""
        self.node = node
        self.core: OverlayCore = node.overlay
        self.transport = transport
        self.codec = codec
        self.monitor = monitor
        self.config = config or RunnerConfig()
        off = self.config.clock_offset_s
        self.wall: Callable[[], float] = (lambda: wall() + off) if off else wall
        self.core.clocks.replay_window_s = codec.config.replay_window_s
        #: source address -> the key id of its datagrams this node lacks (logged once)
        self._key_warned: dict[Address, bytes] = {}
        #: source address -> when it was last sent a key hint (trio clock)
        self._hinted: dict[Address, float] = {}
        self.rng = rng
        #: called with every event the core emits (after the node's own waiters)
        self.listeners: list[Callable[[Any], None]] = []
        self.partitions = PartitionLog()
        #: node id -> host name, learnt from every HostReply
        self.names: dict[int, str] = {node.node_id: monitor.name}
        #: every peer that ever answered a HostQuery: one that no routing table names any
        #: more (crashed, evicted) is reported unreachable by cluster-wide commands
        self.answered: dict[int, Contact] = {}
        self.send_errors = 0
        self.limits = node.limits.config if node.limits is not None else LimitsConfig()
        #: node-to-node queries being answered now
        self.serving = 0
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        #: held while the timers' urgent effects (``carry_out(first=True)``: fences) are
        #: carried out; inputs wait for it (``due_timers``)
        self._fencing = trio.Lock()
        self._first: set[type] = set()
        self._joined = trio.Event()
        #: set (and dropped) when the core has taken an input; created by a waiter
        self._input_taken: trio.Event | None = None
        #: set when the routing table holds a peer whose name is neither known nor asked
        self._unnamed = trio.Event()
        self._asking: set[int] = set()
        self._lookup_waiters: dict[int, tuple[trio.Event, list[LookupDone]]] = {}
        self._crawl_waiters: dict[int, tuple[trio.Event, list[CrawlDone]]] = {}
        self._put_waiters: dict[str, list[tuple[trio.Event, list[PutDone]]]] = {}
        self._left = trio.Event()
        self._leave_done: list[LeaveDone] = []
        self._events: dict[int, tuple[trio.Event, list[EventDone]]] = {}
        #: set by the file service: a VM with the roots of its ``file:`` images, for the
        #: leader's image-locality score (None: launched as given)
        self.image_roots: (
            Callable[[tuple[LaunchVm, ...]], Awaitable[tuple[LaunchVm, ...]]] | None
        ) = None
        #: high availability's shell (``services/ha.py``), set by ``daemon.attach_ha``
        self.ha: HaShell | None = None
        self._rpcs: dict[int, tuple[Address, trio.Event, list[Any]]] = {}
        self._effects: dict[type, Callable[[Any], Awaitable[None]]] = {
            Send: self._send,
            Emit: self._emit,
            Solve: self._start_compute,
            BootVm: self._start_drive,
            MigrateVmTo: self._start_drive,
        }
        self._on_event: dict[type, Callable[[Any], None]] = {
            LookupDone: self._lookup_done,
            CrawlDone: self._crawl_done,
            PutDone: self._put_done,
            Joined: self._on_joined,
            LeaveDone: self._on_left,
            PeerLeft: self._on_peer_left,
            EventDone: self._event_done,
        }
        #: who answers each control-plane request type (services register themselves)
        self.handlers = Handlers()
        self.handlers.register(PartitionsQuery, self._answer_partitions)
        #: cluster state in DHT records (namespaces, vjobs), written as this identity
        self.state = ReplicatedState(
            identity or Identity.generate(),
            requests=self,
            dht=self,
            handlers=self.handlers,
            config=state_config,
            rng=random.Random(rng.getrandbits(64)),
        )
        #: this host's VMs: the partition core's driver calls and peers' VM queries
        self.driver = VmDriver(
            monitor, requests=self, directory=self, handlers=self.handlers, config=driver_config
        )

    @property
    def partition(self) -> PartitionCore:
        assert self.node.partition is not None
        return self.node.partition

    @property
    def contact(self) -> Contact:
        return self.core.contact

    @property
    def store(self) -> RecordStore:
        return self.core.store

    # -- service -----------------------------------------------------------------------

    async def run(
        self,
        seeds: list[tuple[str, int]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.monitor.refresh()
            nursery.start_soon(self._monitor_loop)
            nursery.start_soon(self._names_loop)
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            await self._apply(self.core.start(seeds, now=trio.current_time()))
            task_status.started()

    async def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM: let a plan being applied here finish (at most ``grace_s``, default
        ``RunnerConfig.stop_grace_s``), then release the partition (members told at
        once), fail our pending events, and leave the overlay (``leave``)."""
        with trio.move_on_after(self.config.stop_grace_s if grace_s is None else grace_s):
            while self.partition.acting():
                await self._wait_input_taken()
        await self._apply(self.node.shutdown(now=trio.current_time()))
        await self.leave()

    async def leave(self) -> LeaveDone | None:
        """Tell the routing table's peers, signed, that this node stops (they show it
        ``left``, not ``failed``); wait for their answers at most
        ``RunnerConfig.leave_timeout_s``. None if they did not all answer in time."""
        await self._apply(self.node.leave(at=self.wall(), now=trio.current_time()))
        with trio.move_on_after(self.config.leave_timeout_s):
            await self._left.wait()
        done = self._leave_done[0] if self._leave_done else None
        if done is not None:
            log.info("left the overlay: %d of %d peers acknowledged", done.acknowledged,
                     done.told)  # fmt: skip
        else:
            log.info("left the overlay: not every peer answered in time")
        return done

    async def wait_joined(self) -> None:
        await self._joined.wait()

    def carry_out(
        self, handlers: dict[type, Callable[[Any], Awaitable[None]]], *, first: bool = False
    ) -> None:
        """Let a service carry out effects of these types (``services/ha.py``); with
        ``first``, a timer's effects of these types are carried out before its others
        and before any input is taken (fences)."""
        self._effects.update(handlers)
        if first:
            self._first.update(handlers)

    async def apply(self, effects: list[Any]) -> None:
        """Carry out effects a service got from the core (``NodeCore`` commands)."""
        await self._apply(effects)

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the running node (for the node's services)."""
        assert self._nursery is not None, "the runner is not running"
        self._nursery.start_soon(fn, *args)

    # -- loops -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            dgram = await self.transport.receive()
            if not self.node.admit(dgram.src, "datagram", now=trio.current_time()):
                continue
            src = (dgram.src[0], dgram.src[1])
            received = self.wall()
            decoded = self.codec.decode(dgram.payload, now=received, src=src)
            if decoded is None:
                self._dropped(src)
                continue
            self._clock_notes(
                self.core.clock_sample(
                    decoded.sender, decoded.ts, received, now=trio.current_time()
                ),
                src,
            )
            await self.due_timers()
            if self._control_message(dgram.src, decoded.sender, decoded.rid, decoded.msg):
                continue
            effects = self.node.on_message(
                dgram.src, decoded.sender, decoded.rid, decoded.msg, now=trio.current_time()
            )
            await self._apply(effects)

    def _dropped(self, src: Address) -> None:
        """A datagram from ``src`` was dropped: say so when it names a key this node
        lacks (once per address and key; a peer signing with a key we lack is sent a
        key hint, at most every ``key_hint_interval_s``) or came from a peer whose clock
        is off."""
        codec = self.codec
        stale, codec.last_stale = codec.last_stale, None
        if stale is not None:
            notes = self.core.clock_sample(
                stale.sender, stale.ts, stale.received, stale=True, now=trio.current_time()
            )
            self._clock_notes(notes, src)
            return
        reason = codec.last_drop
        if reason not in ("unknown_key", "key_hint"):
            return
        if reason == "unknown_key":
            now = trio.current_time()
            last = self._hinted.get(src)
            if last is None or now - last >= self.config.key_hint_interval_s:
                if len(self._hinted) >= 4096:
                    self._hinted.clear()
                self._hinted[src] = now
                self.spawn(self._send_raw, src, codec.key_hint())
        kid = codec.unknown_keys.get(src)
        if kid is not None and self._key_warned.get(src) != kid:
            if len(self._key_warned) >= 4096:
                self._key_warned.clear()
            self._key_warned[src] = kid
            if reason == "unknown_key":
                what = (
                    "datagrams from %s:%d are signed with key %s, which this node does not "
                    "hold: install it here (dvms keys install), or make a key this node "
                    "holds primary there"
                )
            else:
                what = (
                    "%s:%d signs with key %s, which this node does not hold, and holds none "
                    "of this node's: datagrams between them are dropped until one installs "
                    "a key of the other (dvms keys install)"
                )
            log.warning(what, src[0], src[1], kid.hex())

    async def _send_raw(self, dst: Address, data: bytes) -> None:
        try:
            await self.transport.send(dst, data)
        except TransportError as exc:
            self.send_errors += 1
            log.warning("cannot send a key hint to %s: %s", dst, exc)

    def _clock_notes(self, notes: list[ClockNote], src: Address) -> None:
        for n in notes:
            name = self.names.get(n.peer)
            addr = f"{src[0]}:{src[1]}"
            who = f"{name} ({addr}, id {n.peer:040x})" if name else f"{addr} (id {n.peer:040x})"
            if n.kind == "skewed":
                log.warning(
                    "clock of peer %s is %+.1f s off this node's (warning at %.0f s; "
                    "datagrams beyond %.0f s are dropped): check NTP on both hosts",
                    who, n.offset_s, n.threshold_s, self.codec.config.replay_window_s,
                )  # fmt: skip
            elif n.kind == "recovered":
                log.info("clock of peer %s is back within range (%+.1f s)", who, n.offset_s)
            else:
                log.warning(
                    "dropped %d datagrams from peer %s as stale: its clock is %+.1f s off "
                    "this node's, beyond the replay window (%.0f s)",
                    n.dropped, who, n.offset_s, n.threshold_s,
                )  # fmt: skip

    async def due_timers(self) -> None:
        """Timers that are due go to the core before any input: a datagram here, a
        control command (``Daemon.before``). After a freeze (SIGSTOP, a stalled VM) the
        loops wake together, in an order Trio does not promise: this way an HA lease
        that ran out is fenced (``HaCore.on_timer`` fences first) before any queued
        message or command is taken, and an input that comes while another task carries
        out fences waits for them. Costs no checkpoint when nothing is due."""
        deadline = self.node.next_deadline()
        now = trio.current_time()
        if deadline is not None and now >= deadline:
            effects = self.node.on_timer(now=now)
            first = [e for e in effects if type(e) in self._first]
            if first:
                async with self._fencing:
                    await self._apply(first)
                effects = [e for e in effects if type(e) not in self._first]
            await self._apply(effects)
        elif self._fencing.locked():
            async with self._fencing:
                pass

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.node.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.due_timers()

    async def _monitor_loop(self) -> None:
        while True:
            await trio.sleep(self.monitor.next_period())
            await self.monitor.refresh()

    async def _names_loop(self) -> None:
        """Ask every peer that enters the routing table for its host name (a peer that
        does not answer is asked again after the next input that finds it unnamed)."""
        while True:
            await self._unnamed.wait()
            self._unnamed = trio.Event()
            for c in self.peer_contacts():
                if len(self._asking) >= self.config.gather_parallelism:
                    break  # the rest after the next input finds them unnamed
                if c.node_id not in self.names and c.node_id not in self._asking:
                    self._asking.add(c.node_id)
                    self.spawn(self._ask_name, c)

    async def _ask_name(self, c: Contact) -> None:
        try:
            await self.request(c.addr, HostQuery(vms=False))
        finally:
            self._asking.discard(c.node_id)

    async def _wait_input_taken(self) -> None:
        if self._input_taken is None:
            self._input_taken = trio.Event()
        await self._input_taken.wait()

    # -- effects -----------------------------------------------------------------------

    async def _apply(self, effects: list[Any]) -> None:
        """Carry out ``effects``, the core's answer to one input."""
        for eff in effects:
            carry_out = self._effects.get(type(eff))
            if carry_out is None:  # the core emitted a type nobody carries out: our bug
                raise TypeError(f"{type(self).__name__} cannot carry out {eff!r}")
            await carry_out(eff)
        # The input may have created an earlier deadline, or changed the routing table.
        self._wake.set()
        if self._input_taken is not None:
            self._input_taken.set()
            self._input_taken = None
        if not self.core.table.index.keys() <= self.names.keys() | self._asking:
            self._unnamed.set()

    async def _send(self, eff: Send) -> None:
        try:
            dst = (eff.dst[0], eff.dst[1])
            data = self.codec.encode(
                eff.msg, sender=self.core.node_id, rid=eff.rid, now=self.wall(), dst=dst
            )
            await self.transport.send(eff.dst, data)
        except (TransportError, ValueError, OverflowError, TypeError) as exc:
            # a message that does not encode (our bug: a value beyond its schema) must
            # not end the loop that sends it (the timer loop retransmits)
            self.send_errors += 1
            log.warning("cannot send %s to %s: %s", type(eff.msg).__name__, eff.dst, exc)

    async def _emit(self, eff: Emit) -> None:
        event = eff.event
        self.partitions.on_event(event, self.wall())
        on_event = self._on_event.get(type(event))
        if on_event is not None:
            on_event(event)
        for listener in self.listeners:
            listener(event)

    async def _start_compute(self, eff: Solve) -> None:
        self.spawn(self._compute, eff)

    async def _compute(self, eff: Solve) -> None:
        t0 = trio.current_time()
        try:
            result = await trio.to_thread.run_sync(run_solve, eff.request)
        except Exception as exc:  # a solver bug: log it, fail this partition, keep the node
            log.exception("solver failed")
            result = SolveOutcome(False, f"solver error: {exc!r}")
        hosts, vms = eff.request.size
        self._observe(SolverRan(hosts, vms, result.ok, trio.current_time() - t0))
        await self._apply(self.node.on_computed(eff.token, result, now=trio.current_time()))

    async def _start_drive(self, eff: BootVm | MigrateVmTo) -> None:
        self.spawn(self._drive, eff)

    async def _drive(self, eff: BootVm | MigrateVmTo) -> None:
        t0 = trio.current_time()
        ok, reason = await self.driver.carry_out(eff)
        took = trio.current_time() - t0
        if isinstance(eff, BootVm):
            self._observe(
                DriverCallDone("boot", eff.vm.name, eff.vm.namespace, "", ok, reason, took)
            )
        else:
            done = DriverCallDone("migrate", eff.vm, eff.namespace, eff.dst_host, ok, reason, took)
            self._observe(done)
        await self._apply(self.node.on_driver_result(eff.op, ok, reason, now=trio.current_time()))

    def _observe(self, record: object) -> None:
        """Hand the listeners what the shell itself saw (``services/observed.py``)."""
        for listener in self.listeners:
            listener(record)

    # -- events ------------------------------------------------------------------------

    def _lookup_done(self, event: LookupDone) -> None:
        waiter = self._lookup_waiters.pop(event.result.lookup_id, None)
        if waiter is not None:
            waiter[1].append(event)
            waiter[0].set()

    def _crawl_done(self, event: CrawlDone) -> None:
        waiter = self._crawl_waiters.pop(event.result.crawl_id, None)
        if waiter is not None:
            waiter[1].append(event)
            waiter[0].set()

    def _put_done(self, event: PutDone) -> None:
        waiters = self._put_waiters.get(event.name)
        if waiters:
            done, box = waiters.pop(0)
            box.append(event)
            done.set()
            if not waiters:
                del self._put_waiters[event.name]

    def _on_joined(self, event: Joined) -> None:
        self._joined.set()

    def _on_left(self, event: LeaveDone) -> None:
        self._leave_done.append(event)
        self._left.set()

    def _on_peer_left(self, event: PeerLeft) -> None:
        # a node that stopped cleanly is not "unreachable" in cluster-wide answers
        # (it is back in them once it answers a HostQuery again)
        self.answered.pop(event.contact.node_id, None)

    def _event_done(self, event: EventDone) -> None:
        waiter = self._events.pop(event.event_id, None)
        if waiter is not None:
            waiter[1].append(event)
            waiter[0].set()

    # -- overlay commands (Dht) --------------------------------------------------------

    async def lookup(self, target: int) -> LookupResult:
        lid, effects = self.core.lookup(target, now=trio.current_time())
        return (await self._await_lookup(lid, effects)).result

    async def get(self, name: str) -> Record | None:
        lid, effects = self.core.get(name, now=trio.current_time())
        return (await self._await_lookup(lid, effects)).record

    async def put(self, record: Record) -> int:
        """Store ``record`` on its k closest nodes; returns how many acknowledged."""
        done = trio.Event()
        box: list[PutDone] = []
        self._put_waiters.setdefault(record.name, []).append((done, box))
        await self._apply(self.core.put(record, now=trio.current_time()))
        await done.wait()
        return box[0].stored

    async def _await_lookup(self, lid: int, effects: list[Any]) -> LookupDone:
        done = trio.Event()
        box: list[LookupDone] = []
        self._lookup_waiters[lid] = (done, box)
        await self._apply(effects)
        await done.wait()
        return box[0]

    async def crawl(self) -> CrawlResult:
        """Every node of the overlay: those that answered (this one first) and those
        some routing table names that did not (``dvms.overlay.crawl``)."""
        cid, effects = self.core.crawl(now=trio.current_time())
        done = trio.Event()
        box: list[CrawlDone] = []
        self._crawl_waiters[cid] = (done, box)
        await self._apply(effects)
        await done.wait()
        return box[0].result

    async def closest_nodes(self, key: int) -> list[Contact]:
        known = self.peer_contacts()
        if len(known) + 1 < self.core.config.k:
            # the routing table is the whole cluster: no lookup needed
            return [self.contact, *known]
        return [self.contact, *(await self.lookup(key)).contacts]

    # -- partition commands (Launcher, VmDirectory) ------------------------------------

    async def launch(
        self, vms: tuple[LaunchVm, ...], constraints: tuple[WireConstraint, ...]
    ) -> EventDone:
        """Place and create ``vms``: a launch event from this node; returns when it ends.
        The hosts the VMs are scheduled on (``LaunchVm.schedule``) whose contacts this
        node knows are recruited into the event's partition first."""
        if self.image_roots is not None:
            vms = await self.image_roots(vms)
        hosts = self.hosts()
        prefer = tuple(
            dict.fromkeys(hosts[v.schedule] for v in vms if v.schedule and v.schedule in hosts)
        )
        event_id, effects = self.node.launch(
            vms, constraints, now=trio.current_time(), prefer=prefer
        )
        done = trio.Event()
        box: list[EventDone] = []
        self._events[event_id] = (done, box)
        await self._apply(effects)
        await done.wait()
        return box[0]

    async def forget(self, namespace: str, name: str) -> None:
        await self._apply(self.node.forget_vm(namespace, name, now=trio.current_time()))

    async def located(self, namespace: str, name: str, host: str, node_id: int) -> None:
        now = trio.current_time()
        await self._apply(self.node.located(namespace, name, host, node_id, now=now))

    async def free_claim(self, namespace: str, name: str, claimer: int) -> None:
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

    # -- peers (Peers) -----------------------------------------------------------------

    def peer_contacts(self) -> list[Contact]:
        return [e.contact for _, e in sorted(self.core.table.index.items())]

    def hosts(self) -> dict[str, Contact]:
        """Host name -> contact of every peer that told us its name (its current
        address if it is in the routing table), and of this node."""
        names = self.names
        out = {names[i]: c for i, c in self.answered.items() if i in names}
        out.update((names[c.node_id], c) for c in self.peer_contacts() if c.node_id in names)
        out[self.monitor.name] = self.core.contact
        return out

    def known(self) -> dict[int, Contact]:
        return dict(self.answered)

    def host_name(self, node_id: int) -> str | None:
        return self.names.get(node_id)

    def name_of(self, c: Contact) -> str:
        return self.names.get(c.node_id) or f"{c.host}:{c.port}"

    # -- control-plane requests (Requester) --------------------------------------------

    async def request(
        self,
        dst: Address,
        msg: Any,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> Any | None:
        """Send ``msg`` to ``dst`` until answered (timeout doubles per attempt); None if
        it never is. Each attempt carries its own request id, and an answer to any of
        them counts until the last one times out: a peer that answers the first attempt
        after its timeout (busy, or the work takes longer than the timeout) is not asked
        to redo it from the start for every attempt."""
        dst = (dst[0], dst[1])
        if len(self._rpcs) >= self.limits.pending_rpcs:
            self.codec.drops["rpc_table_full"] += 1
            return None
        first = self.config.request_timeout_s if timeout is None else timeout
        tries = self.config.request_attempts if attempts is None else attempts
        done = trio.Event()
        box: list[Any] = []
        rids: list[int] = []
        try:
            for attempt in range(tries):
                rid = self.rng.getrandbits(64)
                rids.append(rid)
                self._rpcs[rid] = (dst, done, box)
                await self._send(Send(dst, rid, msg))
                with trio.move_on_after(first * 2**attempt):
                    await done.wait()
                if box:
                    return box[0]
        finally:
            for rid in rids:
                self._rpcs.pop(rid, None)
        return None

    async def gather(
        self, msg: Any, *, timeout: float | None = None
    ) -> tuple[list[Any], list[Contact]]:
        """Ask every node of the cluster and answer ``msg`` locally too; returns
        (replies, nodes that did not answer). The nodes are found by a crawl of the
        overlay (not this node's routing table, which holds only part of a large
        cluster). Nodes that a routing table names but that did not answer the crawl,
        and peers that answered before but that no table names any more (crashed,
        evicted), are asked too: a node too busy to answer the crawl in time (a host
        of thousands of VMs on a loaded machine) still has its say; each is silent
        only if it does not answer the query either."""
        first = self.config.gather_timeout_s if timeout is None else timeout
        found = await self.crawl()
        replies: list[Any] = [await self.handlers.answer(msg)]
        silent: list[Contact] = []
        doubtful = [*found.failed, *found.unfinished]
        named = {c.node_id for c in (*found.answered, *doubtful)}
        doubtful += [c for node_id, c in self.answered.items() if node_id not in named]
        limit = trio.CapacityLimiter(self.config.gather_parallelism)

        async def ask(c: Contact) -> None:
            async with limit:
                reply = await self.request(c.addr, msg, timeout=first)
            if reply is None:
                silent.append(c)
            else:
                replies.append(reply)

        async with trio.open_nursery() as nursery:
            for c in (*found.answered, *doubtful):
                if c.node_id != self.core.node_id:
                    nursery.start_soon(ask, c)
        return replies, silent

    async def ask_host(
        self,
        host: str,
        msg: Any,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> Any | None:
        if host == self.monitor.name:
            return await self.handlers.answer(msg)
        contact = self.hosts().get(host)
        if contact is None:
            return None
        return await self.request(contact.addr, msg, timeout=timeout, attempts=attempts)

    def _control_message(self, src: Address, sender: int, rid: int, msg: Any) -> bool:
        """True if ``msg`` is a control-plane request or reply (taken here, not by the
        core)."""
        if type(msg) in RESPONSES:
            waiter = self._rpcs.get(rid)
            if waiter is None or waiter[0] != (src[0], src[1]):
                self.core.stats["unexpected_node_reply"] += 1
                return True
            if isinstance(msg, HostReply):
                self._answered(sender, msg.name, src)
            waiter[2].append(msg)
            waiter[1].set()
            return True
        if type(msg) in REQUESTS:
            if not self.node.admit(src, "request", now=trio.current_time()):
                return True
            if self.serving >= self.limits.serving:
                self.codec.drops["busy"] += 1
                return True
            self.serving += 1
            self.spawn(self._serve, src, rid, msg)
            return True
        return False

    def _answered(self, sender: int, name: str, src: Address) -> None:
        """Remember a peer's name and address; at most ``limits.peers`` peers outside
        the routing table (the oldest forgotten first)."""
        self.names[sender] = name
        self.answered.pop(sender, None)
        self.answered[sender] = Contact(sender, src[0], src[1])
        if len(self.answered) > self.limits.peers:
            table = self.core.table.index
            old = next((i for i in self.answered if i not in table and i != sender), None)
            if old is not None:
                del self.answered[old]
                self.names.pop(old, None)

    async def _serve(self, src: Address, rid: int, msg: Any) -> None:
        try:
            await self._send(Send(src, rid, await self.handlers.answer(msg)))
        finally:
            self.serving -= 1

    def bounds(self) -> dict[str, int]:
        """The sizes of the tables a misbehaving peer could try to grow (``status``)."""
        limiter = self.node.limits
        return {
            "replay_memory": len(self.codec.replay),
            "replay_evicted": self.codec.replay.evicted,
            "rate_buckets": len(limiter) if limiter is not None else 0,
            "pending_rpcs": len(self._rpcs),
            "overlay_rpcs": len(self.core.requests),
            "serving": self.serving,
            "asking_names": len(self._asking),
            "answered_peers": len(self.answered),
            "records": len(self.core.store),
        }

    async def _answer_partitions(self, _msg: PartitionsQuery) -> PartitionsReply:
        rows = self.partitions.rows(self.name_of)[-self.config.partition_rows :]
        return PartitionsReply(self.monitor.name, rows)
