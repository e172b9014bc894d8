"""Tunnels that follow the VMs: each namespace's VXLAN mesh spans exactly the hosts that
run its networked VMs (real hypervisors only).

A VM's NICs join its namespace's bridge (``bridge_name(namespace_key(ns))``, the name
the domain definition uses). On a host, the bridge exists while the host runs a VM of
the namespace with a NIC (running or paused), or while it *expects* one::

    create a VM here          --prepare(ns)--> bridge now, kept ``grace_s`` until it shows
    live migration to B       --NetOp(ns, "", peers)--> B: bridge + tunnels before QEMU
                                starts there; every other mesh host: a tunnel to B now
    every ``period_s``        --HostQuery to the peers--> which hosts run networked VMs
                                of which namespaces; this host's mesh for each of its
                                namespaces is the others among them (+ expected ones)
    last VM of ns gone here   --> bridge and tunnels removed at the next round

The peers are learned by asking every known host each round (``gather``): simple and
exact, but one request per peer per period, so it suits clusters of tens of hosts, not
thousands (a DHT record per namespace listing its hosts would replace it there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from dvms.hypervisor.base import DomainState
from dvms.hypervisor.net import NamespaceNetwork, NetError
from dvms.runtime.capabilities import Peers, Requester
from dvms.runtime.messages import HostQuery, HostReply, NetOp
from dvms.runtime.services.monitor import HostMonitor, uri_is_test

if TYPE_CHECKING:
    from dvms.runtime.services.hostside import HostSide

__all__ = ["VM_BRIDGE", "VmNetConfig", "VmNetworks", "network_name"]

log = logging.getLogger("dvms.runtime.services.vmnet")

#: ``NetOp.bridge`` of a namespace's VM network (the ``ns bridge`` ones have a name).
VM_BRIDGE = ""

_ON = (DomainState.RUNNING, DomainState.PAUSED, DomainState.BUILDING, DomainState.MIGRATING)
_ON_WORDS = {s.value for s in _ON}


def network_name(namespace: str) -> str:
    """The ``NamespaceNetwork.namespace`` of a namespace's VM network (the default
    namespace "" is ``default``, as in the domain definition)."""
    return namespace or "default"


@dataclass(frozen=True, slots=True)
class VmNetConfig:
    """Timing of the VM networks (ours)."""

    #: Seconds between two rounds (peers asked, meshes reconciled).
    period_s: float = 1.0
    #: Timeout of one round's host queries, seconds.
    query_timeout_s: float = 1.0
    #: A prepared network (a VM being created or migrated in) is kept this long without
    #: a VM of its namespace here, seconds; so are tunnels to an announced host.
    grace_s: float = 20.0


class VmNetworks:
    """This host's part of every namespace's VM network."""

    def __init__(
        self,
        host_side: HostSide,
        monitor: HostMonitor,
        *,
        requests: Requester | None,
        peers: Peers,
        config: VmNetConfig | None = None,
    ) -> None:
        self.host_side = host_side
        self.monitor = monitor
        self._requests = requests
        self.peers = peers
        self.config = config or VmNetConfig()
        #: off on test hosts, and without a requester (a host side built for tests)
        self.enabled = requests is not None and not uri_is_test(monitor.uri)
        #: namespace -> the network this host has for it now
        self.want: dict[str, NamespaceNetwork] = {}
        #: namespace -> (until, extra peer addresses): expected here, announced peers
        self.expected: dict[str, tuple[float, frozenset[str]]] = {}
        #: peer address -> namespaces with networked VMs there (last round)
        self.remote: dict[str, frozenset[str]] = {}
        self.rounds = 0

    @property
    def requests(self) -> Requester:
        assert self._requests is not None, "VM networks are off without a requester"
        return self._requests

    @property
    def me(self) -> str:
        return self.peers.contact.host

    def local(self) -> set[str]:
        """Namespaces of this host's networked VMs that are on (not shut off)."""
        return {v.namespace for v in self.monitor.vms if v.nics and v.state in _ON}

    def mesh(self, namespace: str) -> frozenset[str]:
        """Addresses of the other hosts on ``namespace``'s mesh, as this host knows."""
        now = trio.current_time()
        out = {ip for ip, nss in self.remote.items() if namespace in nss}
        until, extra = self.expected.get(namespace, (0.0, frozenset()))
        if until > now:
            out |= extra
        return frozenset(out - {self.me})

    def _apply(self, namespaces: set[str]) -> list[str]:
        want = {
            ns: NamespaceNetwork(network_name(ns), self.me, self.mesh(ns))
            for ns in sorted(namespaces)
        }
        if want == self.want:
            return []
        old, self.want = self.want, want
        errors = self.host_side.apply_networks()
        if errors:
            self.want = old
        return errors

    def _wanted(self) -> set[str]:
        now = trio.current_time()
        for ns in [ns for ns, (until, _) in self.expected.items() if until <= now]:
            del self.expected[ns]
        return self.local() | set(self.expected)

    async def prepare(self, namespace: str, peers: tuple[str, ...] = ()) -> list[str]:
        """Make ``namespace``'s bridge here now (a VM is about to be created or migrated
        in), with tunnels to what this host knows plus ``peers``; kept ``grace_s``."""
        if not self.enabled:
            return []
        until = trio.current_time() + self.config.grace_s
        _, extra = self.expected.get(namespace, (0.0, frozenset()))
        self.expected[namespace] = (until, extra | (frozenset(peers) - {self.me}))
        return self._apply(self._wanted() | {namespace})

    def forget(self, namespace: str) -> list[str]:
        """``clear namespace``: drop its network here now (its VMs are gone)."""
        self.expected.pop(namespace, None)
        self.remote = {ip: nss - {namespace} for ip, nss in self.remote.items()}
        return self._apply(self._wanted() - {namespace})

    async def before_migration(self, namespace: str, dst_host: str, dst_ip: str) -> None:
        """A VM of ``namespace`` is about to live-migrate to ``dst_host``: it gets the
        bridge and tunnels to the mesh now, and the mesh a tunnel to it."""
        if not self.enabled:
            return
        mesh = self.mesh(namespace)
        await self.prepare(namespace, (dst_ip,))
        ask = NetOp(namespace, VM_BRIDGE, "vxlan", 0, tuple(sorted(mesh | {self.me})))
        await self.requests.ask_host(dst_host, ask, timeout=self.config.query_timeout_s)
        hosts = {c.host: name for name, c in self.peers.hosts().items()}
        async with trio.open_nursery() as nursery:
            for ip in sorted(mesh - {dst_ip}):
                if ip in hosts:
                    tell = NetOp(namespace, VM_BRIDGE, "vxlan", 0, (dst_ip,))
                    nursery.start_soon(self._tell, hosts[ip], tell)

    async def _tell(self, host: str, msg: NetOp) -> None:
        await self.requests.ask_host(host, msg, timeout=self.config.query_timeout_s)

    async def round(self) -> None:
        """One round: learn which hosts run which namespaces' networked VMs (only when
        this host has some), then reconcile."""
        wanted = self._wanted()
        if wanted:
            replies, _silent = await self.requests.gather(
                HostQuery(vms=True), timeout=self.config.query_timeout_s
            )
            hosts = self.peers.hosts()
            remote: dict[str, frozenset[str]] = {}
            for r in replies:
                if not isinstance(r, HostReply) or r.name not in hosts:
                    continue
                ip = hosts[r.name].host
                if ip != self.me:
                    remote[ip] = frozenset(
                        v.namespace for v in r.vms if v.nics and v.state in _ON_WORDS
                    )
            self.remote = remote
            wanted = self._wanted()  # VMs may have come or gone meanwhile
        errors = self._apply(wanted)
        for e in errors:
            log.warning("vm networks: %s", e)
        self.rounds += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.enabled:
            return
        while True:
            try:
                await self.round()
            except (NetError, OSError) as exc:
                log.warning("vm networks round failed: %s", exc)
            await trio.sleep(self.config.period_s)
