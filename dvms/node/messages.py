"""Node control-plane messages (type codes 64-79): what one daemon asks another on a
user's behalf. Unlike the protocol messages these are answered by the Trio layer
(``dvms.node.runner``), because answering them means asking the hypervisor.

::

    HostQuery(namespace, vms)       -> HostReply(name, cpus, memory_mib, uri, vms)
    KillVms(namespace, names)       -> Killed(host, killed, errors)
    AdoptVm(vm)                     -> Adopted(ok, reason)       migration emulation
    PartitionsQuery()               -> PartitionsReply(host, rows)

``namespace`` None means every namespace. Every request is retried by the asker until
answered or given up; answering twice is harmless (``KillVms`` of a VM already gone is
reported as not found, ``AdoptVm`` of a VM already here is refused by the hypervisor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dvms.partition.messages import LaunchVm
from dvms.wire.envelope import MessageRegistry
from dvms.wire.schema import MaxLen, Range

__all__ = [
    "NODE_MESSAGES",
    "AdoptVm",
    "Adopted",
    "HostQuery",
    "HostReply",
    "KillVms",
    "Killed",
    "PartitionRow",
    "PartitionsQuery",
    "PartitionsReply",
    "VmRow",
    "register_node_messages",
]

Name = Annotated[str, MaxLen(128)]
Text = Annotated[str, MaxLen(512)]
U64 = Annotated[int, Range(0, 2**64 - 1)]
#: Rows per reply: keeps a reply inside one datagram (the daemon's UDP limit is 64 KiB).
MAX_ROWS = 512


@dataclass(frozen=True, slots=True)
class VmRow:
    name: Name
    namespace: Name
    state: Annotated[str, MaxLen(16)]
    vcpus: Annotated[int, Range(0, 4096)]
    memory_mib: Annotated[int, Range(0, 2**40)]


@dataclass(frozen=True, slots=True)
class HostQuery:
    namespace: Name | None = None
    #: False: only the host's name and size (learning peers' names)
    vms: bool = True


@dataclass(frozen=True, slots=True)
class HostReply:
    name: Name
    cpus: Annotated[int, Range(0, 65536)]
    memory_mib: Annotated[int, Range(0, 2**40)]
    uri: Text
    vms: Annotated[tuple[VmRow, ...], MaxLen(MAX_ROWS)] = ()
    #: True when the host has more VMs than one reply carries.
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class KillVms:
    namespace: Name | None
    names: Annotated[tuple[Name, ...], MaxLen(4096)]


@dataclass(frozen=True, slots=True)
class Killed:
    host: Name
    killed: Annotated[tuple[Name, ...], MaxLen(4096)]
    errors: Annotated[tuple[Text, ...], MaxLen(64)] = ()


@dataclass(frozen=True, slots=True)
class AdoptVm:
    """Create ``vm`` here: the second half of an emulated migration between test hosts."""

    vm: LaunchVm


@dataclass(frozen=True, slots=True)
class Adopted:
    ok: bool
    reason: Text = ""


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One partition as this node saw it (members by host name where known)."""

    pid: U64
    role: Annotated[str, MaxLen(16)]
    leader: Name
    members: Annotated[tuple[Name, ...], MaxLen(1024)]
    state: Annotated[str, MaxLen(16)]
    events: Annotated[tuple[Name, ...], MaxLen(64)]
    started: float
    ended: float | None
    outcome: Text
    actions: Annotated[int, Range(0, 2**31)] = 0
    migrations: Annotated[int, Range(0, 2**31)] = 0


@dataclass(frozen=True, slots=True)
class PartitionsQuery:
    pass


@dataclass(frozen=True, slots=True)
class PartitionsReply:
    host: Name
    rows: Annotated[tuple[PartitionRow, ...], MaxLen(256)]


NODE_MESSAGES: dict[int, type] = {
    64: HostQuery,
    65: HostReply,
    66: KillVms,
    67: Killed,
    68: AdoptVm,
    69: Adopted,
    70: PartitionsQuery,
    71: PartitionsReply,
}

REQUESTS = (HostQuery, KillVms, AdoptVm, PartitionsQuery)
RESPONSES = (HostReply, Killed, Adopted, PartitionsReply)


def register_node_messages(registry: MessageRegistry) -> MessageRegistry:
    for code, cls in NODE_MESSAGES.items():
        registry.register(code, cls)
    return registry
