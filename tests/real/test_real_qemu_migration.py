"""Two real libvirtds in their own namespaces; a tiny TCG guest live-migrates A -> B -> A.

The guest has one NIC on the namespace bridge the network driver built (VXLAN between the
two daemons' namespaces); its tap must follow it from host to host. The guest prints its
uptime every second on its serial console (a log file both daemons append to); the
counter must keep going across both moves (no reboot, no restart). The migration time and
downtime (libvirt's completed-job statistics) are recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import trio

from tests.real.conftest import require_root, require_tools

pytestmark = pytest.mark.real

BOOT_TIMEOUT_S = 90.0


def _wait_ticks(log: Path, after: int, timeout: float) -> list[tuple[int, float]]:
    from dvms.hypervisor.lab.guest import parse_ticks

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks = parse_ticks(log.read_text(errors="replace")) if log.exists() else []
        if ticks and ticks[-1][0] > after:
            return ticks
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-600:] if log.exists() else "(no log)"
    raise AssertionError(f"no guest tick after #{after} within {timeout}s; serial log: {tail}")


def _taps_on_bridge(netns: str, bridge: str) -> list[str]:
    """Tap devices (libvirt's vnetN) enslaved to ``bridge`` in ``netns``."""
    from pyroute2 import NetNS

    with NetNS(netns) as ns:
        links = list(ns.get_links())
        index = {m["index"]: m.get("ifname") for m in links}
        return [
            m.get("ifname")
            for m in links
            if m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "tun"
            and index.get(m.get("master")) == bridge
        ]


def _namespace_net(nodes, namespace: str) -> list:
    """The driver's bridge + VXLAN mesh for ``namespace`` in every node's netns."""
    from dvms.hypervisor.net import NamespaceNetwork, Reconciler
    from dvms.hypervisor.net.pyroute2_backend import Pyroute2Backend

    recs = []
    for node in nodes:
        peers = frozenset(n.ip for n in nodes if n is not node)
        rec = Reconciler(Pyroute2Backend(netns=node.netns))
        rec.apply([NamespaceNetwork(namespace, node.ip, peers)])
        recs.append(rec)
    return recs


async def _scenario(nodes, guest, serial_dir: Path, results: dict) -> None:
    from dvms.hypervisor import DomainState, open_hypervisor
    from dvms.hypervisor.domxml import DomainConfig
    from dvms.hypervisor.net import bridge_name, namespace_key
    from dvms.placement.spec import VmSpec

    dom_cfg = DomainConfig(serial_log_dir=str(serial_dir), tb_cache_mib=16)
    hvs = [open_hypervisor("libvirt", n.hypervisor_config(dom_cfg)) for n in nodes]
    a, b = hvs
    spec = VmSpec(
        name="tiny1",
        namespace="red",
        networks=("lan",),  # one NIC, on the namespace bridge
        memory_mib=128,
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        append=guest.cmdline,
    )
    log = serial_dir / "red:tiny1.log"  # named by vm_key
    bridge = bridge_name(namespace_key("red"))
    recs = _namespace_net(nodes, "red")
    try:
        async with trio.open_nursery() as nursery:  # both daemons probe QEMU in parallel
            for hv in hvs:
                nursery.start_soon(hv.capabilities)
        info = await a.create(spec)
        assert info.state is DomainState.RUNNING
        assert len(_taps_on_bridge(nodes[0].netns, bridge)) == 1, "VM NIC not on the bridge"
        ticks = await trio.to_thread.run_sync(_wait_ticks, log, 2, BOOT_TIMEOUT_S)
        for src, dst in ((a, b), (b, a)):
            last_tick, last_uptime = ticks[-1]
            result = await src.migrate("red:tiny1", dst)
            results[f"{src.host}->{dst.host}"] = result
            assert await src.list_vms() == []
            assert (await dst.info("red:tiny1")).state is DomainState.RUNNING
            here, there = (nodes[0], nodes[1]) if dst is b else (nodes[1], nodes[0])
            assert len(_taps_on_bridge(there.netns, bridge)) == 1, "NIC not re-attached"
            assert _taps_on_bridge(here.netns, bridge) == [], "source tap left behind"
            ticks = await trio.to_thread.run_sync(_wait_ticks, log, last_tick + 1, 30.0)
            assert ticks[-1][1] > last_uptime, "guest uptime went backwards: it rebooted"
        text = log.read_text(errors="replace")
        assert text.count("GUEST UP") == 1, "the guest booted more than once"
        numbers = [n for n, _ in ticks]
        uptimes = [u for _, u in ticks]
        assert uptimes == sorted(uptimes), "uptime counter not monotonic across migrations"
        assert numbers == sorted(numbers)
        results["final_tick"] = ticks[-1]
    finally:
        for hv in hvs:
            with contextlib.suppress(Exception):
                await hv.destroy("red:tiny1")
            with contextlib.suppress(Exception):
                await hv.undefine("red:tiny1")
            await hv.aclose()
        for rec in recs:
            rec.clear("red")
            rec.backend.close()


def test_live_migration_a_b_a_keeps_the_guest_running(run_tag, record_property):
    require_root("network + mount namespaces, libvirtd")
    require_tools("libvirtd", "virtlogd", "qemu-system-x86_64", "ip", "unshare", "apt-get")
    pytest.importorskip("libvirt", reason="libvirt-python not installed")
    pytest.importorskip("pyroute2", reason="pyroute2 not installed")
    from dvms.hypervisor.lab.daemons import libvirtd_pair
    from dvms.hypervisor.lab.guest import build_tiny_guest

    guest = build_tiny_guest()
    work = Path(tempfile.mkdtemp(prefix="dvms-real-qemu-"))
    os.chmod(work, 0o755)
    serial_dir = work / "serial"
    serial_dir.mkdir()
    os.chmod(serial_dir, 0o777)  # QEMU (libvirt-qemu) appends the console log here
    results: dict = {}
    try:
        with libvirtd_pair(run_tag, work) as nodes:
            trio.run(_scenario, nodes, guest, serial_dir, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for move in ("nodeA->nodeB", "nodeB->nodeA"):
        r = results[move]
        record_property(f"{move} duration_s", round(r.duration_s, 3))
        record_property(f"{move} downtime_ms", r.downtime_ms)
        print(
            f"{move}: {r.duration_s:.2f} s, downtime {r.downtime_ms} ms, "
            f"{r.transferred_mib and round(r.transferred_mib, 1)} MiB"
        )
        assert r.method == "live-p2p"
        assert r.duration_s < 60.0
        assert r.downtime_ms is not None and 0 < r.downtime_ms < 5000
