"""DVMS partition protocol messages (type codes 32-63) and the records they carry.

Requests and responses (every request is retried until answered or given up)::

    Isp(view, skip, hops, returning)   -> IspAck(accepted)     the ISP token moves on
    SetPartition(view)                 -> MemberState(host)    new leader: adopt + report
    StatePage(pid, version, offset)    -> MemberState(host)    the next page of its VMs
    StillValid(pid, version, leading)  -> Valid(ok)            staleness check (initiator),
                                                               leader-crash probe (leader)
    CanMerge(pid)                      -> MergeAnswer(ok)      Blocked/Blocked merge lock
    MigrateVm(pid, op, vm, dst)        -> ActionAccepted(op)   leader -> source member
    CreateVm(pid, op, vm)              -> ActionAccepted(op)   leader -> destination member
    ActionDone(pid, op, ok, reason)    -> ActionAck(op)        member -> leader, at the end
    Outcome(event_id, ok, ...)         -> OutcomeAck(event_id)  leader -> event origin
    Dissolve(pid, reason)              (one way; leases clean up if it is lost)
    KeepAlive(pid, version, seq)       (one way; refreshes members' leases)
    KeepAliveAck(pid, seq)             (one way, member -> leader: the leader's lease on
                                        the member, see membership.py)

Names follow DVMS's published code where they have a counterpart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from dvms.overlay.messages import Contact
from dvms.placement.hapolicy import HaPolicy
from dvms.placement.spec import ConstraintSpec, VmSpec
from dvms.wire.envelope import MessageRegistry
from dvms.wire.schema import MaxLen, Range

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "PARTITION_MESSAGES",
    "ActionAccepted",
    "ActionAck",
    "ActionDone",
    "CanMerge",
    "CreateVm",
    "Dissolve",
    "Event",
    "HaTag",
    "HeldImage",
    "HostState",
    "Isp",
    "IspAck",
    "KeepAlive",
    "KeepAliveAck",
    "LaunchVm",
    "MemberState",
    "MergeAnswer",
    "MigrateVm",
    "Outcome",
    "OutcomeAck",
    "PartitionState",
    "PartitionView",
    "Placed",
    "SetPartition",
    "StatePage",
    "StillValid",
    "Valid",
    "VmState",
    "WireConstraint",
    "register_partition_messages",
]

Name = Annotated[str, MaxLen(128)]
U64 = Annotated[int, Range(0, 2**64 - 1)]
Coord = Annotated[tuple[float, ...], MaxLen(24)]
Names = Annotated[tuple[Name, ...], MaxLen(4096)]
#: A file path on the hosts (an image, a kernel).
Path = Annotated[str, MaxLen(1024)]
#: The content root of a file shared between peers (the SHA-256 of its manifest).
Root = Annotated[bytes, MaxLen(32)]
#: Constraints a VM carries (see ``VmState.constraints``).
Carried = Annotated[tuple["WireConstraint", ...], MaxLen(64)]


class PartitionState(IntEnum):
    """The state of a partition (the DVMS 2 machine; see core.py). Travels as its int."""

    GROWING = 0  # first lap: recruiting nodes until a plan is found
    BLOCKED = 1  # second lap, after the first came back to the initiator without a plan
    FINISHING = 2  # a plan was found and is being applied


GROWING, BLOCKED, FINISHING = PartitionState
STATE_NAMES = {s: s.name.lower() for s in PartitionState}

T = TypeVar("T", bound="DataclassInstance")


#: (from, to) -> the names of the fields both dataclasses have.
_SHARED: dict[tuple[type, type], tuple[str, ...]] = {}


def _convert(obj: Any, to: type[T]) -> T:
    """``obj`` as a ``to``: every field the two dataclasses share copied, the others of
    ``to`` at their defaults. The conversion between a wire record and the placement
    spec it mirrors (``WireConstraint``/``ConstraintSpec``, ``LaunchVm``/``VmSpec``)."""
    shared = _SHARED.get((type(obj), to))
    if shared is None:
        names = {f.name for f in fields(to)}
        shared = tuple(f.name for f in fields(obj) if f.name in names)
        _SHARED[type(obj), to] = shared
    return to(**{name: getattr(obj, name) for name in shared})


@dataclass(frozen=True, slots=True)
class WireConstraint:
    """The wire form of a ``ConstraintSpec`` (its fields but ``where``). A type of its
    own so that the wire format changes only when this class does, never with the
    placement engine's spec."""

    kind: Name
    vms: Names = ()
    hosts: Names = ()
    groups: Annotated[tuple[Names, ...], MaxLen(256)] = ()
    resource: Name | None = None
    amount: Annotated[int, Range(0, 2**62)] | None = None
    continuous: bool = True
    soft: bool = False
    weight: Annotated[float, Range(0.0, 1e6)] = 1.0

    @classmethod
    def from_spec(cls, c: ConstraintSpec) -> WireConstraint:
        return _convert(c, cls)

    def to_spec(self) -> ConstraintSpec:
        return _convert(self, ConstraintSpec)


