"""UdpTransport on real loopback sockets. Every test is guarded by ``fail_after``."""

from __future__ import annotations

import errno
import socket
import sys
import time

import pytest
import trio

from dvms.transport import TransportError, UdpConfig, UdpTransport

TIMEOUT = 5.0


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _closed_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was just free: bind, note it, close."""
    t = await UdpTransport.bind(host, 0)
    port = t.local_address[1]
    await t.aclose()
    return port


async def test_two_transports_exchange_datagrams() -> None:
    with trio.fail_after(TIMEOUT):
        async with await UdpTransport.bind() as a, await UdpTransport.bind() as b:
            before = trio.current_time()
            await a.send(b.local_address, b"ping")
            got = await b.receive()
            after = trio.current_time()
            assert got.payload == b"ping"
            assert got.src == a.local_address
            assert before <= got.received_at <= after

            await b.send(got.src, b"pong")
            reply = await a.receive()
            assert (reply.payload, reply.src) == (b"pong", b.local_address)

            sa, sb = a.statistics(), b.statistics()
            assert (sa.datagrams_sent, sa.bytes_sent, sa.datagrams_received) == (1, 4, 1)
            assert (sb.datagrams_sent, sb.datagrams_received, sb.bytes_received) == (1, 1, 4)


async def test_ephemeral_ports_are_real_and_distinct() -> None:
    with trio.fail_after(TIMEOUT):
        async with await UdpTransport.bind() as a, await UdpTransport.bind() as b:
            assert a.local_address[0] == "127.0.0.1"
            assert a.local_address[1] != 0
            assert a.local_address[1] != b.local_address[1]
            # The reported port is the one the kernel bound: binding it again fails.
            with pytest.raises(OSError) as info:
                await UdpTransport.bind("127.0.0.1", a.local_address[1])
            assert info.value.errno == errno.EADDRINUSE


async def test_many_datagrams_keep_their_boundaries() -> None:
    with trio.fail_after(TIMEOUT):
        async with await UdpTransport.bind() as a, await UdpTransport.bind() as b:
            payloads = [bytes([i]) * (i * 37 % 500 + 1) for i in range(50)]
            for p in payloads:
                await a.send(b.local_address, p)
            received = [(await b.receive()).payload for _ in payloads]
            assert received == payloads  # loopback keeps order and does not drop 50 small ones


async def test_oversize_send_is_refused_and_limit_is_inclusive() -> None:
    with trio.fail_after(TIMEOUT):
        config = UdpConfig(max_datagram=100)
        async with await UdpTransport.bind(config=config) as a, await UdpTransport.bind() as b:
            assert a.max_datagram == 100
            with pytest.raises(TransportError, match="101 bytes"):
                await a.send(b.local_address, b"x" * 101)
            await a.send(b.local_address, b"y" * 100)
            assert (await b.receive()).payload == b"y" * 100
            assert a.statistics().datagrams_sent == 1


@pytest.mark.parametrize(
    ("dst", "payload"),
    [
        (("127.0.0.1", 9), "text"),  # str, not bytes
        (("127.0.0.1", 70000), b"x"),  # port out of range
        (("127.0.0.1",), b"x"),  # not a pair
        (["127.0.0.1", 9], b"x"),  # a list, not a tuple
    ],
)
async def test_local_misuse_raises_transport_error(dst: object, payload: object) -> None:
    with trio.fail_after(TIMEOUT):
        async with await UdpTransport.bind() as a:
            with pytest.raises(TransportError):
                await a.send(dst, payload)  # type: ignore[arg-type]


async def test_oversized_incoming_datagram_is_counted_and_dropped() -> None:
    with trio.fail_after(TIMEOUT):
        small = UdpConfig(max_datagram=100)
        async with await UdpTransport.bind(config=small) as rx, await UdpTransport.bind() as tx:
            await tx.send(rx.local_address, b"a" * 101)
            await tx.send(rx.local_address, b"b" * 4000)
            await tx.send(rx.local_address, b"c" * 100)
            got = await rx.receive()
            assert got.payload == b"c" * 100
            assert rx.statistics().truncated == 2
            assert rx.statistics().datagrams_received == 1


async def test_send_to_closed_port_does_not_raise_by_default() -> None:
    with trio.fail_after(TIMEOUT):
        dead = await _closed_port()
        async with await UdpTransport.bind() as a, await UdpTransport.bind() as b:
            for _ in range(3):
                await a.send(("127.0.0.1", dead), b"anyone?")
            await b.send(a.local_address, b"still here")
            assert (await a.receive()).payload == b"still here"


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux-only")
async def test_icmp_port_unreachable_does_not_break_receive_loop() -> None:
    """With IP_RECVERR the kernel reports ICMP port unreachable to the socket.

    The error surfaces from the next recvfrom/sendto as ECONNREFUSED and stays queued on
    the error queue; the transport must count it, keep receiving, and not spin.
    """
    with trio.fail_after(TIMEOUT):
        dead = await _closed_port()
        config = UdpConfig(report_icmp_errors=True)
        async with await UdpTransport.bind(config=config) as a, await UdpTransport.bind() as b:
            for _ in range(3):
                await a.send(("127.0.0.1", dead), b"anyone?")
                await trio.sleep(0.01)  # let the ICMP error come back between sends
            # Nothing to read: receive must block quietly, not busy-loop on EPOLLERR.
            cpu_before = time.process_time()
            with trio.move_on_after(0.3) as idle:
                await a.receive()
            assert idle.cancelled_caught
            assert time.process_time() - cpu_before < 0.15
            stats = a.statistics()
            assert stats.receive_errors + stats.send_failures >= 3
            assert stats.receive_errors >= 1

            await b.send(a.local_address, b"after the errors")
            got = await a.receive()
            assert (got.payload, got.src) == (b"after the errors", b.local_address)


async def test_aclose_wakes_a_blocked_receive_and_later_calls_fail() -> None:
    with trio.fail_after(TIMEOUT):
        a = await UdpTransport.bind()
        peer = a.local_address
        errors: list[BaseException] = []

        async def reader() -> None:
            try:
                await a.receive()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await a.aclose()
        assert len(errors) == 1
        await a.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await a.send(peer, b"x")
        with pytest.raises(trio.ClosedResourceError):
            await a.receive()


async def test_receive_buffer_size_is_requested() -> None:
    with trio.fail_after(TIMEOUT):
        config = UdpConfig(receive_buffer_bytes=1 << 20)
        async with await UdpTransport.bind(config=config) as a:
            # Linux doubles the request (bookkeeping) and caps it at rmem_max; it must at
            # least differ from a default socket's size unless the cap is below default.
            got = a._raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        async with await UdpTransport.bind() as d:
            default = d._raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got != default or default >= 1 << 20


@pytest.mark.parametrize("bad", [0, 65508, -1])
def test_udp_config_rejects_impossible_sizes(bad: int) -> None:
    with pytest.raises(ValueError):
        UdpConfig(max_datagram=bad)


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_loopback_exchange() -> None:
    with trio.fail_after(TIMEOUT):
        async with await UdpTransport.bind("::1") as a, await UdpTransport.bind("::1") as b:
            assert a.local_address[0] == "::1"
            assert a.local_address[1] != 0
            await a.send(b.local_address, b"over v6")
            got = await b.receive()
            assert got.payload == b"over v6"
            assert got.src == a.local_address  # a 2-tuple, flowinfo/scope dropped
            # An IPv4 destination cannot be reached from a v6-only-bound ::1 socket: the
            # failure is counted, not raised.
            await a.send(("127.0.0.1", 9), b"x")
            assert a.statistics().send_failures == 1
