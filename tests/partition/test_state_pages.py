"""A member whose host state passes ``[partition] state_bytes`` reports it in pages:
its first page answers ``SetPartition`` (``MemberState.more`` set), the leader asks the
rest with ``StatePage``, and it plans with every VM of the host."""

from __future__ import annotations

from dataclasses import replace

from dvms.partition.config import PartitionConfig
from dvms.partition.messages import HostState, LaunchVm, MemberState, StatePage, VmState
from dvms.testing.cluster import FakeCluster
from dvms.wire.schema import encoded_size

LIMIT = 1024
VMS = 100  # ~25 bytes each: 3 pages of LIMIT


def test_a_big_host_reports_in_pages_and_its_leader_sees_every_vm():
    config = replace(PartitionConfig(), state_bytes=LIMIT)
    c = FakeCluster(3, seed=5, config=config, cpus=256, memory_mib=VMS * 512 + 1024)
    c.hosts[0].memory_mib = 512
    c.add_vms(0, [0.0])  # the entry node's host is full
    c.add_vms(1, [0.0] * VMS)  # 1 GiB left
    c.hosts[2].memory_mib += 3072
    c.add_vms(2, [0.0] * VMS)  # 4 GiB left: the only host a 2 GiB VM fits
    vm = LaunchVm("big", "", 1, 2048)
    eid = c.launch(0, [vm])
    c.run(10.0)
    done = c.done.get((0, eid))
    assert done is not None and done.ok, done and done.reason
    assert [p.host for p in done.placed] == ["h2"]
    for pos in (1, 2):
        pages = [m for _, src, _, m in c.messages if src == pos and isinstance(m, MemberState)]
        pages = [m for m in pages if m.host is not None]
        assert all(encoded_size(m) <= LIMIT + 64 for m in pages)  # + pid, version, more
        if not pages:
            continue  # not recruited
        first = next(i for i, m in enumerate(pages) if m.more)
        got = [v.name for m in pages[first : first + 3] for v in m.host.vms]
        assert len(pages[first : first + 3]) == 3 and pages[first + 2].more == 0
        assert sorted(got) == sorted(v.name for v in c.hosts[pos].vms.values())
    asks = [m for _, _, _, m in c.messages if isinstance(m, StatePage)]
    assert asks and all(a.offset > 0 for a in asks)
    assert c.violations == [] and c.vm_problems() == []


def test_a_page_is_cut_from_the_state_reported_and_refused_outside_its_partition():
    host = HostState("h1", 8, 65536, tuple(VmState(f"vm{i}", "", 1, 512, 0.0) for i in range(VMS)))
    config = replace(PartitionConfig(), state_bytes=LIMIT)
    c = FakeCluster(2, seed=6, config=config, connect=False, monitor=False)
    member = c.core(1)
    member.local_state = lambda: host
    first = member._page(7, 1, host, 0)
    assert first.more and encoded_size(first.host) <= LIMIT
    second = member._page(7, 1, host, first.more)
    third = member._page(7, 1, host, second.more)
    assert third.more == 0
    names = [v.name for m in (first, second, third) for v in m.host.vms]
    assert names == [v.name for v in host.vms]
    out: list = []
    member._on_state_page(("n0", 1), 0, 1, StatePage(7, 1, first.more), 0.0, out)
    assert out[0].msg.host is None  # in no partition: refused