@dataclass(frozen=True, slots=True)
class VmState:
    """A running VM as its host reports it to a partition leader."""

    name: Name
    namespace: Name
    vcpus: Annotated[int, Range(0, 4096)]
    memory_mib: Annotated[int, Range(0, 2**40)]
    #: Measured CPU demand in CPUs (1.0 = one full core).
    cpu_demand: Annotated[float, Range(0.0, 4096.0)]
    coschedule: Annotated[int, Range(-1, 2**31)] = -1
    #: The constraints of the VM's vjob that name it (``LaunchVm.constraints``), so that
    #: a leader's repair never breaks a running vjob's constraint.
    constraints: Carried = ()


@dataclass(frozen=True, slots=True)
class HeldImage:
    """A file (VM image) a member's store holds, whole or in part: what the leader's
    image-locality score reads (``docs/placement.md``)."""

    root: Root
    #: bytes of it held here (the chunks complete)
    held: U64
    #: the file's size in bytes
    size: U64


@dataclass(frozen=True, slots=True)
class HostState:
    """What a member tells its leader about its host."""

    name: Name
    cpus: Annotated[int, Range(0, 65536)]
    memory_mib: Annotated[int, Range(0, 2**40)]
    #: On the wire: one page of them, bounded by ``[partition] state_bytes``
    #: (``MemberState.more``); a leader joins the pages.
    vms: Annotated[tuple[VmState, ...], MaxLen(65536)]
    #: Live migrations in or out of this host still running (it is not "settled").
    migrating: Annotated[int, Range(0, 4096)] = 0
    #: CPU capacity in milli-CPUs when it is not ``cpus * 1000`` (0 = cpus * 1000).
    cpu_milli: Annotated[int, Range(0, 2**40)] = 0
    #: Files this host holds, largest held first (at most ``[files] placement_images``).
    images: Annotated[tuple[HeldImage, ...], MaxLen(256)] = ()


@dataclass(frozen=True, slots=True)
class HaTag:
    """A VM's high-availability record as it travels with the VM (``dvms.ha``): the
    generation of this copy (every restart adds one; a host holding an older one fences
    its copy), the guardians holding its lease, and its policy (``HaPolicy``'s fields).
    The partition protocol passes it through untouched."""

    generation: Annotated[int, Range(1, 2**62)]
    guardians: Annotated[tuple[Contact, ...], MaxLen(16)] = ()
    #: While the owner replaces guardians: the set before (a lease, a vote needs a
    #: majority of both sets until a majority of both acknowledged the new one).
    previous: Annotated[tuple[Contact, ...], MaxLen(16)] = ()
    priority: Annotated[str, MaxLen(16)] = "medium"
    fence: Annotated[str, MaxLen(16)] = "destroy"
    attempts: Annotated[int, Range(1, 100)] = 3
    backoff_s: Annotated[float, Range(0.0, 3600.0)] = 5.0
    #: The guardian set's version within this generation: the owner adds one at each
    #: replacement. A guardian never takes an older epoch of a generation it holds, and
    #: votes only for proposers whose record is not older than its own, so guardians
    #: dropped from the set cannot form a majority of a set they were dropped from.
    epoch: Annotated[int, Range(0, 2**62)] = 0


