"""The libvirt backend on test:/// hosts (in-process, no daemon): lifecycle, errors, events."""

from __future__ import annotations

import pytest
import trio

from dvms.hypervisor import (
    AlreadyExists,
    DomainState,
    EventKind,
    InvalidSpec,
    InvalidState,
    VmNotFound,
    open_hypervisor,
)
from dvms.placement.spec import VmSpec

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>{cpus}</active><nodes>1</nodes>
       <sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>
  <memory>{kib}</memory>
</node>"""


@pytest.fixture
async def hosts(tmp_path):
    opened = []
    for i in range(2):
        path = tmp_path / f"h{i}.xml"
        path.write_text(NODE_XML.format(cpus=4 + i, kib=(8 + i) * 1024 * 1024))
        opened.append(open_hypervisor("libvirt", f"test://{path}", host=f"h{i}"))
    yield opened
    for hv in opened:
        await hv.aclose()


async def test_create_info_stats_and_independent_hosts(hosts):
    h0, h1 = hosts
    info = await h0.create(
        VmSpec("web1", namespace="red", vcpus=2, memory_mib=256, networks=("a",))
    )
    assert (info.name, info.host, info.state, info.vcpus, info.memory_mib, info.namespace) == (
        "web1",
        "h0",
        DomainState.RUNNING,
        2,
        256,
        "red",
    )
    assert [v.name for v in await h0.list_vms()] == ["web1"]
    assert await h1.list_vms() == []  # one connection per file = independent hosts
    stats = await h0.stats()
    assert (stats.cpus, stats.memory_total_mib, stats.source) == (4, 8192, "libvirt")
    assert (stats.commit.vms, stats.commit.vcpus, stats.commit.memory_mib, stats.commit.nics) == (
        1,
        2,
        256,
        1,
    )
    assert (await h1.stats()).cpus == 5


async def test_errors_are_mapped(hosts):
    h0, _ = hosts
    await h0.create(VmSpec("web1", memory_mib=64))
    with pytest.raises(AlreadyExists):
        await h0.create(VmSpec("web1", memory_mib=64))
    with pytest.raises(VmNotFound, match="'nope' on h0"):
        await h0.info("nope")
    await h0.destroy("web1")
    with pytest.raises(InvalidState):
        await h0.destroy("web1")
    await h0.undefine("web1")
    with pytest.raises(InvalidSpec, match="invalid vm name"):
        await h0.create(VmSpec("x'><devices/>", memory_mib=64))
    assert await h0.list_vms() == []


async def test_migration_is_emulated_by_save_and_restore(hosts):
    h0, h1 = hosts
    await h0.create(VmSpec("db1", namespace="blue", memory_mib=128))
    result = await h0.migrate("blue:db1", h1)  # hypervisors know VMs by vm_key
    assert (result.source, result.destination, result.method) == ("h0", "h1", "save-restore")
    assert await h0.list_vms() == []
    moved = await h1.info("blue:db1")
    assert moved.state is DomainState.RUNNING and moved.namespace == "blue"
    assert moved.name == "db1"
    await h1.destroy("blue:db1")  # persistent on the destination (PERSIST_DEST emulated)
    assert (await h1.info("blue:db1")).state is DomainState.SHUTOFF


async def test_lifecycle_events_reach_subscribers(hosts):
    h0, _ = hosts
    events = h0.events()
    await h0.create(VmSpec("ev1", memory_mib=64))
    await h0.destroy("ev1")
    await h0.undefine("ev1")
    seen = []
    with trio.fail_after(5):
        while len(seen) < 4:
            seen.append(await events.receive())
    assert [(e.vm, e.kind) for e in seen] == [
        ("ev1", EventKind.DEFINED),
        ("ev1", EventKind.STARTED),
        ("ev1", EventKind.STOPPED),
        ("ev1", EventKind.UNDEFINED),
    ]


def test_registry_knows_both_backends():
    from dvms.hypervisor import available_backends

    assert {"libvirt", "sim"} <= set(available_backends())
    with pytest.raises(ValueError, match="unknown hypervisor backend"):
        open_hypervisor("xen")


async def test_stats_with_psutil_keep_libvirt_capacity(tmp_path):
    from dvms.hypervisor.libvirt_backend import LibvirtConfig

    path = tmp_path / "h.xml"
    path.write_text(NODE_XML.format(cpus=6, kib=4 * 1024 * 1024))
    cfg = LibvirtConfig(uri=f"test://{path}", host="h", local_stats=True)
    hv = open_hypervisor("libvirt", cfg)
    try:
        await hv.create(VmSpec("s1", vcpus=3, memory_mib=512))
        stats = await hv.stats()
    finally:
        await hv.aclose()
    assert stats.source == "psutil+libvirt"
    assert (stats.cpus, stats.memory_total_mib) == (6, 4096)  # the node's, not this machine's
    assert stats.memory_available_mib is not None and stats.memory_available_mib > 0
    assert stats.load_avg is not None and len(stats.load_avg) == 3
    assert stats.net_rx_bytes is not None
    assert stats.cpu_commit_ratio == pytest.approx(3 / 6)
    assert stats.mem_commit_ratio == pytest.approx(512 / 4096)


async def test_same_name_in_two_namespaces_on_one_host(hosts):
    h0, _ = hosts
    await h0.create(VmSpec("vm1", namespace="a", memory_mib=64))
    await h0.create(VmSpec("vm1", namespace="b", memory_mib=64))
    await h0.create(VmSpec("vm1", memory_mib=64))
    listed = sorted((v.namespace, v.name, v.key) for v in await h0.list_vms())
    assert listed == [("", "vm1", "vm1"), ("a", "vm1", "a:vm1"), ("b", "vm1", "b:vm1")]
    with pytest.raises(AlreadyExists, match="in namespace a"):
        await h0.create(VmSpec("vm1", namespace="a", memory_mib=64))
    await h0.destroy("a:vm1")
    assert (await h0.info("b:vm1")).state is DomainState.RUNNING


async def test_pause_resume_and_boot_again(hosts):
    h0, _ = hosts
    await h0.create(VmSpec("vm1", namespace="a", memory_mib=64))
    await h0.suspend("a:vm1")
    assert (await h0.info("a:vm1")).state is DomainState.PAUSED
    await h0.resume("a:vm1")
    assert (await h0.info("a:vm1")).state is DomainState.RUNNING
    await h0.destroy("a:vm1")
    assert (await h0.info("a:vm1")).state is DomainState.SHUTOFF
    await h0.start("a:vm1")
    assert (await h0.info("a:vm1")).state is DomainState.RUNNING


async def test_a_connection_libvirtd_closed_is_opened_again(hosts):
    """libvirtd closes a client that did not answer its keepalives (a daemon stopped
    for ~30 s) or that it lost on a restart: the next call opens a new connection
    instead of failing forever ("client socket is closed")."""
    h0, _ = hosts
    await h0.create(VmSpec("a", memory_mib=64))
    old = h0._conn
    await trio.to_thread.run_sync(old.close)  # as libvirtd would have
    # a test:/// connection is a host of its own: the new one starts empty
    assert await h0.list_vms() == []
    assert h0._conn is not old and h0._conn.isAlive()
    await h0.create(VmSpec("b", memory_mib=64))
    assert [v.name for v in await h0.list_vms()] == ["b"]


async def test_a_listing_parses_each_domain_description_once_and_reads_changes(hosts, monkeypatch):
    """A host of thousands of domains is listed for every query: the second listing
    parses no description it parsed before, and what changed still reads right."""
    from dataclasses import replace

    from dvms.hypervisor import libvirt_backend
    from dvms.placement.hapolicy import HaPolicy

    hv = hosts[0]
    await hv.create(VmSpec("a", namespace="n", networks=("n0",)))
    await hv.create(VmSpec("b", ha_policy=HaPolicy("restart"), ha_generation=3))

    def without_time(vms):  # the CPU time moves on between two listings
        return [replace(v, cpu_time_s=0.0) for v in vms]

    first = without_time(await hv.list_vms())
    parses = []
    real = libvirt_backend._FromXml.parse
    monkeypatch.setattr(
        libvirt_backend._FromXml, "parse", staticmethod(lambda xml: parses.append(1) or real(xml))
    )
    assert without_time(await hv.list_vms()) == first and not parses
    await hv.suspend("b")  # state: read from libvirt at every listing, not the description
    await hv.destroy("n:a")
    await hv.undefine("n:a")
    await hv.create(VmSpec("a", namespace="n", networks=("n0", "n1")))  # a new description
    got = {v.key: (v.state, v.namespace, v.nics, v.ha_generation) for v in await hv.list_vms()}
    assert got == {"n:a": (DomainState.RUNNING, "n", 2, 0), "b": (DomainState.PAUSED, "", 0, 3)}
    assert parses  # the new domain's description (and a paused one's, if it differs)
    assert len(hv._parsed) == 2  # only the domains of the last listing


async def test_a_domain_destroyed_while_the_host_is_listed_is_left_out(hosts, monkeypatch):
    """A clear destroys domains while the periodic read lists them: the one gone between
    ``listAllDomains`` and its description is not listed, and the listing stands."""
    import libvirt

    hv = hosts[0]
    for name in ("a", "b", "c"):
        await hv.create(VmSpec(name))
    real = hv._vm_info

    def vanishing(dom, keep=None):
        if dom.name() == "b":  # destroyed by another thread since the listing began
            exc = libvirt.libvirtError("Domain not found")
            exc.err = (42, 0, "Domain not found: no domain with matching uuid", 0)
            raise exc
        return real(dom, keep)

    monkeypatch.setattr(hv, "_vm_info", vanishing)
    assert [v.name for v in await hv.list_vms()] == ["a", "c"]

    def broken(dom, keep=None):  # any other error still fails the listing
        exc = libvirt.libvirtError("internal error")
        exc.err = (1, 0, "internal error", 0)
        raise exc

    monkeypatch.setattr(hv, "_vm_info", broken)
    with pytest.raises(Exception, match="internal error"):
        await hv.list_vms()
