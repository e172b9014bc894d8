"""The registry by name and the package's public surface."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

import dvms.transport as transport
from dvms.transport import (
    ConstantLatency,
    NetworkModel,
    SimTransport,
    Transport,
    UdpTransport,
    base,
    netmodel,
    open_sim_network,
    open_transport,
    register_transport,
    registered_transports,
    simnet,
    udp,
)


def test_udp_and_sim_are_registered() -> None:
    assert {"udp", "sim"} <= set(registered_transports())


async def test_open_udp_by_name_closes_on_exit() -> None:
    with trio.fail_after(5):
        async with open_transport("udp", host="127.0.0.1", port=0) as t:
            assert isinstance(t, UdpTransport)
            assert isinstance(t, Transport)
            assert t.local_address[1] != 0
        with pytest.raises(trio.ClosedResourceError):
            await t.send(("127.0.0.1", 9), b"x")


async def test_open_sim_by_name_releases_the_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = NetworkModel(ConstantLatency(0.01), rng=random.Random(0))
    async with open_sim_network(model) as net:
        async with open_transport("sim", network=net, position=0, address=("n0", 1)) as t:
            assert isinstance(t, SimTransport)
            assert isinstance(t, Transport)
            assert t.local_address == ("n0", 1)
        again = net.new_transport(0, ("n0", 1))  # freed by the context manager
        assert again.local_address == ("n0", 1)


async def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="registered: sim, udp"):
        async with open_transport("carrier-pigeon"):
            pass  # pragma: no cover


async def test_a_new_transport_can_be_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_FACTORIES", dict(base._FACTORIES))
    opened: list[UdpTransport] = []

    async def factory(*, tag: str) -> Transport:
        t = await UdpTransport.bind()
        opened.append(t)
        assert tag == "hello"
        return t

    register_transport("loopback", factory)
    register_transport("loopback", factory)  # the same factory again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_transport("loopback", UdpTransport.bind)
    async with open_transport("loopback", tag="hello") as t:
        assert t is opened[0]
    with pytest.raises(trio.ClosedResourceError):
        await opened[0].receive()
    assert "loopback" in registered_transports()


def test_package_exports_are_explicit_and_complete() -> None:
    exported = set(transport.__all__)
    assert len(exported) == len(transport.__all__)
    for name in exported:
        assert hasattr(transport, name), name
    # Every public name of a module is re-exported, except helpers for implementers.
    internal = {"check_address", "check_payload", "MAX_UDP_PAYLOAD"}
    for module in (base, netmodel, simnet, udp):
        assert set(module.__all__) - internal <= exported, module.__name__
