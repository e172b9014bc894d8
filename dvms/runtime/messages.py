"""Node control-plane messages (type codes 64-95): what one daemon asks another on a
user's behalf. Unlike the protocol messages these are answered by the Trio layer
(``dvms.runtime.node``), because answering them means asking the hypervisor.

::

    HostQuery(namespace, vms)       -> HostReply(name, cpus, memory_mib, uri, vms)
    KillVms(namespace, names)       -> Killed(host, killed, errors)
    AdoptVm(vm)                     -> Adopted(ok, reason)       migration emulation
    PartitionsQuery()               -> PartitionsReply(host, rows)
    StateRead(name)                 -> StateValue(record)        the arbiter of a state
    StateCas(record)                -> StateCasReply(ok, seq)    head (services/state.py)
    VmOp(namespace, op, names)      -> VmOpDone(host, done, errors)
    MoveVm(namespace, name, dst)    -> Adopted(ok, reason)       ``vm migrate``
    RunCmd(namespace, words)        -> RunOutput(host, ok, text) ``ns run``
    NetOp(namespace, bridge, ...)   -> VmOpDone                  ``ns bridge``
    VjobsQuery()                    -> VjobsReply(rows)          ``vjob list``
    EventsQuery(since, limit)       -> EventsReply(host, rows)   ``events --all``
    HaQuery(namespace)              -> HaReply(host, rows)       restarts, ``vm info``
    KeysQuery(), KeysChange(...)    -> KeysReply                 ``keys`` (keys_messages.py)

``namespace`` None means every namespace. Every request is retried by the asker until
answered or given up; answering twice is harmless (``KillVms`` of a VM already gone is
reported as not found, ``AdoptVm`` of a VM already here is refused by the hypervisor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dvms.hypervisor.base import VmInfo
from dvms.overlay.messages import Record
from dvms.partition.messages import LaunchVm
from dvms.runtime.services.files_messages import FILE_MESSAGES, FILE_REQUESTS, FILE_RESPONSES
from dvms.runtime.services.keys_messages import KEY_MESSAGES, KEY_REQUESTS, KEY_RESPONSES
from dvms.wire.envelope import MessageRegistry
from dvms.wire.schema import MaxLen, Range, encoded_size

__all__ = [
    "NODE_MESSAGES",
    "AdoptVm",
    "Adopted",
    "EventRow",
    "EventsQuery",
    "EventsReply",
    "HaQuery",
    "HaReply",
    "HaRow",
    "HostQuery",
    "HostReply",
    "KillVms",
    "Killed",
    "MoveVm",
    "NetOp",
    "PartitionRow",
    "PartitionsQuery",
    "PartitionsReply",
    "RunCmd",
    "RunOutput",
    "StateCas",
    "StateCasReply",
    "StateRead",
    "StateValue",
    "VjobRow",
    "VjobsQuery",
    "VjobsReply",
    "VmOp",
    "VmOpDone",
    "VmRow",
    "encoded_size",
    "register_node_messages",
]

Name = Annotated[str, MaxLen(128)]
Text = Annotated[str, MaxLen(512)]
U64 = Annotated[int, Range(0, 2**64 - 1)]
#: Rows per reply at most; a host's reply is also bounded by its encoded size
#: (``[monitor] reply_bytes``, at most ``MAX_REPLY_BYTES``).
MAX_ROWS = 512
#: Encoded bytes of a host's reply at most: under the daemon's UDP limit (65,507) less
#: the envelope around it.
MAX_REPLY_BYTES = 65000


@dataclass(frozen=True, slots=True)
class VmRow:
    """One VM of a host on the wire; kept apart from ``VmInfo`` (which grows freely) for
    wire stability, and built from it only by ``VmRow.of``."""

    name: Name
    namespace: Name
    state: Annotated[str, MaxLen(16)]
    vcpus: Annotated[int, Range(0, 4096)]
    memory_mib: Annotated[int, Range(0, 2**40)]
    #: Network interfaces: a host with a VM of a namespace that has some is on the
    #: namespace's tunnel mesh.
    nics: Annotated[int, Range(0, 1024)] = 0
    #: High availability: ``ok`` or ``fenced`` ("" for a VM without it), and the
    #: generation of this copy (docs/ha.md).
    ha: Annotated[str, MaxLen(16)] = ""
    ha_generation: Annotated[int, Range(0, 2**62)] = 0

    @classmethod
    def of(cls, info: VmInfo, ha: tuple[str, int] = ("", 0)) -> VmRow:
        return cls(
            info.name,
            info.namespace,
            info.state.value,
            info.vcpus,
            info.memory_mib,
            min(info.nics, 1024),
            ha[0],
            ha[1],
        )


@dataclass(frozen=True, slots=True)
class HostQuery:
    namespace: Name | None = None
    #: False: only the host's name and size (learning peers' names)
    vms: bool = True
    #: The first VM row wanted: a host with more VMs than one reply carries answers
    #: page by page (``HostReply.truncated``; ``hostpages.complete`` asks the rest).
    offset: Annotated[int, Range(0, 2**32)] = 0
    #: The listing a later page is cut from (``HostReply.listing`` of the first page);
    #: 0: the host's list as it is now.
    listing: Annotated[int, Range(0, 2**64 - 1)] = 0


@dataclass(frozen=True, slots=True)
class HostReply:
    name: Name
    cpus: Annotated[int, Range(0, 65536)]
    memory_mib: Annotated[int, Range(0, 2**40)]
    uri: Text
    vms: Annotated[tuple[VmRow, ...], MaxLen(MAX_ROWS)] = ()
    #: True when the host has more VMs after these (ask again from ``offset`` + rows).
    truncated: bool = False
    #: The namespace launches this node is carrying out (``launch_token``): a running
    #: ``ns schedule status`` row its launcher does not list here was interrupted.
    launches: Annotated[tuple[Text, ...], MaxLen(64)] = ()
    #: A reply with more pages: the listing they are cut from (ask them with it), so
    #: VMs that come, go or are read again in another order meanwhile shift no row.
    listing: Annotated[int, Range(0, 2**64 - 1)] = 0


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
class HaQuery:
    """The HA restarts a node drives as a guardian (of ``namespace``; None: all)."""

    namespace: Name | None = None


@dataclass(frozen=True, slots=True)
class HaRow:
    """One VM a guardian is restarting (``restarting``) or gave up on (``failed``):
    between its old copy's end and its new copy's adoption no host lists it."""

    name: Name
    namespace: Name
    state: Annotated[str, MaxLen(16)]
    generation: Annotated[int, Range(0, 2**62)]
    vcpus: Annotated[int, Range(0, 4096)] = 0
    memory_mib: Annotated[int, Range(0, 2**40)] = 0


@dataclass(frozen=True, slots=True)
class HaReply:
    host: Name
    rows: Annotated[tuple[HaRow, ...], MaxLen(MAX_ROWS)] = ()


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One partition as this node saw it (members by host name where known); the wire
    form of a partition log record, built only by ``PartitionLog.rows``."""

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


