"""Effects and events of the partition core (what ``PartitionCore`` returns).

Effects ask the shell to do something: ``Compute`` (run the solver, possibly slowly) and
``DriverCall`` (act on this node's hypervisor); ``Send``/``Emit`` come from
``dvms.effects``. Events (inside ``Emit``) tell the application what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dvms.partition.messages import PartitionView, Placed

__all__ = [
    "OVERLAY_EFFECTS",
    "ClaimNames",
    "Compute",
    "DriverCall",
    "EventDone",
    "EventStarted",
    "PartitionChanged",
    "PartitionReleased",
    "PeerUnreachable",
    "PlanApplied",
    "RecordLocation",
    "ReleaseNames",
]


@dataclass(frozen=True, slots=True)
class Compute:
    """Run ``fn()`` (pure, possibly slow) and feed its result to ``on_computed``.
    ``size`` (hosts, vms) lets a simulator charge a modelled solver time."""

    token: int
    fn: Callable[[], Any]
    size: tuple[int, int]


@dataclass(frozen=True, slots=True)
class DriverCall:
    """Act on this node's hypervisor: ``kind`` is ``migrate`` (args: vm, namespace,
    dst_host, dst_addr) or ``create`` (args: vm = LaunchVm). Answer with
    ``on_driver_result(op, ok, reason)``."""

    op: int
    kind: str
    args: dict[str, Any]


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
OVERLAY_EFFECTS = (PeerUnreachable, ClaimNames, RecordLocation, ReleaseNames)


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
