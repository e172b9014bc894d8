"""The ``Transport`` interface, its value types and the registry of implementations.

A transport moves opaque datagrams between addresses, best effort, like UDP: a datagram
may be lost, duplicated, reordered or delayed, and nobody is told. The wire layer above
(signing, CBOR, replay checks) and the overlay above that never see which implementation
they run on; that is what lets the simulator run the daemon's code unchanged.

Errors come in two kinds, as in h11:

- a peer problem (unreachable address, ICMP error, oversized datagram *from* a peer) is
  counted in ``statistics()`` and never raised;
- our own misuse (sending more than ``max_datagram`` bytes, or a non-bytes payload) raises
  ``TransportError``; using a transport after ``aclose()`` raises
  ``trio.ClosedResourceError`` (the Trio convention).

Implementations are registered by name (``"udp"``, ``"sim"``) and opened with
``open_transport(name, **kwargs)``, an async context manager that closes the transport on
exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Address",
    "Datagram",
    "Transport",
    "TransportError",
    "TransportFactory",
    "TransportStatistics",
    "check_address",
    "check_payload",
    "open_transport",
    "register_transport",
    "registered_transports",
]

Address = tuple[str, int]
"""A (host, port) pair. UDP uses numeric IP strings; the simulated network accepts any."""


class TransportError(Exception):
    """Our caller broke a rule (oversized or non-bytes payload, address in use, ...).

    This is a bug on our side, not a network event: network trouble is counted, never
    raised.
    """


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram as received. Do not subclass."""

    payload: bytes
    src: Address
    """The sender's address as the network reports it (what to reply to)."""
    received_at: float
    """Trio clock time (seconds) at which the datagram arrived; see each implementation."""


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Counters of one transport since it was opened (an immutable snapshot)."""

    datagrams_sent: int = 0
    """Datagrams handed to the network (the kernel, or the simulated network)."""
    bytes_sent: int = 0
    send_failures: int = 0
    """Sends the network refused: unreachable or unknown destination, OS error."""
    datagrams_received: int = 0
    """Datagrams returned by ``receive()``."""
    bytes_received: int = 0
    receive_errors: int = 0
    """ICMP errors (port or host unreachable, ...) reported to the socket and skipped."""
    truncated: int = 0
    """Incoming datagrams longer than ``max_datagram``; dropped, never delivered cut."""


@runtime_checkable
class Transport(Protocol):
    """A best-effort datagram endpoint.

    ``send`` and ``receive`` are Trio checkpoints. One task should call ``receive`` in a
    loop (the node's receive loop); any number of tasks may call ``send``.
    """

    @property
    def local_address(self) -> Address:
        """The address peers reach us at (the real port when bound to port 0)."""
        ...

    @property
    def max_datagram(self) -> int:
        """Largest payload in bytes that ``send`` accepts and ``receive`` delivers."""
        ...

    async def send(self, dst: Address, payload: bytes) -> None:
        """Send one datagram, best effort.

        Never raises for an unreachable or unknown peer (that is counted in
        ``send_failures``). Raises ``TransportError`` if ``payload`` is not bytes or is
        longer than ``max_datagram``, ``trio.ClosedResourceError`` after ``aclose()``.
        """
        ...

    async def receive(self) -> Datagram:
        """Wait for the next datagram. Raises ``trio.ClosedResourceError`` once closed."""
        ...

    async def aclose(self) -> None:
        """Release the endpoint. Idempotent; wakes a blocked ``receive`` with an error."""
        ...

    def statistics(self) -> TransportStatistics:
        """Counters since the transport was opened."""
        ...


def check_address(dst: object) -> Address:
    """Return ``dst`` if it is a (str, int 0..65535) pair, else raise ``TransportError``."""
    if (
        type(dst) is not tuple
        or len(dst) != 2
        or not isinstance(dst[0], str)
        or not isinstance(dst[1], int)
        or not 0 <= dst[1] <= 0xFFFF
    ):
        raise TransportError(f"address must be a (host: str, port: int) pair, not {dst!r}")
    return dst


def check_payload(payload: object, max_datagram: int) -> bytes:
    """Return ``payload`` as ``bytes``, or raise ``TransportError`` for local misuse."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TransportError(f"payload must be bytes, not {type(payload).__name__}")
    data = bytes(payload)
    if len(data) > max_datagram:
        raise TransportError(
            f"payload of {len(data)} bytes exceeds max_datagram={max_datagram} bytes"
        )
    return data


# ---------------------------------------------------------------------------------------
# Registry by name (the aioquic congestion-control pattern).

TransportFactory = Callable[..., Awaitable[Transport]]
"""An async callable taking implementation-specific keyword arguments."""

_FACTORIES: dict[str, TransportFactory] = {}


def register_transport(name: str, factory: TransportFactory) -> None:
    """Make ``open_transport(name, **kwargs)`` call ``await factory(**kwargs)``.

    Registering a name twice with a different factory is a bug and raises ``ValueError``.
    """
    existing = _FACTORIES.get(name)
    if existing is not None and existing is not factory:
        raise ValueError(f"transport {name!r} is already registered")
    _FACTORIES[name] = factory


def registered_transports() -> tuple[str, ...]:
    """Names accepted by ``open_transport``, sorted."""
    return tuple(sorted(_FACTORIES))


@asynccontextmanager
async def open_transport(name: str, **kwargs: Any) -> AsyncIterator[Transport]:
    """Open a transport by name; it is closed when the block exits.

    ``"udp"``: ``host`` (default ``"127.0.0.1"``), ``port`` (default 0 = ephemeral),
    ``config`` (a ``UdpConfig``). ``"sim"``: ``network`` (a ``SimNetwork``), ``position``
    (the node's index in the latency model) and ``address``. Unknown names raise
    ``KeyError`` listing the registered ones.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(
            f"unknown transport {name!r}; registered: {', '.join(registered_transports())}"
        ) from None
    transport = await factory(**kwargs)
    try:
        yield transport
    finally:
        await transport.aclose()