@dataclass(frozen=True, slots=True)
class StateRead:
    """Ask the arbiter of a state head for its current version."""

    name: Annotated[str, MaxLen(256)]


@dataclass(frozen=True, slots=True)
class StateValue:
    record: Record | None


@dataclass(frozen=True, slots=True)
class StateCas:
    """Store ``record`` if the arbiter holds version ``record.seq - 1`` (0: none)."""

    record: Record


@dataclass(frozen=True, slots=True)
class StateCasReply:
    ok: bool
    #: the version the arbiter holds after the call
    seq: Annotated[int, Range(0, 2**63 - 1)]
    reason: Text = ""


@dataclass(frozen=True, slots=True)
class VmOp:
    """minimega's VM verbs on this host's VMs of ``namespace``: ``start`` (resume or
    boot), ``stop`` (pause), ``kill`` (power off, keep the definition: QUIT),
    ``flush`` (forget QUIT/ERROR VMs), ``clear`` (kill + forget every VM of the
    namespace here, and its bridges)."""

    namespace: Name
    op: Annotated[str, MaxLen(8)]
    names: Annotated[tuple[Name, ...], MaxLen(4096)] = ()
    #: ``clear``: act on at most this many VMs, then answer (``VmOpDone.more`` says
    #: whether some remain: the asker sends it again); 0 = the host's own limit.
    limit: Annotated[int, Range(0, 4096)] = 0


@dataclass(frozen=True, slots=True)
class VmOpDone:
    host: Name
    done: Annotated[tuple[Name, ...], MaxLen(4096)]
    errors: Annotated[tuple[Text, ...], MaxLen(64)] = ()
    #: VMs of the namespace remain on the host (a bounded ``clear``): ask again.
    more: bool = False


@dataclass(frozen=True, slots=True)
class MoveVm:
    """Migrate ``namespace/name`` from this host to ``dst_host`` at ``dst``; answered
    with ``Adopted`` once it runs there (or why not)."""

    namespace: Name
    name: Name
    dst_host: Name
    dst_ip: Annotated[str, MaxLen(64)]
    dst_port: Annotated[int, Range(1, 65535)]


