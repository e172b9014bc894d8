"""The runner as a shell, on a simulated network under the autojump clock (no libvirt):
requests are answered by whichever service registered their type; a peer's host name is
learnt as soon as it enters the routing table; ``stop`` releases at once when no plan is
being applied, and its peers take its signed leave within a round trip; an effect type
nobody carries out is our bug and says so."""

from __future__ import annotations

import random

import pytest
import trio

from dvms.hypervisor.simulated import SimCluster, SimHostConfig, SimHypervisor
from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact, register_overlay_messages
from dvms.overlay.records import Identity, ValidatorRegistry
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import register_partition_messages
from dvms.runtime.capabilities import Handlers
from dvms.runtime.messages import HostQuery, HostReply, VjobsQuery, register_node_messages
from dvms.runtime.node import NodeRunner
from dvms.runtime.services.monitor import HostMonitor
from dvms.runtime.services.state import state_validators
from dvms.stack.core import NodeCore, build_cores
from dvms.transport import ConstantLatency, NetworkModel
from dvms.transport.simnet import open_sim_network
from dvms.vivaldi import VivaldiConfig
from dvms.wire.envelope import MessageRegistry, WireCodec


def _runner(i: int, net, rng: random.Random) -> NodeRunner:
    name = f"h{i}"
    cluster = SimCluster()
    cluster.add_host(name, SimHostConfig(cpus=4, memory_mib=8192))
    transport = net.new_transport(i, (f"10.0.0.{i + 1}", 7400))
    ident = Identity.from_rng(rng)
    contact = Contact(ident.node_id, *transport.local_address)
    monitor = HostMonitor(SimHypervisor(cluster, name), name, "test:///sim")
    overlay, partition = build_cores(
        contact,
        KademliaConfig.local(),
        random.Random(rng.getrandbits(64)),
        vivaldi=VivaldiConfig(),
        validators=state_validators(ValidatorRegistry()),
        partition=PartitionConfig(),
        local_state=monitor.state,
        now=trio.current_time(),
    )
    registry = register_node_messages(
        register_partition_messages(register_overlay_messages(MessageRegistry()))
    )
    return NodeRunner(
        NodeCore(overlay, partition, identity=ident),  # as the daemon: the id is the key's
        transport,
        WireCodec(bytes(32), registry),
        monitor,
        rng=random.Random(rng.getrandbits(64)),
        identity=ident,
    )


async def test_handlers_answer_registered_types_and_refuse_others():
    handlers = Handlers()

    async def rows(msg: VjobsQuery) -> str:
        return "rows"

    handlers.register(VjobsQuery, rows)
    assert VjobsQuery in handlers and HostQuery not in handlers
    assert await handlers.answer(VjobsQuery()) == "rows"
    with pytest.raises(TypeError, match="no answer"):
        await handlers.answer(HostQuery())


async def test_names_are_learnt_on_join_and_stop_releases_at_once(autojump_clock):
    rng = random.Random(5)
    async with (
        open_sim_network(NetworkModel(ConstantLatency(1e-4))) as net,
        trio.open_nursery() as nursery,
    ):
        a, b = _runner(0, net, rng), _runner(1, net, rng)
        await nursery.start(a.run, [])
        await nursery.start(b.run, [a.transport.local_address])
        with trio.fail_after(5):  # virtual seconds; no gather, no monitor period needed
            while a.names.get(b.core.node_id) != "h1" or b.names.get(a.core.node_id) != "h0":
                await trio.sleep(0.01)
        reply = await a.request(b.contact.addr, HostQuery(vms=False))
        assert isinstance(reply, HostReply) and reply.name == "h1"
        assert a.hosts() == {"h0": a.contact, "h1": b.contact}

        assert not a.partition.acting()
        with trio.fail_after(0.001):
            await a.stop()
        assert a.partition.stopping
        assert a.core.contact.node_id in b.core.left and a.core.node_id not in b.core.table

        with pytest.raises(TypeError, match="cannot carry out"):
            await a._apply([object()])
        nursery.cancel_scope.cancel()
