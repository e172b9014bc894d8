"""VM networks follow the VMs: a host has its namespace's bridge and a tunnel to exactly
the other hosts running networked VMs of that namespace; the last VM gone removes them;
an announced migration gets tunnels before the VM arrives; test hosts never take part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from dvms.hypervisor.base import DomainState, VmInfo
from dvms.hypervisor.net import NamespaceNetwork, Reconciler
from dvms.hypervisor.net.fake import FakeNetlink
from dvms.overlay.messages import Contact
from dvms.runtime.messages import HostQuery, HostReply, NetOp, VmRow
from dvms.runtime.services.vmnet import VmNetworks


@dataclass
class Monitor:
    uri: str = "qemu+tcp://10.0.0.1/system"
    vms: tuple[VmInfo, ...] = ()


@dataclass
class Peers:
    contact: Contact = field(default_factory=lambda: Contact(1, "10.0.0.1", 7400))

    def hosts(self) -> dict[str, Contact]:
        return {f"h{i}": Contact(i, f"10.0.0.{i}", 7400) for i in (1, 2, 3)}


@dataclass
class Requests:
    """Peers' answers: host name -> its VMs."""

    remote: dict[str, list[VmRow]] = field(default_factory=dict)
    asked: list[tuple[str, Any]] = field(default_factory=list)

    async def gather(self, msg: Any, *, timeout: float | None = None) -> tuple[list, list]:
        assert isinstance(msg, HostQuery)
        return [HostReply(h, 2, 1024, "uri", tuple(rows)) for h, rows in self.remote.items()], []

    async def ask_host(self, host: str, msg: Any, **kw: Any) -> None:
        self.asked.append((host, msg))


class HostSide:
    def __init__(self) -> None:
        self.net = Reconciler(FakeNetlink())
        self.vm_networks: VmNetworks | None = None
        self.applied: list[list[NamespaceNetwork]] = []

    def apply_networks(self) -> list[str]:
        assert self.vm_networks is not None
        want = list(self.vm_networks.want.values())
        self.net.apply(want)
        self.applied.append(want)
        return []


def row(name: str, ns: str, nics: int = 1) -> VmRow:
    return VmRow(name, ns, "running", 1, 96, nics)


def info(name: str, ns: str, nics: int = 1) -> VmInfo:
    return VmInfo(name, "h1", DomainState.RUNNING, 1, 96, ns, nics=nics)


def build(monitor: Monitor, requests: Requests) -> tuple[VmNetworks, HostSide]:
    side = HostSide()
    nets = VmNetworks(side, monitor, requests=requests, peers=Peers())  # type: ignore[arg-type]
    side.vm_networks = nets
    return nets, side


async def test_the_mesh_spans_exactly_the_hosts_running_the_namespaces_networked_vms(
    autojump_clock,
):
    mon = Monitor(vms=(info("a", "red"), info("quiet", "blue", nics=0)))
    req = Requests(
        {"h1": [], "h2": [row("b", "red"), row("c", "blue")], "h3": [row("x", "red", 0)]}
    )
    nets, side = build(mon, req)
    await nets.round()
    assert list(nets.want) == ["red"]  # blue's VM here has no NIC
    assert nets.want["red"].peers == frozenset({"10.0.0.2"})  # h3's red VM has no NIC
    req.remote["h3"] = [row("d", "red")]
    await nets.round()
    assert nets.want["red"].peers == frozenset({"10.0.0.2", "10.0.0.3"})
    mon.vms = ()  # the last red VM left this host
    await nets.round()
    assert nets.want == {} and side.applied[-1] == []


async def test_a_migration_is_announced_and_a_prepared_network_waits_for_its_vm(
    autojump_clock,
):
    mon = Monitor(vms=(info("a", "red"),))
    req = Requests({"h2": [row("b", "red")]})
    nets, _side = build(mon, req)
    await nets.round()
    await nets.before_migration("red", "h3", "10.0.0.3")
    assert nets.want["red"].peers == frozenset({"10.0.0.2", "10.0.0.3"})
    told = {host: msg for host, msg in req.asked}
    assert isinstance(told["h3"], NetOp) and set(told["h3"].peers) == {"10.0.0.1", "10.0.0.2"}
    assert told["h2"].peers == ("10.0.0.3",)
    # a host told a VM is coming keeps the bridge through its grace period, then drops it
    other, _ = build(Monitor(), Requests())
    await other.prepare("green", ("10.0.0.2",))
    await other.round()
    assert "green" in other.want
    await trio.sleep(other.config.grace_s + 1)
    await other.round()
    assert other.want == {}


async def test_test_hosts_take_no_part(autojump_clock):
    nets, side = build(Monitor(uri="test:///h1.xml", vms=(info("a", "red"),)), Requests())
    assert not nets.enabled
    assert await nets.prepare("red") == []
    assert side.applied == []
