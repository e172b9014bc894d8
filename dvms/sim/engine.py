"""The discrete-event engine that drives sans-I/O cores on a simulated network.

One heap of ``(time, seq, kind, target, payload)`` entries holds every pending event:
message deliveries, core timers and scenario actions. ``seq`` is a global counter, so
events at the same virtual time run in the order they were scheduled: the order is a
function of the network model's delays and the seed, never of task scheduling. Nothing
here knows about Kademlia or partitions: a *core* is any object with
``on_message(src, sender, rid, msg, now=)``, ``on_timer(now=)`` and ``next_deadline()``,
returning ``Send``/``Emit`` effects.

Timers: after every call into a core the engine asks for its next deadline and schedules
a timer event only when that deadline is earlier than the one already scheduled. A timer
event that no longer matches the node's scheduled deadline is stale and skipped; one
whose core now reports a later deadline (the RPC it was for got its answer) is moved
there without calling ``on_timer``. A core's ``on_timer`` must still tolerate being
called when nothing is due.

With ``wire`` set, every message is really encoded, authenticated and decoded through
``dvms.wire`` on its way (slower; used by tests to prove the simulated path and the UDP
path see identical bytes). Otherwise message objects are handed over directly, which is
what makes 10,000-node runs affordable.

Faults a node can suffer besides a crash (``crash``): a *freeze* (``freeze``/``thaw``, a
SIGSTOPped daemon) stops its timers and holds its inputs; datagrams wait in its socket
buffer, up to ``FROZEN_BUFFER`` of them (later ones are dropped and counted), and are
handed over in arrival order when it thaws, together with the shell's own inputs that
came meanwhile (``input``: a solver result, a driver result). A *clock offset*
(``set_clock``) shifts every ``now`` the node's core sees, and the deadlines it returns
back, by a constant: cores must only ever compare times of their own clock. The same
offset applies to the envelope's timestamp, so datagrams between two nodes whose clocks
differ by more than the envelope's ``replay_window_s`` are dropped as ``stale`` (really
decoded with ``wire``; otherwise the same test is made on the two clocks).

Garbage collection: a large run holds millions of long-lived objects (routing entries,
contacts, coordinates), and CPython's cyclic collector rescans them again and again
although the protocol code frees almost everything by reference counting (measured: 13 %
of a 2,000-node run's CPU time). ``run_until`` therefore pauses the automatic collector
and itself collects the young generations every ``GC_EVERY_EVENTS`` events, so cycles
made during the run are still freed while they are young; the old generation is left to
the automatic collector, which is back on between ``run_until`` calls.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.transport.netmodel import NetworkModel
from dvms.wire.envelope import WireCodec, WireConfig

__all__ = ["FROZEN_BUFFER", "NODE_PORT", "Engine", "SimNode"]

#: UDP port in every simulated node's address (the daemon's default listen port): one
#: value for the engine's nodes, the faithful mode's and the test harness's.
NODE_PORT = 7400

_DELIVER, _TIMER, _CALL = 0, 1, 2
_INF = math.inf
#: Events between two collections of the young generations while ``run_until`` runs.
GC_EVERY_EVENTS = 1_000_000
#: Datagrams a frozen node's socket buffer holds: Linux's default receive buffer (208 KiB,
#: ``net.core.rmem_default``) over about 200 bytes per protocol datagram.
FROZEN_BUFFER = 1000


class SimNode:
    """One simulated node: a core bound to an address and a network position."""

    __slots__ = (
        "addr",
        "alive",
        "clock",
        "codec",
        "core",
        "frozen",
        "held",
        "index",
        "node_id",
        "pos",
        "timer_at",
    )

    def __init__(self, index: int, pos: int, addr: Address, node_id: int, core: Any) -> None:
        self.index = index
        self.pos = pos
        self.addr = addr
        self.node_id = node_id
        self.core = core
        self.alive = True
        #: engine time -> timer events, in engine time (``timer_at``)
        self.timer_at = _INF
        self.codec: WireCodec | None = None
        #: the node's clock offset: its core sees ``engine.now + clock`` (``set_clock``)
        self.clock = 0.0
        self.frozen = False
        #: inputs that came while frozen: ``(fn, args)``, replayed in order on thaw
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def local(self, now: float) -> float:
        """Engine time ``now`` on this node's clock (what its core is given)."""
        return now + self.clock


