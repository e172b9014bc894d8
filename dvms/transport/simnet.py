"""``SimNetwork``: an in-memory datagram network for the faithful Trio mode.

Real node runners talk through ``SimTransport`` objects inside one ``trio.run`` under
``trio.testing.MockClock(autojump_threshold=0)``. The physics come from a pure
``NetworkModel``; this module only keeps time::

    node A                     SimNetwork                                node B
    send(dst, b) --> model.route(pos A, pos B, now) -> delays (d1[, d2])
                     heap += (now + d, sender index, sender seq, copy)
                     one delivery task: sleep until heap[0].time,
                     pop everything due, in heap order --------> inbox --> receive()

Delivery order is defined by the network, not by which task the scheduler ran first:
entries leave the heap by (delivery time, sender index, sender sequence number, copy).
The tie-break deliberately uses a per-sender counter instead of one global counter: a
global counter would record the order in which Trio happened to run the senders, and
Trio shuffles its run queue with an unseeded RNG. What stays non-deterministic is that
order itself when it matters (which of two nodes that wake at the same virtual time
sends first, and so which one draws first from the model's RNG) and the order in which
two *different* receivers process datagrams delivered at the same instant. That is the
trade-off of the faithful mode; the fast mode in ``dvms.sim`` is bit-for-bit repeatable.

Rules of this network:

- ``received_at`` is the scheduled arrival time (send time + one-way delay), exact, not
  the time the receiving task got around to reading it.
- A destination address nobody holds is dropped at send time and counted
  (``undeliverable``, and ``send_failures`` of the sender), like an ICMP-less UDP loss.
- The address is looked up again at arrival: a transport closed meanwhile, or a node set
  down meanwhile, loses the datagram (``dropped_in_flight``).
- Each inbox holds at most ``inbox_limit`` datagrams; more are dropped
  (``inbox_overflow``), like a full socket buffer.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from dvms.transport.base import (
    Address,
    Datagram,
    TransportError,
    TransportStatistics,
    check_address,
    check_payload,
)
from dvms.transport.netmodel import NetworkModel, NetworkStatistics

__all__ = [
    "SimNetConfig",
    "SimNetStatistics",
    "SimNetwork",
    "SimTransport",
    "open_sim_network",
]


@dataclass(frozen=True, slots=True)
class SimNetConfig:
    """Settings of a simulated network (shared by all its transports)."""

    max_datagram: int = 8192
    """Largest payload in bytes; the same default as ``UdpConfig`` so that code which
    fits on the simulated network fits on UDP."""
    inbox_limit: int = 1024
    """Datagrams queued per transport before new arrivals are dropped: the simulated
    socket receive buffer (about 200 KiB of 200-byte messages on Linux defaults)."""

    def __post_init__(self) -> None:
        if self.max_datagram < 1:
            raise ValueError(f"max_datagram must be >= 1, not {self.max_datagram}")
        if self.inbox_limit < 1:
            raise ValueError(f"inbox_limit must be >= 1, not {self.inbox_limit}")


@dataclass(frozen=True, slots=True)
class SimNetStatistics:
    """Counters of a ``SimNetwork`` (an immutable snapshot)."""

    undeliverable: int
    """Sends to an address no open transport holds."""
    scheduled: int
    """Copies put in flight (after loss and duplication)."""
    delivered: int
    """Copies put into an inbox."""
    dropped_in_flight: int
    """Copies whose destination closed or went down before they arrived."""
    inbox_overflow: int
    """Copies dropped because the destination's inbox was full."""
    in_flight: int
    """Copies scheduled but not yet due."""
    route: NetworkStatistics
    """The model's own counters (loss, cuts, down hosts, duplicates)."""


# A heap entry: (due time, sender index, sender sequence number, copy, destination, datagram).
# The first four fields are unique, so the datagram itself is never compared.
_Entry = tuple[float, int, int, int, Address, Datagram]


