"""The thin Trio shell around ``OverlayCore``: the only overlay code that awaits.

::

    transport.receive() --> WireCodec.decode --> core.on_message --+
    timer loop (sleep until core.next_deadline()) --> on_timer ----+--> effects
    commands (lookup/get/put) --> core ----------------------------+
    effects: Send -> WireCodec.encode -> transport.send;  Emit -> waiters + listeners

The overlay-only node is the simplest case of the node runner
(``dvms.runtime.node.NodeRunner``): a subclass hands in a ``machine`` (a ``NodeCore``
that routes messages and merges timers for the overlay and the partition protocol) and
overrides ``_effect`` for its extra effect types and ``_local_message`` for messages the
Trio layer answers itself. ``core`` stays the ``OverlayCore`` that commands use.

Two clocks: the core runs on ``trio.current_time()`` (monotonic, virtual under
``MockClock``); envelopes carry ``wall()`` (``time.time`` by default) because replay
windows compare clocks of different hosts. Peer input never raises out of the receive
loop: the codec drops and counts bad datagrams, and the core counts bad messages.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio

from dvms.effects import Emit, Send
from dvms.overlay.core import Joined, LookupDone, OverlayCore, PutDone
from dvms.overlay.lookup import LookupResult
from dvms.overlay.messages import Record
from dvms.transport.base import Transport, TransportError
from dvms.wire.envelope import WireCodec

__all__ = ["OverlayNode"]

log = logging.getLogger("dvms.overlay")


class OverlayNode:
    def __init__(
        self,
        core: OverlayCore,
        transport: Transport,
        codec: WireCodec,
        *,
        wall: Callable[[], float] = time.time,
        machine: Any = None,
    ) -> None:
        self.core = core
        #: what receives messages and timers: ``core`` itself, or a ``NodeCore`` over it
        self.machine = machine if machine is not None else core
        self.transport = transport
        self.codec = codec
        self.wall = wall
        self.listeners: list[Callable[[Any], None]] = []
        self._wake = trio.Event()
        self._lookup_waiters: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._put_waiters: dict[str, list[tuple[trio.Event, list[Any]]]] = {}
        self._joined = trio.Event()
        self.send_errors = 0

    # -- service -----------------------------------------------------------------------

    async def run(self, seeds: list[tuple[str, int]], *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            await self._apply(self.core.start(seeds, now=trio.current_time()))
            task_status.started()

    async def wait_joined(self) -> None:
        await self._joined.wait()

    # -- commands ----------------------------------------------------------------------

    async def lookup(self, target: int) -> LookupResult:
        lid, effects = self.core.lookup(target, now=trio.current_time())
        return (await self._await_lookup(lid, effects)).result

    async def get(self, name: str) -> Record | None:
        lid, effects = self.core.get(name, now=trio.current_time())
        return (await self._await_lookup(lid, effects)).record

    async def put(self, record: Record) -> int:
        """Store ``record`` on its k closest nodes; returns how many acknowledged."""
        done = trio.Event()
        box: list[Any] = []
        self._put_waiters.setdefault(record.name, []).append((done, box))
        await self._apply(self.core.put(record, now=trio.current_time()))
        await done.wait()
        return box[0].stored

    async def _await_lookup(self, lid: int, effects: list[Any]) -> LookupDone:
        done = trio.Event()
        box: list[Any] = []
        self._lookup_waiters[lid] = (done, box)
        await self._apply(effects)
        await done.wait()
        return box[0]

    # -- loops -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            dgram = await self.transport.receive()
            decoded = self.codec.decode(dgram.payload, now=self.wall())
            if decoded is None:
                continue
            if self._local_message(dgram.src, decoded.sender, decoded.rid, decoded.msg):
                continue
            effects = self.machine.on_message(
                dgram.src, decoded.sender, decoded.rid, decoded.msg, now=trio.current_time()
            )
            await self._apply(effects)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.machine.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                await self._apply(self.machine.on_timer(now=now))

    # -- effects -----------------------------------------------------------------------

    async def _apply(self, effects: list[Any]) -> None:
        for eff in effects:
            if type(eff) is Send:
                await self._send(eff)
            elif type(eff) is Emit:
                self._emit(eff.event)
            else:
                await self._effect(eff)
        # A command or message may have created an earlier deadline.
        self._wake.set()

    async def _effect(self, eff: Any) -> None:
        """An effect type this runner does not know: a bug in the core that emitted it."""
        raise TypeError(f"{type(self).__name__} cannot carry out {eff!r}")

    def _local_message(self, src: Any, sender: int, rid: int, msg: Any) -> bool:
        """True if the Trio layer took ``msg`` itself (the overlay-only node takes none)."""
        return False

    async def _send(self, eff: Send) -> None:
        try:
            data = self.codec.encode(
                eff.msg, sender=self.core.node_id, rid=eff.rid, now=self.wall()
            )
            await self.transport.send(eff.dst, data)
        except (TransportError, ValueError) as exc:
            self.send_errors += 1
            log.warning("cannot send %s to %s: %s", type(eff.msg).__name__, eff.dst, exc)

    def _emit(self, event: Any) -> None:
        if isinstance(event, LookupDone):
            waiter = self._lookup_waiters.pop(event.result.lookup_id, None)
            if waiter is not None:
                waiter[1].append(event)
                waiter[0].set()
        elif isinstance(event, PutDone):
            waiters = self._put_waiters.get(event.name)
            if waiters:
                done, box = waiters.pop(0)
                box.append(event)
                done.set()
                if not waiters:
                    del self._put_waiters[event.name]
        elif isinstance(event, Joined):
            self._joined.set()
        for listener in self.listeners:
            listener(event)