@dataclass(frozen=True, slots=True)
class RunCmd:
    """``ns run``: run ``words`` here, in ``namespace``, as a command from a peer."""

    namespace: Name
    words: Annotated[tuple[Text, ...], MaxLen(256)]


@dataclass(frozen=True, slots=True)
class RunOutput:
    host: Name
    ok: bool
    text: Annotated[str, MaxLen(48_000)]


@dataclass(frozen=True, slots=True)
class NetOp:
    """Make (``delete`` False) or remove this host's part of ``namespace``'s bridge
    ``bridge``: the bridge plus ``kind`` tunnels (key ``key``) to ``peers``."""

    namespace: Name
    bridge: Name
    kind: Annotated[str, MaxLen(8)]
    key: Annotated[int, Range(0, 2**24 - 1)]
    peers: Annotated[tuple[Annotated[str, MaxLen(64)], ...], MaxLen(1024)] = ()
    delete: bool = False


@dataclass(frozen=True, slots=True)
class VjobRow:
    """One vjob as a node holds its record (``vjob list``)."""

    id: Annotated[str, MaxLen(32)]
    name: Name
    namespace: Name
    state: Annotated[str, MaxLen(16)]
    vms: Annotated[int, Range(0, 2**31)]
    placed: Annotated[int, Range(0, 2**31)]
    owner: Name
    reason: Text
    #: when the record was last written (seconds since the epoch): the newest copy wins
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class VjobsQuery:
    pass


@dataclass(frozen=True, slots=True)
class VjobsReply:
    rows: Annotated[tuple[VjobRow, ...], MaxLen(MAX_ROWS)]
    #: True when the node holds more vjobs than one reply carries (the newest are sent)
    truncated: bool = False


#: Events per ``EventsReply``: the newest that fit one datagram.
MAX_EVENT_ROWS = 100


@dataclass(frozen=True, slots=True)
class EventRow:
    """One entry of a node's event stream (``services/events.py``)."""

    #: this node's sequence number of the entry (from 1)
    seq: U64
    #: when it happened, seconds since the epoch (this node's clock)
    ts: float
    host: Name
    #: what kind of thing happened (``events.EVENT_TYPES``)
    type: Annotated[str, MaxLen(32)]
    #: what it happened to: a partition id, a VM, a vjob id, a host
    subject: Name
    message: Annotated[str, MaxLen(256)]


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """The asked node's events after ``since`` (seconds since the epoch), newest
    ``limit`` of them."""

    since: float = 0.0
    limit: Annotated[int, Range(1, MAX_EVENT_ROWS)] = MAX_EVENT_ROWS


@dataclass(frozen=True, slots=True)
class EventsReply:
    host: Name
    rows: Annotated[tuple[EventRow, ...], MaxLen(MAX_EVENT_ROWS)]


NODE_MESSAGES: dict[int, type] = {
    64: HostQuery,
    65: HostReply,
    66: KillVms,
    67: Killed,
    68: AdoptVm,
    69: Adopted,
    70: PartitionsQuery,
    71: PartitionsReply,
    72: StateRead,
    73: StateValue,
    74: StateCas,
    75: StateCasReply,
    76: VmOp,
    77: VmOpDone,
    78: MoveVm,
    79: RunCmd,
    80: RunOutput,
    81: NetOp,
    82: VjobsQuery,
    83: VjobsReply,
    86: HaQuery,
    87: HaReply,
    94: EventsQuery,
    95: EventsReply,
}

REQUESTS = (
    HostQuery, KillVms, AdoptVm, PartitionsQuery, StateRead, StateCas, VmOp, MoveVm, RunCmd, NetOp,
    VjobsQuery, EventsQuery, HaQuery, *FILE_REQUESTS, *KEY_REQUESTS,
)  # fmt: skip
RESPONSES = (
    HostReply, Killed, Adopted, PartitionsReply, StateValue, StateCasReply, VmOpDone, RunOutput,
    VjobsReply, EventsReply, HaReply, *FILE_RESPONSES, *KEY_RESPONSES,
)  # fmt: skip


def register_node_messages(registry: MessageRegistry) -> MessageRegistry:
    # registered one by one: a code used twice is refused (ValueError), never overwritten
    for code, cls in [*NODE_MESSAGES.items(), *FILE_MESSAGES.items(), *KEY_MESSAGES.items()]:
        registry.register(code, cls)
    return registry
