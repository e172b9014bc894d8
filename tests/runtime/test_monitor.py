"""HostMonitor: refreshes that overlap share a read, a caller always sees what was done
before it asked, host size is read rarely, and a synthetic load replaces the (absent)
measured demand of a test host's VM."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from dvms.hypervisor.base import DomainState, VmInfo
from dvms.partition.messages import LaunchVm
from dvms.runtime.messages import HostReply, encoded_size
from dvms.runtime.services.monitor import HostMonitor, MonitorConfig


@dataclass
class Stats:
    cpus: int = 8
    memory_total_mib: int = 16384


@dataclass
class FakeHv:
    """A host whose listing takes 1 s (virtual) and reflects the VMs at its start."""

    vms: list[VmInfo] = field(default_factory=list)
    lists: int = 0
    stats_calls: int = 0

    async def stats(self) -> Stats:
        self.stats_calls += 1
        return Stats()

    async def list_vms(self) -> list[VmInfo]:
        self.lists += 1
        snapshot = list(self.vms)
        await trio.sleep(1.0)
        return snapshot


def vm(name: str, vcpus: int = 4, namespace: str = "") -> VmInfo:
    return VmInfo(name, "h1", DomainState.RUNNING, vcpus, 1024, namespace)


async def test_overlapping_refreshes_share_reads_and_see_earlier_changes(autojump_clock):
    hv = FakeHv()
    mon = HostMonitor(hv, "h1", "test:///")  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mon.refresh)  # read 1 starts with no VM
        await trio.sleep(0.1)
        hv.vms.append(vm("a"))  # created during read 1: read 1 cannot show it
        for _ in range(5):
            nursery.start_soon(mon.refresh)
        await trio.sleep(0.1)
    assert hv.lists == 2  # six refreshes, two reads
    assert [v.name for v in mon.vms] == ["a"]
    assert hv.stats_calls == 1
    await mon.refresh()
    assert hv.stats_calls == 1  # host size is not read again before host_size_period_s
    await trio.sleep(MonitorConfig().host_size_period_s)
    await mon.refresh()
    assert hv.stats_calls == 2


async def test_a_spec_added_during_a_read_is_kept(autojump_clock):
    hv = FakeHv()
    mon = HostMonitor(hv, "h1", "test:///")  # type: ignore[arg-type]
    spec = LaunchVm("a", "", 4, 1024, coschedule=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mon.refresh)
        await trio.sleep(0.1)
        hv.vms.append(vm("a"))
        mon.specs["a"] = spec  # the runner records it once create returns
    assert mon.specs == {"a": spec}
    await mon.refresh()
    state = mon.state()
    assert state is not None and state.vms[0].coschedule == 0


async def test_synthetic_load_is_capped_at_vcpus_and_cleared_by_zero(autojump_clock):
    hv = FakeHv(vms=[vm("a", vcpus=4), vm("b", vcpus=2, namespace="ns")])
    mon = HostMonitor(hv, "h1", "test:///")  # type: ignore[arg-type]
    await mon.refresh()
    assert [v.cpu_demand for v in mon.state().vms] == [0.0, 0.0]
    mon.set_synthetic_load("", "a", 3.5)
    mon.set_synthetic_load("", "b", 2.0)  # wrong namespace: b is in "ns"
    mon.set_synthetic_load("ns", "b", 9.0)  # more than b's 2 vCPUs: b uses 2
    assert [v.cpu_demand for v in mon.state().vms] == [3.5, 2.0]
    mon.set_synthetic_load("", "a", 0)
    assert [v.cpu_demand for v in mon.state().vms] == [0.0, 2.0]
    assert ("", "a") not in mon.synthetic


@dataclass
class CpuHv:
    """A QEMU-like host whose VMs use ``rate[name]`` CPUs from now on."""

    rate: dict[str, float]
    vcpus: int = 1
    used: dict[str, float] = field(default_factory=dict)
    last: float = 0.0

    async def stats(self) -> Stats:
        return Stats(cpus=2)

    async def list_vms(self) -> list[VmInfo]:
        now = trio.current_time()
        for n, r in self.rate.items():
            self.used[n] = self.used.get(n, 0.0) + r * (now - self.last)
        self.last = now
        return [
            VmInfo(n, "h1", DomainState.RUNNING, self.vcpus, 96, "ns", cpu_time_s=self.used[n])
            for n in sorted(self.rate)
        ]


async def _run_for(mon: HostMonitor, seconds: float) -> None:
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await mon.refresh()
        await trio.sleep(mon.config.period_s)


def _demands(mon: HostMonitor) -> dict[str, float]:
    state = mon.state()
    assert state is not None
    return {v.name: v.cpu_demand for v in state.vms}


async def test_a_qemu_hosts_demand_is_cpu_time_over_the_window(autojump_clock):
    hv = CpuHv({"burn": 0.9, "idle": 0.04})
    mon = HostMonitor(hv, "h1", "qemu+tcp://10.0.0.1/system")  # type: ignore[arg-type]
    await mon.refresh()
    assert _demands(mon) == {"burn": 0.0, "idle": 0.0}  # one sample: nothing measured yet
    await _run_for(mon, MonitorConfig().demand_window_s + 1)
    assert _demands(mon) == {"burn": 0.9, "idle": 0.04}
    # a small change stays under the hysteresis, a large one is reported within a window
    hv.rate["burn"] = 0.93
    await _run_for(mon, MonitorConfig().demand_window_s + 1)
    assert _demands(mon)["burn"] == 0.9
    hv.rate["burn"] = 0.2
    await _run_for(mon, MonitorConfig().demand_window_s + 1)
    assert _demands(mon)["burn"] == 0.2


async def test_measured_demand_is_capped_at_vcpus_and_capacity_is_reported(autojump_clock):
    hv = CpuHv({"a": 1.7})
    cfg = MonitorConfig(capacity_cpus=0.5)
    mon = HostMonitor(hv, "h1", "qemu:///system", config=cfg)  # type: ignore[arg-type]
    await _run_for(mon, 7)
    state = mon.state()
    assert state is not None and state.vms[0].cpu_demand == 1.0  # 1 vCPU: at most 1 CPU
    assert state.cpu_milli == 500 and mon.capacity == 0.5
    mon.set_capacity(0.0)
    state = mon.state()
    assert state is not None and state.cpu_milli == 0 and mon.capacity == 2


async def test_test_hosts_are_never_measured(autojump_clock):
    hv = CpuHv({"a": 1.0})  # the test driver reports wall time as CPU time
    mon = HostMonitor(hv, "h1", "test:///h1.xml")  # type: ignore[arg-type]
    await _run_for(mon, 7)
    assert _demands(mon) == {"a": 0.0} and mon.measured == {}


def _pages(mon: HostMonitor) -> list[HostReply]:
    pages = [mon.reply(None)]
    while pages[-1].truncated:
        offset = sum(len(p.vms) for p in pages)
        pages.append(mon.reply(None, offset=offset, listing=pages[0].listing))
    return pages


async def test_a_reply_of_long_names_stays_inside_its_byte_limit(autojump_clock):
    # 512 rows of 128-character names encode to ~140 KiB: more than one datagram
    names = [f"{i:04d}" + "x" * 124 for i in range(512)]
    hv = FakeHv(vms=[vm(n, namespace="n" * 128) for n in names])
    mon = HostMonitor(hv, "h1", "test:///")  # type: ignore[arg-type]
    await mon.refresh()
    pages = _pages(mon)
    limit = MonitorConfig().reply_bytes
    assert all(encoded_size(p) <= limit for p in pages)
    assert len(pages) == 3  # ~260 B a row: ~240 rows a page
    assert [v.name for p in pages for v in p.vms] == names


async def test_a_small_byte_limit_pages_and_every_page_has_a_row(autojump_clock):
    hv = FakeHv(vms=[vm(f"vm{i}") for i in range(100)])
    mon = HostMonitor(hv, "h1", "test:///", config=MonitorConfig(reply_bytes=1024))  # type: ignore[arg-type]
    await mon.refresh()
    pages = _pages(mon)
    assert all(encoded_size(p) <= 1024 for p in pages)
    assert len(pages) == 3
    assert [v.name for p in pages for v in p.vms] == [f"vm{i}" for i in range(100)]
    mon.launches.update(f"token-{i}-" + "t" * 500 for i in range(3))  # ~1.5 KB of launches
    assert len(mon.reply(None).vms) == 1  # over the limit with none: still one row


async def test_a_created_vm_is_listed_without_a_read_and_kept_by_an_older_read(autojump_clock):
    hv = FakeHv(vms=[vm("b")])
    mon = HostMonitor(hv, "h1", "test:///")  # type: ignore[arg-type]
    await mon.refresh()
    reads = hv.lists
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mon.refresh)  # lists before "a" exists
        await trio.sleep(0.1)
        hv.vms.append(vm("a"))
        mon.specs["a"] = LaunchVm("a", "", 4, 1024)
        mon.add(vm("a"))
        assert hv.lists == reads + 1  # no read of its own
        assert [v.name for v in mon.vms] == ["b", "a"]  # at the end: pages stay in place
        assert [v.name for v in mon.state().vms] == ["b", "a"]
    assert [v.name for v in mon.vms] == ["b", "a"]  # the older read did not drop it
    assert "a" in mon.specs
    hv.vms.pop()  # "a" destroyed behind our back
    await mon.refresh()  # a read that began after the add: it is gone
    assert [v.name for v in mon.vms] == ["b"] and "a" not in mon.specs


async def test_later_pages_come_from_the_first_pages_listing_whatever_changed(autojump_clock):
    # a read lists the domains in another order (libvirt: by name; creations: appended),
    # VMs come and go: rows asked by offset of the list as it is now would be skipped
    hv = FakeHv(vms=[vm(f"vm{i}") for i in range(100)])
    cfg = MonitorConfig(reply_bytes=1024, reply_listings=2)
    mon = HostMonitor(hv, "h1", "test:///", config=cfg)  # type: ignore[arg-type]
    await mon.refresh()
    first = mon.reply(None)
    assert first.truncated and first.listing
    hv.vms = sorted(hv.vms[5:], key=lambda v: v.name, reverse=True)  # 5 gone, reordered
    await mon.refresh()
    mon.add(vm("new"))
    rows = list(first.vms)
    page = first
    while page.truncated:
        page = mon.reply(None, offset=len(rows), listing=first.listing)
        rows += page.vms
    assert [v.name for v in rows] == [f"vm{i}" for i in range(100)]
    assert page.listing == 0  # the last page
    # the list as it is now, in a listing of its own
    now = _pages(mon)
    assert sorted(v.name for p in now for v in p.vms) == sorted(v.name for v in mon.vms)
    assert now[0].listing != first.listing
    # two more multi-page queries: the first listing is forgotten, its pages are empty
    mon.reply(None)
    gone = mon.reply(None, offset=len(first.vms), listing=first.listing)
    assert gone.vms == () and gone.truncated