class Engine:
    def __init__(
        self,
        network: NetworkModel,
        *,
        on_emit: Callable[[SimNode, Any, float], None] | None = None,
        codec_factory: Callable[[], WireCodec] | None = None,
        replay_window_s: float | None = None,
    ) -> None:
        self.network = network
        #: the envelope's accepted clock difference (``WireConfig``), for ``set_clock``
        self.replay_window_s = (
            WireConfig().replay_window_s if replay_window_s is None else replay_window_s
        )
        self.now = 0.0
        self.nodes: list[SimNode] = []
        self.by_addr: dict[Address, SimNode] = {}
        self.on_emit = on_emit
        self.codec_factory = codec_factory
        #: Handlers for effects other than Send/Emit (e.g. ``Solve``, ``BootVm``),
        #: by effect type: ``handler(node, effect, now)``.
        self.effect_handlers: dict[type, Callable[[SimNode, Any, float], None]] = {}
        #: Called for every datagram handed to the network: ``observer(src, dst, msg)``.
        self.message_observer: Callable[[SimNode, SimNode, Any], None] | None = None
        self._sent_by_type: dict[type, int] = {}
        self.events = 0
        self.undeliverable = 0
        #: datagrams dropped because the two clocks differ by more than the window
        self.stale = 0
        #: datagrams dropped because a frozen node's buffer was full
        self.frozen_dropped = 0
        self._skewed = False  # some node's clock is off: check every datagram
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0

    @property
    def messages(self) -> Counter[str]:
        """Datagrams handed to the network, by message type name."""
        out: Counter[str] = Counter()
        for t, n in self._sent_by_type.items():
            out[t.__name__] += n
        return out

    # -- building ----------------------------------------------------------------------

    def add_node(self, pos: int, addr: Address, node_id: int, core: Any) -> SimNode:
        if addr in self.by_addr and self.by_addr[addr].alive:
            raise ValueError(f"address {addr} already in use")
        node = SimNode(len(self.nodes), pos, addr, node_id, core)
        if self.codec_factory is not None:
            node.codec = self.codec_factory()
        self.nodes.append(node)
        self.by_addr[addr] = node
        return node

    def crash(self, node: SimNode) -> None:
        """The node stops: it sends and receives nothing more, its timers never fire."""
        node.alive = False
        node.timer_at = _INF
        node.held.clear()

    def freeze(self, node: SimNode) -> None:
        """The node stops processing: no timers, inputs held until ``thaw``."""
        node.frozen = True
        node.timer_at = _INF

    def thaw(self, node: SimNode) -> None:
        """The node runs again with its old state: what it was sent meanwhile first, in
        order, then its timers (overdue ones fire at once)."""
        if not node.frozen:
            return
        node.frozen = False
        held, node.held = node.held, []
        for fn, args in held:
            if not node.alive or node.frozen:
                break
            fn(*args)
        if node.alive and not node.frozen:
            self.apply(node, [])  # schedules its next deadline

    def input(self, node: SimNode, fn: Callable[..., Any], *args: Any) -> None:
        """A shell input for ``node`` (a solver or driver result): ``fn(*args)`` now,
        held until it thaws if it is frozen, dropped if it crashed."""
        if not node.alive:
            return
        if node.frozen:
            node.held.append((fn, args))
            return
        fn(*args)

    def set_clock(self, node: SimNode, offset_s: float) -> None:
        """``node``'s clock runs ``offset_s`` ahead of the engine's (negative: behind).
        Set it before the node's first input: a core's clock never jumps."""
        node.clock = offset_s
        self._skewed = self._skewed or offset_s != 0.0

    # -- scheduling --------------------------------------------------------------------

    def _push(self, when: float, kind: int, target: Any, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, target, payload))

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (scenario actions)."""
        self._push(max(when, self.now), _CALL, fn, args)

    def apply(self, node: SimNode, effects: list[Any]) -> None:
        """Carry out the effects a call into ``node``'s core returned."""
        if not node.alive:
            return
        now = self.now
        for eff in effects:
            if type(eff) is Send:
                self._send(node, eff, now)
            elif type(eff) is Emit:
                if self.on_emit is not None:
                    self.on_emit(node, eff.event, now)
            else:
                handler = self.effect_handlers.get(type(eff))
                if handler is None:
                    raise TypeError(f"no handler for effect {eff!r}")
                handler(node, eff, now)
        if node.frozen:
            return
        deadline = node.core.next_deadline()
        if deadline is not None:
            deadline -= node.clock
            if deadline < node.timer_at:
                if deadline < self.now:  # overdue: the node was frozen past it
                    deadline = self.now
                node.timer_at = deadline
                self._push(deadline, _TIMER, node, None)

    def _send(self, node: SimNode, eff: Send, now: float) -> None:
        dst = self.by_addr.get(eff.dst)
        msg = eff.msg
        by_type = self._sent_by_type
        t = type(msg)
        by_type[t] = by_type.get(t, 0) + 1
        if dst is None:
            self.undeliverable += 1
            return
        if self.message_observer is not None:
            self.message_observer(node, dst, msg)
        delays = self.network.route(node.pos, dst.pos, now)
        if not delays:
            return
        if (
            self._skewed
            and node.codec is None
            # one copy between two equal clocks within the window: kept (_fresh's test)
            and (node.clock != dst.clock or len(delays) != 1 or delays[0] > self.replay_window_s)
        ):
            delays = self._fresh(node, dst, delays)
            if not delays:
                return
        payload: Any
        if node.codec is not None:
            payload = node.codec.encode(msg, sender=node.node_id, rid=eff.rid, now=now + node.clock)
        else:
            payload = (node.node_id, eff.rid, msg)
        item = (node.addr, payload)
        heap = self._heap
        for d in delays:
            self._seq += 1
            heapq.heappush(heap, (now + d, self._seq, _DELIVER, dst, item))

    def _fresh(self, src: SimNode, dst: SimNode, delays: tuple[float, ...]) -> tuple[float, ...]:
        """The copies the receiver's envelope accepts: sent at the sender's clock,
        received at the receiver's, at most ``replay_window_s`` apart."""
        skew = src.clock - dst.clock
        window = self.replay_window_s
        kept = tuple(d for d in delays if abs(skew - d) <= window)
        self.stale += len(delays) - len(kept)
        return kept

    # -- running -----------------------------------------------------------------------

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float) -> None:
        """Process every event with time <= ``until``; leaves ``now == until``."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._run_until(until)
        finally:
            if gc_was_on:
                gc.enable()
        self.now = max(self.now, until)

    def _run_until(self, until: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        deliver = self._deliver
        apply = self.apply
        next_gc = self.events + GC_EVERY_EVENTS
        while heap and heap[0][0] <= until:
            when, _, kind, target, payload = pop(heap)
            self.now = when
            self.events += 1
            if kind == _DELIVER:
                deliver(target, payload, when)
            elif kind == _TIMER:
                if target.timer_at != when or not target.alive:
                    continue
                target.timer_at = _INF
                core = target.core
                local = when + target.clock
                due = core.next_deadline()
                if due is not None:
                    if due - target.clock > when:
                        # Woken for a deadline that went away (typically an RPC answered
                        # before its timeout): nothing is due, just wait for the next one.
                        target.timer_at = due - target.clock
                        self._seq += 1
                        heapq.heappush(heap, (target.timer_at, self._seq, _TIMER, target, None))
                        continue
                    if local < due:  # (when + clock) - clock rounded below: it is due
                        local = due
                apply(target, core.on_timer(now=local))
            else:
                target(*payload)
            if self.events >= next_gc:
                next_gc = self.events + GC_EVERY_EVENTS
                gc.collect(1)

    def _deliver(self, node: SimNode, item: tuple[Address, Any], now: float) -> None:
        if not node.alive:
            return
        if node.frozen:
            if len(node.held) < FROZEN_BUFFER:
                node.held.append((self._deliver_held, (node, item, now)))
            else:
                self.frozen_dropped += 1
            return
        src, payload = item
        local = now + node.clock
        if node.codec is not None:
            decoded = node.codec.decode(payload, now=local)
            if decoded is None:
                return
            sender, rid, msg = decoded.sender, decoded.rid, decoded.msg
        else:
            sender, rid, msg = payload
        self.apply(node, node.core.on_message(src, sender, rid, msg, now=local))

    def _deliver_held(self, node: SimNode, item: tuple[Address, Any], arrived: float) -> None:
        """A datagram that waited in a frozen node's buffer; without ``wire`` its age is
        checked as the envelope would (from its arrival: the delay is negligible)."""
        now = self.now
        if node.codec is None:
            src = self.by_addr.get(item[0])
            sent = arrived + (src.clock if src is not None else 0.0)
            if abs(sent - node.local(now)) > self.replay_window_s:
                self.stale += 1
                return
        self._deliver(node, item, now)