@dataclass(frozen=True, slots=True)
class LaunchVm:
    """The wire form of a ``VmSpec`` to launch: the fields placement and creation need,
    plus the constraints the VM carries. A type of its own for the same reason as
    ``WireConstraint``."""

    name: Name
    namespace: Name
    vcpus: Annotated[int, Range(1, 4096)]
    memory_mib: Annotated[int, Range(1, 2**40)]
    networks: Annotated[tuple[Name, ...], MaxLen(64)] = ()
    schedule: Name | None = None
    coschedule: Annotated[int, Range(-1, 2**31)] = -1
    colocate: Name | None = None
    #: Set by the leader in ``CreateVm``: the vjob's constraints that name this VM (with
    #: its schedule as a fence and its colocate as a gather). They stay with the VM (its
    #: host reports them in ``VmState.constraints``; the daemon's spec travels with a
    #: migration).
    constraints: Carried = ()
    #: How the host boots it: disk image, direct kernel boot. Local paths, or
    #: ``file:NAME`` / ``file:ROOT`` that the host creating the VM fetches from its peers
    #: first (``docs/files.md``).
    disk: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: Annotated[str, MaxLen(2048)] | None = None
    cdrom: Path | None = None
    #: Roots of the ``file:`` images above, resolved by the node the launch started on
    #: (none when it could not): hosts holding them score higher (image locality).
    images: Annotated[tuple[Root, ...], MaxLen(8)] = ()
    #: Set for a VM under high availability (``dvms.ha``): the host that creates it
    #: becomes its owner and renews its lease with the guardians.
    ha: HaTag | None = None

    @classmethod
    def from_spec(cls, spec: VmSpec) -> LaunchVm:
        """The wire form of ``spec``; its HA policy (``ha = "restart"``) becomes the
        ``HaTag`` of its first generation (or of ``spec.ha_generation``)."""
        vm = _convert(spec, cls)
        policy = spec.ha_policy
        if policy is None or not policy.enabled:
            return vm
        tag = HaTag(
            max(1, spec.ha_generation),
            priority=policy.priority,
            fence=policy.fence,
            attempts=policy.restart_attempts,
            backoff_s=float(policy.restart_backoff_s),
        )
        return replace(vm, ha=tag)

    def to_spec(self) -> VmSpec:
        spec = _convert(self, VmSpec)
        tag = self.ha
        if tag is None:
            return spec
        policy = HaPolicy(
            "restart",
            priority=tag.priority,
            restart_attempts=tag.attempts,
            restart_backoff_s=tag.backoff_s,
            fence=tag.fence,
        )
        return replace(spec, ha_policy=policy, ha_generation=tag.generation)


@dataclass(frozen=True, slots=True)
class Event:
    """A problem a partition exists to solve. ``kind``: ``overload`` (the origin's host
    demand exceeds its capacity) or ``launch`` (place ``vms`` under ``constraints``)."""

    kind: Annotated[str, MaxLen(16)]
    origin: Contact
    event_id: U64
    vms: Annotated[tuple[LaunchVm, ...], MaxLen(1024)] = ()
    constraints: Annotated[tuple[WireConstraint, ...], MaxLen(1024)] = ()
    #: Per VM of ``vms``: the version of its name's claim in the DHT directory (set by
    #: the entry node; empty without the directory), so that the creating node writes
    #: the location record over it without reading it first.
    claims: Annotated[tuple[Annotated[int, Range(0, 2**62)], ...], MaxLen(1024)] = ()


@dataclass(frozen=True, slots=True)
class PartitionView:
    """One version of a partition, as its leader publishes it. ``members`` lists the
    newest member first (the leader is ``members[0]`` except right after a merge)."""

    pid: U64
    version: U64
    initiator: Contact
    leader: Contact
    members: Annotated[tuple[Contact, ...], MaxLen(1024)]
    state: PartitionState
    events: Annotated[tuple[Event, ...], MaxLen(64)]
    #: The initiator's Vivaldi coordinate (wire form): vivaldi recruitment measures
    #: predicted RTT from it.
    origin_coord: Coord = ()
    lap: Annotated[int, Range(1, 2)] = 1
    #: Why the last leader's solver found no plan (shown to the user if the event fails).
    last_reason: Annotated[str, MaxLen(512)] = ""

    def member_ids(self) -> set[int]:
        return {m.node_id for m in self.members}


@dataclass(frozen=True, slots=True)
class Isp:
    view: PartitionView
    #: Nodes the ISP must not be sent to in this lap (busy in other partitions, refused,
    #: or unreachable): the "shortcut" over a foreign partition.
    skip: Annotated[tuple[Annotated[int, Range(0, 2**160 - 1)], ...], MaxLen(4096)] = ()
    hops: Annotated[int, Range(0, 2**31)] = 0
    #: True when the lap is over and the ISP is going back to its initiator.
    returning: bool = False


@dataclass(frozen=True, slots=True)
class IspAck:
    accepted: bool


@dataclass(frozen=True, slots=True)
class SetPartition:
    view: PartitionView


@dataclass(frozen=True, slots=True)
class MemberState:
    pid: U64
    version: U64
    host: HostState | None
    #: 0: ``host`` holds every VM of the host (or its last page). Else the index of the
    #: host's next VM: its leader asks for the rest with ``StatePage(offset=more)``.
    more: U64 = 0