class SimNetwork:
    """A simulated datagram network; start ``run()`` (or use ``open_sim_network``)."""

    def __init__(self, model: NetworkModel, *, config: SimNetConfig | None = None) -> None:
        self._model = model
        self._config = config or SimNetConfig()
        self._by_address: dict[Address, SimTransport] = {}
        self._transports_made = 0
        self._heap: list[_Entry] = []
        self._deadline = math.inf
        self._wakeup: trio.Event | None = None
        self._running = False
        self._undeliverable = 0
        self._scheduled = 0
        self._delivered = 0
        self._dropped_in_flight = 0
        self._inbox_overflow = 0

    @property
    def model(self) -> NetworkModel:
        return self._model

    @property
    def config(self) -> SimNetConfig:
        return self._config

    def new_transport(self, position: int, address: Address) -> SimTransport:
        """A transport for the node at ``position`` (the latency model's index).

        Several transports may share a position (one host, several ports); an address
        held by an open transport raises ``TransportError``.
        """
        check_address(address)
        if address in self._by_address:
            raise TransportError(f"address {address!r} is already in use")
        if position < 0:
            raise TransportError(f"position must be >= 0, not {position}")
        transport = SimTransport(self, position, address, self._transports_made)
        self._transports_made += 1
        self._by_address[address] = transport
        return transport

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver datagrams when they are due, forever. Run exactly one per network."""
        if self._running:
            raise RuntimeError("SimNetwork.run() is already running")
        self._running = True
        try:
            task_status.started()
            while True:
                self._deliver_due(trio.current_time())
                self._wakeup = trio.Event()
                self._deadline = self._heap[0][0] if self._heap else math.inf
                with trio.move_on_at(self._deadline):
                    await self._wakeup.wait()
        finally:
            self._running = False
            self._wakeup = None
            self._deadline = math.inf

    def statistics(self) -> SimNetStatistics:
        return SimNetStatistics(
            undeliverable=self._undeliverable,
            scheduled=self._scheduled,
            delivered=self._delivered,
            dropped_in_flight=self._dropped_in_flight,
            inbox_overflow=self._inbox_overflow,
            in_flight=len(self._heap),
            route=self._model.statistics(),
        )

    # -- used by SimTransport ----------------------------------------------------------

    def _submit(self, src: SimTransport, dst: Address, payload: bytes) -> bool:
        """Put one datagram in flight; False if ``dst`` is unknown."""
        target = self._by_address.get(dst)
        if target is None:
            self._undeliverable += 1
            return False
        now = trio.current_time()
        seq = src._next_seq()
        for copy, delay in enumerate(self._model.route(src.position, target.position, now)):
            due = now + delay
            datagram = Datagram(payload, src.local_address, due)
            heapq.heappush(self._heap, (due, src.index, seq, copy, dst, datagram))
            self._scheduled += 1
            if due < self._deadline and self._wakeup is not None:
                self._deadline = due
                self._wakeup.set()
        return True

    def _release(self, transport: SimTransport) -> None:
        if self._by_address.get(transport.local_address) is transport:
            del self._by_address[transport.local_address]

    def _deliver_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, _, _, dst, datagram = heapq.heappop(heap)
            target = self._by_address.get(dst)
            if target is None or not self._model.is_up(target.position):
                self._dropped_in_flight += 1
            elif target._put(datagram):
                self._delivered += 1
            else:
                self._inbox_overflow += 1


class SimTransport:
    """One endpoint on a ``SimNetwork``; build with ``SimNetwork.new_transport``."""

    def __init__(self, network: SimNetwork, position: int, address: Address, index: int) -> None:
        self._network = network
        self._position = position
        self._address = address
        self._index = index
        self._seq = 0
        self._inbox_in, self._inbox_out = trio.open_memory_channel[Datagram](
            network.config.inbox_limit
        )
        self._closed = False
        self._sent = 0
        self._bytes_sent = 0
        self._send_failures = 0
        self._received = 0
        self._bytes_received = 0

    @property
    def local_address(self) -> Address:
        return self._address

    @property
    def max_datagram(self) -> int:
        return self._network.config.max_datagram

    @property
    def position(self) -> int:
        """The node's index in the network's latency model."""
        return self._position

    @property
    def index(self) -> int:
        """Creation order on the network; the first tie-break after delivery time."""
        return self._index

    async def send(self, dst: Address, payload: bytes) -> None:
        """Put one datagram on the simulated network (see the module rules)."""
        if self._closed:
            raise trio.ClosedResourceError("transport is closed")
        data = check_payload(payload, self.max_datagram)
        check_address(dst)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._network._submit(self, dst, data):
            self._sent += 1
            self._bytes_sent += len(data)
        else:
            self._send_failures += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Datagram:
        """The next datagram delivered to this address."""
        if self._closed:
            raise trio.ClosedResourceError("transport is closed")
        datagram = await self._inbox_out.receive()
        self._received += 1
        self._bytes_received += len(datagram.payload)
        return datagram

    def receive_nowait(self) -> Datagram:
        """The next datagram already delivered, or raise ``trio.WouldBlock``."""
        if self._closed:
            raise trio.ClosedResourceError("transport is closed")
        datagram = self._inbox_out.receive_nowait()
        self._received += 1
        self._bytes_received += len(datagram.payload)
        return datagram

    async def aclose(self) -> None:
        """Leave the network: the address is freed and in-flight datagrams to it lost."""
        if not self._closed:
            self._closed = True
            self._network._release(self)
            self._inbox_out.close()  # first: blocked receivers get ClosedResourceError
            self._inbox_in.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            datagrams_sent=self._sent,
            bytes_sent=self._bytes_sent,
            send_failures=self._send_failures,
            datagrams_received=self._received,
            bytes_received=self._bytes_received,
        )

    async def __aenter__(self) -> SimTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _put(self, datagram: Datagram) -> bool:
        try:
            self._inbox_in.send_nowait(datagram)
        except trio.WouldBlock:
            return False
        return True

    def __repr__(self) -> str:
        host, port = self._address
        return f"<SimTransport {host}:{port} position={self._position}>"


@asynccontextmanager
async def open_sim_network(
    model: NetworkModel, *, config: SimNetConfig | None = None
) -> AsyncIterator[SimNetwork]:
    """A ``SimNetwork`` whose delivery task runs for the duration of the block.

    An exception from the block propagates as itself, not wrapped in an ExceptionGroup.
    """
    network = SimNetwork(model, config=config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            try:
                yield network
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
