"""``UdpTransport``: the ``Transport`` interface on a real UDP socket (``trio.socket``).

One unconnected datagram socket per transport, IPv4 or IPv6 (chosen from the bind host).
``receive()`` is the receive loop's only input and must never die of network trouble:

- ICMP errors (port/host unreachable) come back as ``ECONNREFUSED`` etc. from whichever
  socket call comes next: always on Windows (``WSAECONNRESET``), on Linux only when the
  socket has ``IP_RECVERR`` (``UdpConfig.report_icmp_errors``; off by default, as in
  the kernel). ``receive()`` counts them in ``receive_errors`` and reads on; a ``send()``
  that trips over one counts it in ``send_failures``. On Linux each error also sits in
  the socket's error queue, which keeps the socket "readable" (EPOLLERR) until read, so
  both paths drain that queue; otherwise the receive loop would spin at 100% CPU.
- A datagram longer than ``max_datagram`` is detected by reading one byte more than the
  limit (the kernel silently truncates to the buffer size); it is counted in
  ``truncated`` and dropped, never delivered cut short.

``received_at`` is ``trio.current_time()`` when the datagram was read, so it includes the
time the datagram sat in the socket buffer.
"""

from __future__ import annotations

import errno
import socket as _stdlib_socket
import sys
from dataclasses import dataclass

import trio

from dvms.transport.base import (
    Address,
    Datagram,
    TransportStatistics,
    check_address,
    check_payload,
)

__all__ = ["MAX_UDP_PAYLOAD", "UdpConfig", "UdpTransport"]

MAX_UDP_PAYLOAD = 65507
"""Largest UDP payload over IPv4 (65535 - 8 UDP header - 20 IP header), in bytes."""

# Linux socket options from <linux/in.h> and <linux/in6.h>; Python 3.11 does not export
# them. With them set, ICMP errors are reported to the socket (and queued on its error
# queue, read with MSG_ERRQUEUE).
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE: int | None = getattr(_stdlib_socket, "MSG_ERRQUEUE", None)
_ERRQUEUE_DRAIN_LIMIT = 256  # entries read per drain; bounds the time spent in one call

# Errors a UDP socket reports for something a peer or the path did, not for our misuse.
# They are counted and skipped; any other OSError is a bug and propagates.
_ICMP_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,  # ICMP port unreachable (Linux reports it with IP_RECVERR)
        errno.ECONNRESET,  # the same on Windows (WSAECONNRESET)
        errno.EHOSTUNREACH,  # ICMP host unreachable
        errno.ENETUNREACH,  # ICMP network unreachable
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EMSGSIZE,  # ICMP fragmentation needed: the path MTU is smaller
        errno.EPROTO,
    }
)
# Errors only ``sendto`` reports about a destination it cannot reach from here.
_SEND_ERRNOS = _ICMP_ERRNOS | {
    errno.EADDRNOTAVAIL,  # destination not reachable from the bound address
    errno.EAFNOSUPPORT,  # IPv6 destination from an IPv4 socket, or the reverse
    errno.EINVAL,  # e.g. destination port 0
    errno.EACCES,  # broadcast address without SO_BROADCAST, or a firewall rule
    errno.EPERM,  # netfilter rejected the datagram
    errno.ENOBUFS,  # the interface queue is full: a UDP drop, reported
}


