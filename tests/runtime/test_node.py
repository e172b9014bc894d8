"""The node runner in one process: two full nodes (overlay + partitions) over real UDP on
loopback, each with its own libvirt test:/// host. A launch places VMs through a
partition; an emulated migration moves a VM between the two processes' worth of hosts;
the control-plane queries see both hosts; the partition log and its merge."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from dvms.hypervisor.base import open_hypervisor
from dvms.overlay.messages import Contact
from dvms.partition.core import MigrateVmTo, PartitionChanged, PartitionReleased, PlanApplied
from dvms.partition.messages import GROWING, LaunchVm, PartitionView, WireConstraint
from dvms.runtime.config import NodeConfig
from dvms.runtime.daemon import build_runner, load_identity, write_test_host
from dvms.runtime.messages import HostQuery, HostReply, Killed, KillVms, PartitionRow
from dvms.runtime.services.partition_log import PartitionLog, merge_rows
from dvms.transport.udp import UdpTransport
from dvms.wire.keys import generate_key

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


async def start_node(nursery, tmp_path, name: str, key: bytes, seeds):
    cfg = replace(
        NodeConfig.local(), listen="127.0.0.1:0", state_dir=str(tmp_path / name), hostname=name
    )
    (tmp_path / name).mkdir()
    write_test_host(cfg)
    hv = open_hypervisor("libvirt", cfg.hypervisor_uri, host=name)
    transport = await UdpTransport.bind("127.0.0.1", 0)
    runner = build_runner(cfg, load_identity(tmp_path / name), key, transport, hv)
    assert runner.config is cfg.runner and runner.monitor.config is cfg.monitor
    await nursery.start(runner.run, seeds)
    return runner, transport, hv


async def test_two_nodes_launch_migrate_query_kill(tmp_path):
    key = generate_key()
    async with trio.open_nursery() as nursery:
        a, ta, ha = await start_node(nursery, tmp_path, "a", key, [])
        b, tb, hb = await start_node(nursery, tmp_path, "b", key, [ta.local_address])
        with trio.fail_after(10):
            while b.core.contact.node_id not in a.core.table.index:
                await trio.sleep(0.05)

        vms = tuple(LaunchVm(f"w{i}", "red", 1, 256) for i in (1, 2))
        spread = WireConstraint("spread", ("red/w1", "red/w2"))
        done = await a.launch(vms, (spread,))
        assert done.ok, done.reason
        hosts = {p.vm: p.host for p in done.placed}
        assert sorted(hosts.values()) == ["a", "b"]  # spread: one each
        # the monitor was refreshed before the core heard of the creations
        assert {v.name for v in a.monitor.state().vms} == {n for n, h in hosts.items() if h == "a"}

        # emulated migration: the VM on b moves to a (a re-creates it, b destroys its copy)
        on_b = next(n for n, h in hosts.items() if h == "b")
        await b._drive(MigrateVmTo(7, on_b, "red", "a", ta.local_address))
        assert {v.name for v in await ha.list_vms()} == {"w1", "w2"}
        assert await hb.list_vms() == []
        # the spec moved with the VM, carrying the vjob's constraint that names it
        launched = next(v for v in vms if v.name == on_b)
        assert a.monitor.specs[f"red:{on_b}"] == replace(launched, constraints=(spread,))

        replies, silent = await b.gather(HostQuery("red"))
        assert silent == []
        by_host = {r.name: {v.name for v in r.vms} for r in replies if isinstance(r, HostReply)}
        assert by_host == {"a": {"w1", "w2"}, "b": set()}
        assert b.names[a.core.node_id] == "a"

        replies, _ = await b.gather(KillVms("red", ("w1", "nope")))
        assert sorted(k for r in replies if isinstance(r, Killed) for k in r.killed) == ["w1"]
        assert [v.name for v in await ha.list_vms()] == ["w2"]
        nursery.cancel_scope.cancel()
    for t, h in ((ta, ha), (tb, hb)):
        await t.aclose()
        await h.aclose()


def _view(pid: int, members: tuple[Contact, ...]) -> PartitionView:
    return PartitionView(pid, 1, members[0], members[0], members, GROWING, ())


def test_partition_log_closes_left_partitions_and_merge_prefers_the_plan():
    me, other = Contact(1, "127.0.0.1", 1), Contact(2, "127.0.0.1", 2)
    log = PartitionLog()
    log.on_event(PartitionChanged(_view(10, (me,)), "leader"), 100.0)
    log.on_event(PartitionChanged(_view(11, (other, me)), "member"), 101.0)  # moved on
    log.on_event(PlanApplied(11, 2, 3, 1, 0, 0.5), 102.0)
    log.on_event(PartitionReleased(11, "solved"), 103.0)
    rows = {r.pid: r for r in log.rows(lambda c: f"n{c.node_id}")}
    assert (rows[10].state, rows[10].outcome, rows[10].role) == ("ended", "left", "leader")
    assert (rows[11].members, rows[11].actions, rows[11].outcome) == (("n2", "n1"), 3, "solved")

    def row(pid, role, actions, ended):
        return PartitionRow(pid, role, "x", ("x",), "s", (), 1.0, ended, "o", actions)

    merged = merge_rows(
        [row(5, "member", 0, 2.0), row(5, "leader", 4, 2.0), row(6, "member", 0, None)]
    )
    assert [(r.pid, r.actions) for r in merged] == [(6, 0), (5, 4)]  # in flight first


def test_each_partition_end_is_reported_by_its_leader_or_a_leaderless_ends_deputy():
    a, b, c, d = (Contact(i, "127.0.0.1", i) for i in (1, 2, 3, 4))

    def ended(pid: int, role: str, reason: str, *, leader: Contact = a) -> PartitionLog:
        # views list the newest member first: the initiator b joined first, then c, d
        # and a; the leader (a, or b itself) heads the list
        others = tuple(m for m in (a, d, c, b) if m != leader)
        view = PartitionView(pid, 3, b, leader, (leader, *others), GROWING, ())
        log = PartitionLog()
        log.on_event(PartitionChanged(view, role), 100.0)
        log.on_event(PartitionReleased(pid, reason), 101.0)
        return log

    assert ended(1, "leader", "solved").reported_here(1, a.node_id) is not None
    # the leader reports the ends it saw, members that heard them do not
    assert ended(2, "member", "solved").reported_here(2, b.node_id) is None
    assert ended(2, "member", "two laps without a solution").reported_here(2, b.node_id) is None
    # the leader went silent: the oldest member but the leader (b) reports it, once
    for me, reports in ((b, True), (c, False), (d, False)):
        got = ended(3, "member", "lease expired").reported_here(3, me.node_id)
        assert (got is not None) == reports, me
    # the leader was the initiator and crashed: its oldest other member (c) reports it
    crashed = ended(4, "member", "initiator crashed", leader=b)
    assert crashed.reported_here(4, c.node_id) is not None
    assert crashed.reported_here(4, a.node_id) is None
    # the initiator (not the leader) crashed: the leader reports, not its members
    assert ended(5, "member", "initiator crashed").reported_here(5, b.node_id) is None
    # in flight or unknown: nothing to report
    log = PartitionLog()
    log.on_event(PartitionChanged(_view(6, (a, b)), "leader"), 100.0)
    assert log.reported_here(6, a.node_id) is None and log.reported_here(7, a.node_id) is None