@dataclass(frozen=True, slots=True)
class StatePage:
    """A leader asks a member for the VMs of its host from ``offset`` on: the page of
    the state the member reported for partition ``pid`` (a snapshot taken at its
    ``SetPartition``, so that pages do not shift under a VM that came or went)."""

    pid: U64
    version: U64
    offset: U64


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pid: U64
    version: U64
    #: The leader's number for this round of keep-alives (0: sent by an ISP holder, not
    #: to be acknowledged); members echo it in ``KeepAliveAck``.
    seq: U64 = 0


@dataclass(frozen=True, slots=True)
class KeepAliveAck:
    """Member -> leader: the keep-alive round ``seq`` of partition ``pid`` refreshed my
    lease. The leader knows from it that the member's lease runs at least until that
    round's sending time + ``lease_s`` (its own clock), and stops counting on a member
    past that bound. ``seq`` 0: I follow another leader of ``pid`` (let go of me)."""

    pid: U64
    seq: U64


@dataclass(frozen=True, slots=True)
class Dissolve:
    pid: U64
    reason: Annotated[str, MaxLen(256)]


@dataclass(frozen=True, slots=True)
class StillValid:
    """To the initiator (staleness check): do you still hold partition ``pid``? With
    ``leading``, to the leader a member last heard of (leader-crash detection): do you
    lead it or hold its ISP?"""

    pid: U64
    version: U64
    leading: bool = False


@dataclass(frozen=True, slots=True)
class Valid:
    ok: bool


@dataclass(frozen=True, slots=True)
class CanMerge:
    pid: U64


@dataclass(frozen=True, slots=True)
class MergeAnswer:
    ok: bool


@dataclass(frozen=True, slots=True)
class MigrateVm:
    pid: U64
    op: U64
    vm: Name
    namespace: Name
    dst: Contact
    dst_host: Name


@dataclass(frozen=True, slots=True)
class CreateVm:
    pid: U64
    op: U64
    vm: LaunchVm
    #: The version of the VM's name claim in the directory (``Event.claims``; 0: none).
    claim_seq: Annotated[int, Range(0, 2**62)] = 0


@dataclass(frozen=True, slots=True)
class ActionAccepted:
    """A member's immediate answer to MigrateVm/CreateVm: it started (or refused)."""

    op: U64
    ok: bool
    reason: Annotated[str, MaxLen(512)] = ""


@dataclass(frozen=True, slots=True)
class ActionDone:
    """Member -> leader when the driver call ended (retried until acknowledged)."""

    pid: U64
    op: U64
    ok: bool
    reason: Annotated[str, MaxLen(512)] = ""


@dataclass(frozen=True, slots=True)
class ActionAck:
    op: U64


@dataclass(frozen=True, slots=True)
class Placed:
    vm: Name
    namespace: Name
    host: Name


@dataclass(frozen=True, slots=True)
class Outcome:
    """The leader tells an event's origin how its event ended."""

    event_id: U64
    ok: bool
    reason: Annotated[str, MaxLen(2048)] = ""
    placed: Annotated[tuple[Placed, ...], MaxLen(1024)] = ()
    partition_size: Annotated[int, Range(0, 2**31)] = 0
    migrations: Annotated[int, Range(0, 2**31)] = 0


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    event_id: U64


PARTITION_MESSAGES: dict[int, type] = {
    32: Isp,
    33: IspAck,
    34: SetPartition,
    35: MemberState,
    36: KeepAlive,
    37: Dissolve,
    38: StillValid,
    39: Valid,
    40: CanMerge,
    41: MergeAnswer,
    42: MigrateVm,
    43: CreateVm,
    44: ActionDone,
    45: Outcome,
    46: OutcomeAck,
    47: ActionAccepted,
    48: ActionAck,
    49: KeepAliveAck,
    50: StatePage,
}

REQUESTS = (
    Isp,
    SetPartition,
    StatePage,
    StillValid,
    CanMerge,
    MigrateVm,
    CreateVm,
    Outcome,
    ActionDone,
)
RESPONSES = (IspAck, MemberState, Valid, MergeAnswer, ActionAccepted, OutcomeAck, ActionAck)
ONE_WAY = (KeepAlive, Dissolve, KeepAliveAck)


def register_partition_messages(registry: MessageRegistry) -> MessageRegistry:
    for code, cls in PARTITION_MESSAGES.items():
        registry.register(code, cls)
    return registry
