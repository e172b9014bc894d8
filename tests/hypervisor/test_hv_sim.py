"""The simulated hypervisor: migration model numbers, pure cluster, Trio adapter."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dvms.hypervisor import DomainState, EventKind, InvalidState, open_hypervisor
from dvms.hypervisor.errors import AlreadyExists, MigrationFailed, VmNotFound
from dvms.hypervisor.simulated import (
    MigrationModel,
    SimCluster,
    SimHostConfig,
    estimate_migration,
)
from dvms.placement.spec import VmSpec

MODEL = MigrationModel()


def test_idle_vm_costs_the_bare_copy():
    est = estimate_migration(1024, 0.8, 0.0, MODEL)
    assert est.duration_s == pytest.approx(1024 / 125, rel=1e-3)
    assert est.rounds == 1 and est.downtime_s == 0.0  # one full copy, nothing dirtied


@pytest.mark.parametrize("intensity", [0.1, 0.3, 0.45, 0.6, 0.8])
def test_vmplaces_range_for_1gib_at_125(intensity):
    # VMPlaceS: 1 GB at 125 MB/s with 10-80 % dirty intensity, ~9-12 s (mean 10.9 s)
    est = estimate_migration(1024, intensity, 0.6, MODEL)
    assert 8.2 < est.duration_s < 16.0
    assert est.downtime_s <= MODEL.max_downtime_s


def test_mean_over_the_intensity_range_matches_vmplaces():
    intensities = [0.1 + 0.7 * i / 20 for i in range(21)]
    mean = sum(estimate_migration(1024, x, 0.6, MODEL).duration_s for x in intensities) / 21
    assert 9.0 <= mean <= 12.0


def test_more_dirtying_means_longer_and_more_data():
    low, high = (estimate_migration(1024, x, 1.0, MODEL) for x in (0.1, 0.8))
    assert high.duration_s > low.duration_s and high.transferred_mib > low.transferred_mib


def test_non_converging_vm_stops_after_max_rounds_with_long_downtime():
    est = estimate_migration(1024, 1.5, 1.0, MODEL)
    assert est.rounds == MODEL.max_rounds
    assert est.downtime_s == pytest.approx(1024 / 125, rel=1e-3)


def test_pure_cluster_migrates_on_virtual_time():
    c = SimCluster()
    c.add_host("h1")
    c.add_host("h2", SimHostConfig(cpus=8, memory_mib=4096))
    c.create("h1", VmSpec("vm1", memory_mib=1024), now=0.0)
    c.set_cpu_demand("vm1", 0.6, now=0.0)
    done = c.start_migration("vm1", "h1", "h2", now=5.0)
    assert c.next_deadline() == done and done > 5.0 + 8.19
    assert c.stats("h2").commit.memory_mib == 1024  # reserved during the move
    assert c.on_timer(now=done - 0.001) == []
    assert c.info("h1", "vm1").state is DomainState.MIGRATING
    events = c.on_timer(now=done)
    assert [(e.host, e.kind) for e in events] == [
        ("h1", EventKind.MIGRATED_OUT),
        ("h2", EventKind.MIGRATED_IN),
    ]
    assert c.locate("vm1") == "h2" and c.info("h2", "vm1").state is DomainState.RUNNING
    assert c.stats("h2").cpu_demand == pytest.approx(0.6)
    assert c.next_deadline() is None


def test_cluster_refusals():
    c = SimCluster()
    c.add_host("h1", SimHostConfig(cpus=2, memory_mib=2048))
    c.add_host("h2", SimHostConfig(cpus=2, memory_mib=512))
    c.create("h1", VmSpec("vm1", memory_mib=1024), now=0)
    with pytest.raises(AlreadyExists):
        c.create("h2", VmSpec("vm1", memory_mib=64), now=0)
    with pytest.raises(MigrationFailed, match="not enough memory"):
        c.start_migration("vm1", "h1", "h2", now=0)
    with pytest.raises(VmNotFound):
        c.destroy("h2", "vm1", now=0)
    c.destroy("h1", "vm1", now=1)
    with pytest.raises(InvalidState):
        c.start_migration("vm1", "h1", "h2", now=1)
    c.undefine("h1", "vm1", now=2)
    assert c.list_vms("h1") == []


def test_a_paused_vm_is_destroyed_as_libvirt_does_but_cannot_shut_itself_down():
    # An emulated migration between test hosts pauses the source copy before the
    # destination creates its own, then destroys it: the simulated hypervisor must take
    # a paused guest there, as libvirt's destroy does.
    c = SimCluster()
    c.add_host("h1", SimHostConfig(cpus=2, memory_mib=2048))
    c.create("h1", VmSpec("vm1", memory_mib=1024), now=0)
    c.set_state("h1", "vm1", DomainState.PAUSED, now=1)
    with pytest.raises(InvalidState, match="not running"):
        c.shutdown("h1", "vm1", now=2)
    assert [e.kind for e in c.destroy("h1", "vm1", now=3)] == [EventKind.STOPPED]
    c.undefine("h1", "vm1", now=4)
    assert c.list_vms("h1") == []


async def test_trio_adapter_runs_in_virtual_time(autojump_clock):
    cluster = SimCluster()
    h1 = open_hypervisor("sim", "h1", cluster)
    h2 = open_hypervisor("sim", "h2", cluster)
    events1, events2 = h1.events(), h2.events()
    await h1.create(VmSpec("vm1", memory_mib=1024, tags=(("dirty_intensity", "0.45"),)))
    cluster.set_cpu_demand("vm1", 0.6, now=trio.current_time())
    start = trio.current_time()
    result = await h1.migrate("vm1", h2)
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(result.duration_s)
    assert 9.0 < result.duration_s < 12.0
    assert result.method == "sim-precopy" and result.downtime_ms <= 30.0
    assert [v.name for v in await h2.list_vms()] == ["vm1"]
    assert await h1.list_vms() == []
    kinds1 = [events1.receive_nowait().kind for _ in range(3)]
    kinds2 = [events2.receive_nowait().kind]
    assert kinds1 == [EventKind.DEFINED, EventKind.STARTED, EventKind.MIGRATED_OUT]
    assert kinds2 == [EventKind.MIGRATED_IN]
    stats = await h2.stats()
    assert stats.cpu_percent == pytest.approx(100 * 0.6 / 8)
    await h1.aclose()
    await h2.aclose()
