"""A cluster-wide query (``vm info --all``, ``host``, the check after ``clear
namespace``) gets every host's answer while a host's listing of its domains is slow: two
nodes in one process over loopback UDP, each with its own libvirt test:/// host.

A host of thousands of VMs on a loaded machine takes seconds to list its domains (the
libvirt test driver: 1-2 s for 2,000). A host that read every domain before answering
answered after the query had given up on it, and each retransmission queued one more
read, so the asker reported it as not answering. A host answers from the list it keeps;
and an answer to an earlier attempt of a request counts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from dvms.hypervisor.base import open_hypervisor
from dvms.partition.messages import LaunchVm
from dvms.runtime.config import NodeConfig
from dvms.runtime.daemon import build_runner, load_identity, write_test_host
from dvms.runtime.messages import HostQuery, HostReply
from dvms.runtime.services.hostpages import complete
from dvms.transport.udp import UdpTransport
from dvms.wire.keys import generate_key

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

#: VMs on the queried host: with replies of at most 1,024 bytes, several pages
VMS = 60
#: seconds one listing of the queried host's domains takes in these tests: longer than a
#: cluster-wide query waits for a host (0.5 + 1 + 2 s)
SLOW_LIST_S = 4.0


async def start_node(nursery, tmp_path, name: str, key: bytes, seeds):
    cfg = replace(
        NodeConfig.local(), listen="127.0.0.1:0", state_dir=str(tmp_path / name), hostname=name
    )
    cfg = replace(cfg, monitor=replace(cfg.monitor, reply_bytes=1024))
    (tmp_path / name).mkdir()
    write_test_host(cfg)
    hv = open_hypervisor("libvirt", cfg.hypervisor_uri, host=name)
    transport = await UdpTransport.bind("127.0.0.1", 0)
    runner = build_runner(cfg, load_identity(tmp_path / name), key, transport, hv)
    await nursery.start(runner.run, seeds)
    return runner, transport, hv


async def two_nodes(nursery, tmp_path):
    key = generate_key()
    a, ta, ha = await start_node(nursery, tmp_path, "a", key, [])
    b, tb, hb = await start_node(nursery, tmp_path, "b", key, [ta.local_address])
    with trio.fail_after(10):
        while b.core.contact.node_id not in a.core.table.index:
            await trio.sleep(0.05)
    return (a, ta, ha), (b, tb, hb)


async def test_a_host_whose_listing_is_slow_answers_every_page_of_a_cluster_query(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, ta, ha), (b, tb, hb) = await two_nodes(nursery, tmp_path)
        for i in range(VMS):
            ok, reason = await a.driver.create(LaunchVm(f"v{i}", "big", 1, 64))
            assert ok, reason
        listing = ha.list_vms
        reads = 0

        async def slow_list():  # a host of thousands of domains on a loaded machine
            nonlocal reads
            reads += 1
            await trio.sleep(SLOW_LIST_S)
            return await listing()

        ha.list_vms = slow_list
        with trio.fail_after(SLOW_LIST_S):  # the answers come without a read
            replies, silent = await b.gather(HostQuery(None))
            assert silent == []
            hosts = await complete(b, [r for r in replies if isinstance(r, HostReply)], None)
        by_host = {h.name: h for h in hosts}
        assert not by_host["a"].truncated
        assert sorted(v.name for v in by_host["a"].vms) == sorted(f"v{i}" for i in range(VMS))
        assert len(a.monitor.reply(None).vms) < VMS  # it did answer in several pages
        assert reads <= 1  # at most the periodic read started meanwhile
        nursery.cancel_scope.cancel()
    for t, h in ((ta, ha), (tb, hb)):
        await t.aclose()
        await h.aclose()


async def test_an_answer_to_an_earlier_attempt_of_a_request_counts(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, ta, ha), (b, tb, hb) = await two_nodes(nursery, tmp_path)
        answer = a.handlers.answer
        asked = 0

        async def late(msg):  # each answer takes longer than the first two timeouts
            nonlocal asked
            if msg == probe:  # not the node's own liveness queries
                asked += 1
                await trio.sleep(2.0)
            return await answer(msg)

        probe = HostQuery("probe", vms=False)
        a.handlers.answer = late
        # attempts sent at 0, 0.5 and 1.5 s, the last waits until 3.5 s: only the answer
        # to the first one (at 2 s) comes in time
        with trio.fail_after(3.5):
            reply = await b.request(ta.local_address, probe, timeout=0.5)
        assert isinstance(reply, HostReply) and reply.name == "a"
        assert asked == 3
        nursery.cancel_scope.cancel()
    for t, h in ((ta, ha), (tb, hb)):
        await t.aclose()
        await h.aclose()
