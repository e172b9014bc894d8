"""SimNetwork under a MockClock: timing, ordering, loss, partitions, crashes.

Async tests use pytest-trio's ``autojump_clock`` fixture: virtual time jumps to the next
deadline whenever every task is blocked, so delays of seconds cost nothing.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from dvms.transport import (
    ConstantLatency,
    Datagram,
    NetworkConditions,
    NetworkModel,
    SimNetConfig,
    SimNetwork,
    SimTransport,
    SitesLatency,
    Transport,
    TransportError,
    open_sim_network,
)

# Site 0 <-> site 1: 100 ms RTT; site 0 <-> site 2: 400 ms; site 1 <-> site 2: 300 ms.
WAN = [[0.0, 0.100, 0.400], [0.100, 0.0, 0.300], [0.400, 0.300, 0.0]]
SITE_OF = [0, 1, 2, 0]
LAN = 0.002
VIRTUAL_TIMEOUT = 3600.0  # seconds of virtual time; costs nothing under autojump


def sites_model(**conditions: float) -> NetworkModel:
    return NetworkModel(
        SitesLatency(SITE_OF, WAN, lan_rtt_s=LAN),
        NetworkConditions(**conditions),
        random.Random(42),
    )


@asynccontextmanager
async def sim(model: NetworkModel, config: SimNetConfig | None = None) -> AsyncIterator[SimNetwork]:
    """``open_sim_network`` with a virtual-time guard: a lost wake-up fails, not hangs."""
    with trio.fail_after(VIRTUAL_TIMEOUT):
        async with open_sim_network(model, config=config) as net:
            yield net


def addr(i: int) -> tuple[str, int]:
    return (f"10.0.0.{i}", 7000)


async def drain(t: SimTransport) -> list[Datagram]:
    """Everything already delivered to ``t``, without advancing virtual time."""
    await trio.testing.wait_all_tasks_blocked()  # let the delivery task finish its batch
    got: list[Datagram] = []
    while True:
        try:
            got.append(t.receive_nowait())
        except trio.WouldBlock:
            return got


async def test_delivery_times_equal_the_models_one_way_delays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim(sites_model()) as net:
        nodes = [net.new_transport(i, addr(i)) for i in range(4)]
        await trio.sleep(5.0)  # start at an arbitrary virtual time
        t0 = trio.current_time()
        for i in (1, 2, 3):
            await nodes[0].send(addr(i), f"to {i}".encode())
        for i, rtt in ((3, LAN), (1, 0.100), (2, 0.400)):  # in order of arrival
            got = await nodes[i].receive()
            assert got.payload == f"to {i}".encode()
            assert got.src == addr(0)
            assert got.received_at == t0 + rtt / 2
            # The receiver woke at that virtual time (the clock may be off by one ulp).
            assert trio.current_time() == pytest.approx(t0 + rtt / 2, abs=1e-9)


async def test_later_send_with_shorter_delay_arrives_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim(sites_model()) as net:
        far, near, rx = (net.new_transport(p, addr(p)) for p in (2, 3, 0))
        t0 = trio.current_time()
        await far.send(addr(0), b"far")  # due at t0 + 0.200
        await trio.sleep(0.010)
        await near.send(addr(0), b"near")  # due at t0 + 0.011: must wake the network
        first = await rx.receive()
        assert trio.current_time() == pytest.approx(t0 + 0.011, abs=1e-9)
        second = await rx.receive()
        assert (first.payload, second.payload) == (b"near", b"far")
        assert first.received_at == pytest.approx(t0 + 0.011, abs=1e-12)
        assert second.received_at == t0 + 0.200


async def _tie_order(seed: int) -> list[bytes]:
    """Five senders, sending concurrently, all due at the same virtual instant."""
    model = NetworkModel(ConstantLatency(0.05), rng=random.Random(seed))
    async with sim(model) as net:
        rx = net.new_transport(0, addr(0))
        senders = [net.new_transport(i, addr(i)) for i in range(1, 6)]

        async def burst(t: Transport, name: int) -> None:
            for k in range(3):
                await t.send(addr(0), f"{name}.{k}".encode())

        async with trio.open_nursery() as nursery:
            for i, t in reversed(list(enumerate(senders, start=1))):
                nursery.start_soon(burst, t, i)
        got = [await rx.receive() for _ in range(15)]
        assert len({d.received_at for d in got}) == 1  # a genuine tie
        return [d.payload for d in got]


async def test_ties_are_broken_by_sender_then_sequence_not_by_scheduling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expected = [f"{i}.{k}".encode() for i in range(1, 6) for k in range(3)]
    # Trio shuffles its run queue, so the senders interleave differently between
    # runs; the order at the receiver must not change.
    for seed in range(8):
        assert await _tie_order(seed) == expected


def _scenario() -> list[tuple[bytes, tuple[str, int], float]]:
    """A lossy, jittery, duplicating run driven by one task; returns what arrived."""

    async def main() -> list[tuple[bytes, tuple[str, int], float]]:
        model = NetworkModel(
            SitesLatency(SITE_OF, WAN, lan_rtt_s=LAN),
            NetworkConditions(loss=0.2, duplicate=0.2, jitter=0.3),
            random.Random(7),
        )
        async with sim(model) as net:
            nodes = [net.new_transport(i, addr(i)) for i in range(4)]
            picks = random.Random(1)
            for k in range(200):
                src, dst = picks.randrange(4), picks.randrange(4)
                await nodes[src].send(addr(dst), k.to_bytes(2, "big"))
                await trio.sleep(picks.random() * 0.01)
            await trio.sleep(1.0)
            return [(d.payload, d.src, d.received_at) for n in nodes for d in await drain(n)]

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_same_deliveries_across_runs() -> None:
    first = _scenario()
    assert 100 < len(first) < 300  # loss and duplication both happened
    assert first == _scenario()


async def test_loss_drops_what_the_model_says(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model(loss=0.3)) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        for k in range(500):
            await a.send(addr(1), k.to_bytes(2, "big"))
        await trio.sleep(1.0)
        got = await drain(b)
        route = net.statistics().route
        assert len(got) == route.delivered == 500 - route.lost
        assert 0.2 < route.lost / 500 < 0.4
        # What survived still arrives in send order (no jitter, equal delays).
        numbers = [int.from_bytes(d.payload, "big") for d in got]
        assert numbers == sorted(numbers)


async def test_duplicates_arrive_twice(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model(duplicate=1.0)) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        await a.send(addr(1), b"twice")
        await trio.sleep(1.0)
        assert [d.payload for d in await drain(b)] == [b"twice", b"twice"]
        assert net.statistics().delivered == 2


async def test_partition_drops_until_heal(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model()) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        net.model.cut([0], [1])
        await a.send(addr(1), b"lost")
        await b.send(addr(0), b"lost too")
        await trio.sleep(1.0)
        assert await drain(a) == [] and await drain(b) == []
        net.model.heal()
        await a.send(addr(1), b"through")
        assert (await b.receive()).payload == b"through"
        assert net.statistics().route.cut == 2


async def test_destination_going_down_in_flight_loses_the_datagram(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim(sites_model()) as net:
        a, c = net.new_transport(0, addr(0)), net.new_transport(2, addr(2))
        await a.send(addr(2), b"in flight")  # due after 0.2 s
        await trio.sleep(0.1)
        net.model.set_down(2)
        await trio.sleep(0.2)
        net.model.set_up(2)
        assert await drain(c) == []
        assert net.statistics().dropped_in_flight == 1


async def test_unknown_address_is_dropped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim(sites_model()) as net:
        a = net.new_transport(0, addr(0))
        await a.send(("10.9.9.9", 1), b"nobody")
        assert a.statistics().send_failures == 1
        assert a.statistics().datagrams_sent == 0
        assert net.statistics().undeliverable == 1


async def test_closed_destination_frees_its_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with sim(sites_model()) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        with pytest.raises(TransportError, match="in use"):
            net.new_transport(3, addr(1))
        await a.send(addr(1), b"to the old b")
        await b.aclose()
        await trio.sleep(1.0)
        assert net.statistics().dropped_in_flight == 1
        b2 = net.new_transport(1, addr(1))  # a restarted node takes the address back
        await a.send(addr(1), b"to the new b")
        assert (await b2.receive()).payload == b"to the new b"


async def test_full_inbox_drops_new_arrivals(autojump_clock: trio.testing.MockClock) -> None:
    config = SimNetConfig(inbox_limit=2)
    async with sim(sites_model(), config=config) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        for k in range(5):
            await a.send(addr(1), bytes([k]))
        await trio.sleep(1.0)
        assert [d.payload for d in await drain(b)] == [b"\x00", b"\x01"]
        assert net.statistics().inbox_overflow == 3


async def test_oversize_send_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model(), config=SimNetConfig(max_datagram=10)) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        with pytest.raises(TransportError):
            await a.send(addr(1), b"x" * 11)
        await a.send(addr(1), b"x" * 10)
        assert (await b.receive()).payload == b"x" * 10
        assert a.max_datagram == 10


async def test_aclose_wakes_a_blocked_receive(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model()) as net:
        a = net.new_transport(0, addr(0))
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await a.receive()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await a.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await a.send(addr(0), b"x")


async def test_cancelled_send_sends_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with sim(sites_model()) as net:
        a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send(addr(1), b"never")
        await trio.sleep(1.0)
        assert await drain(b) == []
        assert a.statistics().datagrams_sent == 0


async def test_network_block_errors_are_not_wrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(KeyError):
        async with open_sim_network(sites_model()):
            raise KeyError("from the body")


async def test_second_run_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(sites_model())
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        with pytest.raises(RuntimeError, match="already running"):
            await net.run()
        nursery.cancel_scope.cancel()


async def test_sends_before_run_starts_are_delivered_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = SimNetwork(sites_model())
    a, b = net.new_transport(0, addr(0)), net.new_transport(1, addr(1))
    t0 = trio.current_time()
    await a.send(addr(1), b"early")
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        got = await b.receive()
        assert got.received_at == t0 + 0.050
        nursery.cancel_scope.cancel()
