"""libvirt's test driver at scale: 200 VMs created, "migrated" and destroyed on 4 hosts."""

from __future__ import annotations

import time

import pytest
import trio

pytestmark = pytest.mark.real

NODE_XML = """<node><cpu><mhz>2000</mhz><model>i686</model><active>16</active><nodes>1</nodes>
<sockets>1</sockets><cores>16</cores><threads>1</threads></cpu><memory>{kib}</memory></node>"""

N_VMS, N_HOSTS = 200, 4


async def _scenario(tmp_path, timings: dict) -> None:
    from dvms.hypervisor import DomainState, open_hypervisor
    from dvms.placement.spec import VmSpec

    hosts = []
    for i in range(N_HOSTS):
        path = tmp_path / f"host{i}.xml"
        path.write_text(NODE_XML.format(kib=64 * 1024 * 1024))
        hosts.append(open_hypervisor("libvirt", f"test://{path}", host=f"host{i}"))
    try:
        t0 = time.perf_counter()
        for k in range(N_VMS):
            await hosts[k % N_HOSTS].create(
                VmSpec(f"vm{k:03d}", namespace=f"ns{k % 7}", memory_mib=128, networks=("n",))
            )
        timings["create"] = time.perf_counter() - t0
        for hv in hosts:
            vms = await hv.list_vms()
            assert len(vms) == N_VMS // N_HOSTS
            assert all(v.state is DomainState.RUNNING for v in vms)
        t0 = time.perf_counter()
        for k in range(N_VMS):
            src, dst = hosts[k % N_HOSTS], hosts[(k + 1) % N_HOSTS]
            result = await src.migrate(f"ns{k % 7}:vm{k:03d}", dst)  # vm_key
            assert result.destination == dst.host
        timings["migrate"] = time.perf_counter() - t0
        for i, hv in enumerate(hosts):
            names = sorted(v.name for v in await hv.list_vms())
            assert names == sorted(f"vm{k:03d}" for k in range(N_VMS) if (k + 1) % N_HOSTS == i)
            assert (await hv.stats()).commit.running == N_VMS // N_HOSTS
        t0 = time.perf_counter()
        for k in range(N_VMS):
            hv = hosts[(k + 1) % N_HOSTS]
            await hv.destroy(f"ns{k % 7}:vm{k:03d}")
            await hv.undefine(f"ns{k % 7}:vm{k:03d}")
        timings["destroy"] = time.perf_counter() - t0
        for hv in hosts:
            assert await hv.list_vms() == []
    finally:
        for hv in hosts:
            await hv.aclose()


def test_200_vms_across_4_test_hosts(tmp_path, record_property):
    pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")
    timings: dict[str, float] = {}
    trio.run(_scenario, tmp_path, timings)
    for phase, seconds in timings.items():
        record_property(f"{phase}_s", round(seconds, 3))
        print(f"{phase}: {N_VMS} VMs in {seconds:.2f} s ({N_VMS / seconds:.0f}/s)")
