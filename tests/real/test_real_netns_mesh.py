"""Three network namespaces as hosts: namespace bridge + tunnel mesh built by the driver.

Each host namespace gets a "VM" (another namespace on a veth whose host end is a bridge
port). The pyroute2 backend builds the mesh from the desired state; pings between the VMs
must cross it; a second apply must change nothing; clearing the namespace must leave each
host with exactly the links it had before.
"""

from __future__ import annotations

import pytest

from tests.real.conftest import require_root, require_tools

pytestmark = pytest.mark.real

UNDERLAY = "10.231.0.{}"
OVERLAY = "10.232.0.{}"


def _links(netns: str) -> dict[str, str | None]:
    from pyroute2 import NetNS

    with NetNS(netns) as ns:
        return {m.get("ifname"): m.get("ifalias") for m in ns.get_links()}


def _ping(netns: str, ip: str) -> None:
    from dvms.hypervisor.lab.daemons import sh

    out = sh("ip", "netns", "exec", netns, "ping", "-c", "2", "-W", "2", "-i", "0.2", ip,
             check=False)  # fmt: skip
    assert out.returncode == 0, f"ping {netns} -> {ip} failed:\n{out.stdout}{out.stderr}"
    assert " 0% packet loss" in out.stdout


@pytest.mark.parametrize("kind", ["vxlan", "gretap"])
def test_mesh_carries_traffic_and_clear_removes_everything(kind, run_tag):
    require_root("network namespaces")
    require_tools("ip", "ping")
    pytest.importorskip("pyroute2", reason="pyroute2 not installed")
    from dvms.hypervisor.net import NamespaceNetwork, Reconciler, TunnelKind
    from dvms.hypervisor.net.pyroute2_backend import Pyroute2Backend, missing_tunnel_support

    if reason := missing_tunnel_support(kind):
        pytest.skip(reason)
    from dvms.hypervisor.lab.daemons import netns_add, netns_del, sh, veth_between

    under, hosts = f"{run_tag}u", [f"{run_tag}h{i}" for i in (1, 2, 3)]
    vms = [f"{run_tag}v{i}" for i in (1, 2, 3)]
    created: list[str] = []
    backends = []
    try:
        for ns in [under, *hosts, *vms]:
            netns_add(ns)
            created.append(ns)
        sh("ip", "-n", under, "link", "add", "ub", "type", "bridge")
        sh("ip", "-n", under, "link", "set", "ub", "up")
        for i, (host, vm) in enumerate(zip(hosts, vms, strict=True), start=1):
            sh("ip", "-n", under, "link", "add", f"u{i}", "type", "veth", "peer", "name",
               "eth0", "netns", host)  # fmt: skip
            sh("ip", "-n", under, "link", "set", f"u{i}", "master", "ub", "up")
            sh("ip", "-n", host, "addr", "add", f"{UNDERLAY.format(i)}/24", "dev", "eth0")
            sh("ip", "-n", host, "link", "set", "eth0", "up")
            veth_between(host, f"vm{i}", None, vm, "eth0", OVERLAY.format(i))
        before = {h: _links(h) for h in hosts}
        peers = frozenset(UNDERLAY.format(i) for i in (1, 2, 3))
        desired = {
            host: NamespaceNetwork(
                "red",
                UNDERLAY.format(i),
                peers - {UNDERLAY.format(i)},
                TunnelKind(kind),
                ports=frozenset({f"vm{i}"}),
            )
            for i, host in enumerate(hosts, start=1)
        }
        recs = {}
        for host in hosts:
            backend = Pyroute2Backend(netns=host)
            backends.append(backend)
            recs[host] = Reconciler(backend)
            assert recs[host].apply([desired[host]])
        for host in hosts:
            assert recs[host].apply([desired[host]]) == [], "second apply must be a no-op"
        _ping(vms[0], OVERLAY.format(2))
        _ping(vms[0], OVERLAY.format(3))
        _ping(vms[1], OVERLAY.format(3))
        for host in hosts:
            recs[host].clear("red")
            assert _links(host) == before[host], f"{host}: clear left links behind"
        after_clear = sh("ip", "netns", "exec", vms[0], "ping", "-c", "1", "-W", "1",
                         OVERLAY.format(2), check=False)  # fmt: skip
        assert after_clear.returncode != 0, "traffic still crosses after clear"
    finally:
        for backend in backends:
            backend.close()
        for ns in reversed(created):
            netns_del(ns)