@dataclass(frozen=True, slots=True)
class UdpConfig:
    """Settings of one UDP endpoint."""

    max_datagram: int = 8192
    """Largest payload in bytes we send or accept (1..65507). 8 KiB leaves room for a
    Kademlia reply with k = 20 contacts; datagrams above the path MTU (1500 bytes on
    Ethernet) are sent as IP fragments, which multiplies loss on a WAN, so the wire layer
    should keep common messages small."""
    receive_buffer_bytes: int | None = None
    """``SO_RCVBUF`` request in bytes (the kernel may double or cap it); ``None`` keeps the
    system default. Raise it if bursts of replies overflow the socket buffer."""
    report_icmp_errors: bool = False
    """Linux only: set ``IP_RECVERR`` so ICMP unreachable errors are reported and counted
    (``receive_errors``, ``send_failures``) instead of being ignored by the kernel. Useful
    to see how often we send to dead peers; off by default (the kernel default)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram must be 1..{MAX_UDP_PAYLOAD}, not {self.max_datagram}")
        if self.receive_buffer_bytes is not None and self.receive_buffer_bytes <= 0:
            raise ValueError("receive_buffer_bytes must be positive or None")


class UdpTransport:
    """A bound UDP socket behind the ``Transport`` interface. Build with ``bind()``."""

    def __init__(
        self, sock: trio.socket.SocketType, raw: _stdlib_socket.socket, config: UdpConfig
    ) -> None:
        """Wrap a bound datagram socket (``raw`` is its stdlib object); use ``bind()``."""
        self._sock = sock
        self._raw = raw
        self._config = config
        self._local: Address = tuple(sock.getsockname()[:2])
        self._closed = False
        self._sent = 0
        self._bytes_sent = 0
        self._send_failures = 0
        self._received = 0
        self._bytes_received = 0
        self._receive_errors = 0
        self._truncated = 0

    @classmethod
    async def bind(
        cls, host: str = "127.0.0.1", port: int = 0, *, config: UdpConfig | None = None
    ) -> UdpTransport:
        """Open a UDP socket bound to ``(host, port)``; port 0 picks a free port.

        The address family follows ``host``: an IPv6 literal (``"::1"``, ``"::"``) gives
        an IPv6 socket, anything else is resolved and the first result is used.
        """
        config = config or UdpConfig()
        infos = await trio.socket.getaddrinfo(
            host, port, type=_stdlib_socket.SOCK_DGRAM, flags=_stdlib_socket.AI_PASSIVE
        )
        if not infos:  # pragma: no cover - getaddrinfo raises rather than return nothing
            raise OSError(f"cannot resolve {host!r}")
        family, type_, proto, _, sockaddr = infos[0]
        raw = _stdlib_socket.socket(family, type_, proto)
        try:
            raw.setblocking(False)
            if config.receive_buffer_bytes is not None:
                raw.setsockopt(
                    _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_RCVBUF, config.receive_buffer_bytes
                )
            if config.report_icmp_errors and sys.platform == "linux":
                raw.setsockopt(_stdlib_socket.IPPROTO_IP, _IP_RECVERR, 1)
                if family == _stdlib_socket.AF_INET6:
                    raw.setsockopt(_stdlib_socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            sock = trio.socket.from_stdlib_socket(raw)
            await sock.bind(sockaddr)
        except BaseException:
            raw.close()
            raise
        return cls(sock, raw, config)

    # -- the Transport interface -------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def max_datagram(self) -> int:
        return self._config.max_datagram

    @property
    def config(self) -> UdpConfig:
        return self._config

    async def send(self, dst: Address, payload: bytes) -> None:
        """Send one datagram; unreachable peers are counted in ``send_failures``."""
        if self._closed:
            raise trio.ClosedResourceError("transport is closed")
        data = check_payload(payload, self._config.max_datagram)
        check_address(dst)
        try:
            await self._sock.sendto(data, dst)
        except OSError as exc:  # includes socket.gaierror for an unresolvable name
            if isinstance(exc, _stdlib_socket.gaierror):
                self._send_failures += 1
                return
            if exc.errno in _SEND_ERRNOS:
                self._send_failures += 1
                # The failure may be an earlier ICMP error reported late; clear its queue.
                self._receive_errors += self._drain_error_queue()
                return
            raise
        self._sent += 1
        self._bytes_sent += len(data)

    async def receive(self) -> Datagram:
        """Return the next datagram of at most ``max_datagram`` bytes.

        Skips (and counts) ICMP-reported errors and oversized datagrams.
        """
        limit = self._config.max_datagram
        while True:
            if self._closed:
                raise trio.ClosedResourceError("transport is closed")
            try:
                data, addr = await self._sock.recvfrom(limit + 1)
            except OSError as exc:
                if exc.errno in _ICMP_ERRNOS:
                    self._receive_errors += max(1, self._drain_error_queue())
                    continue
                raise
            if len(data) > limit:
                self._truncated += 1
                continue
            self._received += 1
            self._bytes_received += len(data)
            return Datagram(data, (addr[0], addr[1]), trio.current_time())

    def _drain_error_queue(self) -> int:
        """Read and discard queued ICMP errors (Linux); return how many were queued."""
        if _MSG_ERRQUEUE is None or self._closed:
            return 0
        drained = 0
        while drained < _ERRQUEUE_DRAIN_LIMIT:
            try:
                self._raw.recvmsg(1, 512, _MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                break
            drained += 1
        return drained

    async def aclose(self) -> None:
        """Close the socket; a task blocked in ``receive`` gets ``ClosedResourceError``."""
        self._closed = True
        self._sock.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> TransportStatistics:
        return TransportStatistics(
            datagrams_sent=self._sent,
            bytes_sent=self._bytes_sent,
            send_failures=self._send_failures,
            datagrams_received=self._received,
            bytes_received=self._bytes_received,
            receive_errors=self._receive_errors,
            truncated=self._truncated,
        )

    async def __aenter__(self) -> UdpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<UdpTransport {self._local[0]}:{self._local[1]} {state}>"
