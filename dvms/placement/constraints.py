"""Placement constraints as plain, frozen data, and their construction from user specs.

The solver (``filters.py``) and the independent checker (``checker.py``) each give these
records their meaning with their own code. VMs are named by key (see ``Vm.key``), hosts
by name. Semantics (BtrPlace's and minimega's):

- ``Ban``/``Fence``: a running VM's host is outside / inside ``hosts``.
- ``Spread``: running members on pairwise distinct hosts. ``Gather``: all on one host.
- ``Among``: all running members inside one of ``groups`` (disjoint host sets).
- ``Lonely``: a running member shares its host only with members.
- ``Split``: no host runs VMs of two different parts.
- ``SplitAmong``: each part's running VMs inside one of ``groups``, two parts never
  in the same group (among per part + split over groups).
- ``Root``: a running VM never moves (continuous only).
- ``ResourceCapacity``: summed ``resource`` use on ``hosts`` <= ``amount``;
  ``RunningCapacity``: number of running VMs on ``hosts`` <= ``amount``.
- ``Preserve``: the VM is allocated at least ``amount`` of ``resource`` at the end.
- ``Running``/``Ready``/``Sleeping``: forced final state (sleeping: suspended on its
  host, from running).
- ``Offline``: no VM runs on ``hosts`` at the end (they are emptied to be switched off).
- ``Schedule`` (pin), ``Coschedule`` (at most ``amount`` other VMs on the VM's host),
  ``Colocate`` (``vm`` shares ``target``'s host): minimega.
- ``Prefer``: soft spread / gather / fence, scored, never enforced.

``continuous`` constraints also hold at every step of a plan and must already hold in
the current placement (they preserve, they cannot repair).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "VM_GROUPS",
    "Among",
    "Ban",
    "Colocate",
    "Constraint",
    "Coschedule",
    "Fence",
    "Gather",
    "Lonely",
    "Offline",
    "Prefer",
    "Preserve",
    "Ready",
    "ResourceCapacity",
    "Root",
    "Running",
    "RunningCapacity",
    "Schedule",
    "Sleeping",
    "Split",
    "SplitAmong",
    "Spread",
]


@dataclass(frozen=True, slots=True)
class Ban:
    vms: tuple[str, ...]
    hosts: frozenset[str]
    continuous: bool = False
    kind = "ban"


@dataclass(frozen=True, slots=True)
class Fence:
    vms: tuple[str, ...]
    hosts: frozenset[str]
    continuous: bool = False
    kind = "fence"


@dataclass(frozen=True, slots=True)
class Spread:
    vms: tuple[str, ...]
    continuous: bool = True
    kind = "spread"


@dataclass(frozen=True, slots=True)
class Gather:
    vms: tuple[str, ...]
    continuous: bool = False
    kind = "gather"


@dataclass(frozen=True, slots=True)
class Among:
    vms: tuple[str, ...]
    groups: tuple[frozenset[str], ...]
    continuous: bool = False
    kind = "among"


@dataclass(frozen=True, slots=True)
class Lonely:
    vms: tuple[str, ...]
    continuous: bool = False
    kind = "lonely"


@dataclass(frozen=True, slots=True)
class Split:
    """No host runs VMs of two different ``parts`` (BtrPlace ``split``)."""

    parts: tuple[tuple[str, ...], ...]
    continuous: bool = False
    kind = "split"


@dataclass(frozen=True, slots=True)
class SplitAmong:
    """Each of ``parts`` inside one of ``groups`` (disjoint host sets), a different
    group per part (BtrPlace ``splitAmong``)."""

    parts: tuple[tuple[str, ...], ...]
    groups: tuple[frozenset[str], ...]
    continuous: bool = False
    kind = "splitAmong"


@dataclass(frozen=True, slots=True)
class Root:
    vms: tuple[str, ...]
    continuous: bool = True
    kind = "root"


@dataclass(frozen=True, slots=True)
class ResourceCapacity:
    hosts: frozenset[str]
    resource: str
    amount: int
    continuous: bool = False
    kind = "resourceCapacity"


@dataclass(frozen=True, slots=True)
class RunningCapacity:
    hosts: frozenset[str]
    amount: int
    continuous: bool = False
    kind = "runningCapacity"


@dataclass(frozen=True, slots=True)
class Preserve:
    vms: tuple[str, ...]
    resource: str
    amount: int
    continuous: bool = False
    kind = "preserve"


@dataclass(frozen=True, slots=True)
class Running:
    vms: tuple[str, ...]
    continuous: bool = False
    kind = "running"


@dataclass(frozen=True, slots=True)
class Ready:
    vms: tuple[str, ...]
    continuous: bool = False
    kind = "ready"


@dataclass(frozen=True, slots=True)
class Sleeping:
    """The VMs end suspended on their host (BtrPlace ``sleeping``)."""

    vms: tuple[str, ...]
    continuous: bool = False
    kind = "sleeping"


@dataclass(frozen=True, slots=True)
class Offline:
    """No VM runs on ``hosts`` at the end (BtrPlace ``offline``): their VMs leave."""

    hosts: frozenset[str]
    continuous: bool = False
    kind = "offline"


@dataclass(frozen=True, slots=True)
class Schedule:
    vm: str
    host: str
    continuous: bool = False
    kind = "schedule"


@dataclass(frozen=True, slots=True)
class Coschedule:
    vms: tuple[str, ...]
    amount: int
    continuous: bool = False
    kind = "coschedule"


@dataclass(frozen=True, slots=True)
class Colocate:
    vm: str
    target: str
    continuous: bool = False
    kind = "colocate"


@dataclass(frozen=True, slots=True)
class Prefer:
    """A soft constraint: ``what`` is ``spread``, ``gather`` or ``fence``."""

    what: str
    vms: tuple[str, ...]
    hosts: frozenset[str] = frozenset()
    weight: float = 1.0
    continuous: bool = False
    kind = "prefer"


Constraint = (
    Ban
    | Fence
    | Spread
    | Gather
    | Among
    | Lonely
    | Split
    | SplitAmong
    | Root
    | ResourceCapacity
    | RunningCapacity
    | Preserve
    | Running
    | Ready
    | Sleeping
    | Offline
    | Schedule
    | Coschedule
    | Colocate
    | Prefer
)

#: The constraints over a set of VMs alone (``Kind(vms, continuous)``), by kind.
VM_GROUPS: dict[str, type[Spread | Gather | Lonely]] = {
    "spread": Spread,
    "gather": Gather,
    "lonely": Lonely,
}
