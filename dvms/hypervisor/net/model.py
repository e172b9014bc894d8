"""Values of the network layer: desired state, observed state, and the actions between.

Desired state is per host: for each namespace with a VM on this host, a ``NamespaceNetwork``
(this host's underlay address, the peers' addresses, the tunnel kind and key, and extra
ports to put on the bridge). Observed state is what a ``NetlinkBackend`` reads from the
kernel (or the fake). ``reconciler.plan`` turns the pair into a list of ``Action`` values;
a backend applies them one by one.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dvms.hypervisor.net.naming import MAX_VNI, namespace_key

__all__ = [
    "Action",
    "CreateBridge",
    "CreateGretap",
    "CreateVxlan",
    "DeleteLink",
    "FdbAppend",
    "FdbDelete",
    "Link",
    "NamespaceNetwork",
    "NetConfig",
    "NetError",
    "NetlinkBackend",
    "Observed",
    "SetIsolated",
    "SetMaster",
    "SetUp",
    "TunnelKind",
]


class NetError(Exception):
    """A network state cannot be reached (conflict, unsupported kernel feature, ...)."""


class TunnelKind(enum.Enum):
    VXLAN = "vxlan"  # default: one device per namespace, head-end replication via fdb
    GRETAP = "gretap"  # one point-to-point device per peer (kernel needs NET_IPGRE_DEMUX)


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Host-wide tunnel settings.

    - ``vxlan_port``: UDP destination port of VXLAN (IANA 4789; Linux's own default is 8472).
    - ``mtu``: MTU of the tunnel devices and bridge in bytes; None = the kernel's choice
      (underlay MTU minus 50 for VXLAN over IPv4).
    - ``learning``: let the VXLAN device learn remote MACs (on, so unicast stops flooding).
    """

    vxlan_port: int = 4789
    mtu: int | None = None
    learning: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.vxlan_port <= 65535:
            raise ValueError(f"vxlan_port must be in 1..65535, not {self.vxlan_port}")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu must be in 68..65535, not {self.mtu}")


@dataclass(frozen=True, slots=True)
class NamespaceNetwork:
    """What one host should have for one namespace.

    ``peers`` are the underlay addresses of the *other* hosts with VMs of this namespace
    (full mesh); with no peers only the bridge exists. ``key`` defaults to
    ``naming.namespace_key(namespace)``. ``ports`` are existing interfaces (VM taps, test
    veths) to enslave to the bridge; ports that do not exist yet are skipped.
    """

    namespace: str
    local_ip: str
    peers: frozenset[str] = frozenset()
    kind: TunnelKind = TunnelKind.VXLAN
    key: int | None = None
    ports: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.local_ip)  # raises ValueError on garbage
        for peer in self.peers:
            ipaddress.ip_address(peer)
        if self.local_ip in self.peers:
            raise NetError(f"namespace {self.namespace}: local address listed as a peer")
        if self.key is not None and not 1 <= self.key <= MAX_VNI:
            raise NetError(f"namespace {self.namespace}: key {self.key} not in 1..{MAX_VNI}")

    @property
    def tunnel_key(self) -> int:
        return self.key if self.key is not None else namespace_key(self.namespace)


@dataclass(frozen=True, slots=True)
class Link:
    """One observed network interface (the subset of attributes the reconciler reads)."""

    name: str
    kind: str  # "bridge", "vxlan", "gretap", "veth", "tun", ...
    alias: str | None = None
    master: str | None = None
    up: bool = False
    key: int | None = None  # VXLAN VNI or GRE key
    local: str | None = None
    remote: str | None = None
    port: int | None = None  # VXLAN UDP port
    isolated: bool = False  # bridge-port flag: no forwarding between isolated ports


@dataclass(frozen=True, slots=True)
class Observed:
    """A host's links, and the all-zero (flood) fdb destinations of each VXLAN device."""

    links: Mapping[str, Link] = field(default_factory=dict)
    flood: Mapping[str, frozenset[str]] = field(default_factory=dict)


# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateBridge:
    name: str
    alias: str
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class CreateVxlan:
    name: str
    alias: str
    vni: int
    local: str
    port: int
    learning: bool = True
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class CreateGretap:
    name: str
    alias: str
    key: int
    local: str
    remote: str
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteLink:
    name: str


@dataclass(frozen=True, slots=True)
class SetMaster:
    name: str
    master: str


@dataclass(frozen=True, slots=True)
class SetIsolated:
    name: str


@dataclass(frozen=True, slots=True)
class SetUp:
    name: str


@dataclass(frozen=True, slots=True)
class FdbAppend:
    device: str
    dst: str


@dataclass(frozen=True, slots=True)
class FdbDelete:
    device: str
    dst: str


Action = (
    CreateBridge
    | CreateVxlan
    | CreateGretap
    | DeleteLink
    | SetMaster
    | SetIsolated
    | SetUp
    | FdbAppend
    | FdbDelete
)


class NetlinkBackend(Protocol):
    """One host's kernel networking (a network namespace, or the fake)."""

    def snapshot(self) -> Observed: ...

    def apply(self, action: Action) -> None: ...

    def close(self) -> None: ...
