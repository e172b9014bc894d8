"""Effects and events of the partition core (what ``PartitionCore`` returns).

Effects ask the shell to do something: ``Solve`` (run the solver, possibly slowly),
``BootVm`` and ``MigrateVmTo`` (act on this node's hypervisor: the driver calls);
``Send``/``Emit`` come from ``dvms.effects``; ``PeerUnreachable``, ``ClaimNames``,
``RecordLocation`` and ``ReleaseNames`` are carried out by the node glue on the overlay.
``PartitionEffect`` is their union. Events (inside ``Emit``) tell the application what
happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvms.effects import Address, Emit, Send
from dvms.partition.messages import LaunchVm, PartitionView, Placed
from dvms.partition.solve import SolveRequest

__all__ = [
    "DRIVER_CALLS",
    "OVERLAY_EFFECTS",
    "BootVm",
    "ClaimNames",
    "DriverCall",
    "EventDone",
    "EventStarted",
    "MigrateVmTo",
    "OverlayBound",
    "PartitionChanged",
    "PartitionEffect",
    "PartitionReleased",
    "PeerUnreachable",
    "PlanApplied",
    "RecordLocation",
    "ReleaseNames",
    "Solve",
]


@dataclass(frozen=True, slots=True)
class Solve:
    """Run ``run_solve(request)`` (pure, possibly slow: ``dvms.partition.solve``) and
    feed its outcome to ``on_computed(token, outcome)``. ``request.size`` (hosts, vms)
    lets a simulator charge a modelled solver time."""

    token: int
    request: SolveRequest


@dataclass(frozen=True, slots=True)
class BootVm:
    """Driver call: create and start ``vm`` on this node's hypervisor. Answer with
    ``on_driver_result(op, ok, reason)``."""

    op: int
    vm: LaunchVm


@dataclass(frozen=True, slots=True)
class MigrateVmTo:
    """Driver call: move VM ``vm`` of ``namespace`` from this node's hypervisor to host
    ``dst_host``, whose node listens at ``dst_addr``. Answer with
    ``on_driver_result(op, ok, reason)``."""

    op: int
    vm: str
    namespace: str
    dst_host: str
    dst_addr: Address


#: The driver calls (effects that act on this node's hypervisor).
DriverCall = BootVm | MigrateVmTo
DRIVER_CALLS = (BootVm, MigrateVmTo)


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """A peer let every attempt of a partition request time out: the overlay glue
    (``dvms.stack.core``) marks its routing-table contact failed."""

    node_id: int


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Before a launch event starts: claim its VM names, ``(namespace, name)`` pairs, in
    the DHT directory (names are unique per namespace). The glue answers with
    ``PartitionCore.on_names_claimed(event_id, taken, seqs=...)``."""

    event_id: int
    names: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RecordLocation:
    """A VM was created on, or migrated to, ``host`` (node ``node_id``): write its
    directory record."""

    namespace: str
    name: str
    host: str
    node_id: int
    #: The version of the record this one replaces when known (a launch's name claim),
    #: else 0 and the record is read first.
    after: int = 0


@dataclass(frozen=True, slots=True)
class ReleaseNames:
    """A launch event ended: stop republishing its name claims; with ``free``, a name
    whose record is still this event's claim is written free again."""

    event_id: int
    free: bool


#: Effects the node glue turns into overlay operations (never reach a shell).
OverlayBound = PeerUnreachable | ClaimNames | RecordLocation | ReleaseNames
OVERLAY_EFFECTS = (PeerUnreachable, ClaimNames, RecordLocation, ReleaseNames)

#: Everything a partition core returns.
PartitionEffect = Send | Emit | Solve | BootVm | MigrateVmTo | OverlayBound


@dataclass(frozen=True, slots=True)
class EventDone:
    """An event this node originated has ended (at this node: the origin)."""

    event_id: int
    kind: str
    ok: bool
    reason: str
    started: float
    finished: float
    placed: tuple[Placed, ...] = ()
    partition_size: int = 0
    migrations: int = 0


@dataclass(frozen=True, slots=True)
class EventStarted:
    """This node detected a problem (or accepted a launch) and will handle it."""

    event_id: int
    kind: str


@dataclass(frozen=True, slots=True)
class PlanApplied:
    """A leader finished applying a plan (``duration`` from first action to last)."""

    pid: int
    size: int
    actions: int
    migrations: int
    failed: int
    duration: float


@dataclass(frozen=True, slots=True)
class PartitionChanged:
    view: PartitionView
    role: str  # "leader" or "member"


@dataclass(frozen=True, slots=True)
class PartitionReleased:
    pid: int
    reason: str
