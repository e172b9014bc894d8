"""The engine's model: immutable hosts, VMs and a snapshot of a partition.

A ``Snapshot`` is what the partition leader hands the solver: the hosts it may use and
every VM it knows about (running VMs with their host, ready VMs without one). Nothing
here mutates; the solver copies what it needs into its own working state.

Resources are named strings. Three come from minimega's host stats (``vcpus``,
``memory_mib``, ``nics``), one from measurements (``cpu_demand``, milli-CPUs, only used
for overload relief), and any other name (BtrPlace's ``cpu``, ``mem``...) is an *extra*
resource: a VM consumes ``usage[name]`` (default 0), a host offers ``capacity[name]``.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from dvms.placement.config import PlacementConfig
from dvms.placement.spec import VmSpec

__all__ = [
    "CPU_DEMAND",
    "MEMORY",
    "NICS",
    "STATES",
    "VCPUS",
    "Host",
    "PlacementError",
    "Snapshot",
    "Vm",
    "paused_gc",
    "vm_from_spec",
]

VCPUS = "vcpus"
MEMORY = "memory_mib"
NICS = "nics"
#: Measured CPU demand in milli-CPUs (overload relief only).
CPU_DEMAND = "cpu_demand"
#: VM states the engine knows: ``running`` (on a host), ``ready`` (not placed),
#: ``sleeping`` (suspended on a host: kept where it is, consumes nothing).
STATES = ("running", "ready", "sleeping")


class PlacementError(ValueError):
    """Bad input to the engine (unknown host, negative size, bad constraint...).

    The message names the problem; nothing is returned with it (no partial result).
    """


def _check_amounts(owner: str, what: str, amounts: Mapping[str, int]) -> None:
    for name, value in amounts.items():
        if not isinstance(name, str) or not name:
            raise PlacementError(f"{owner}: {what} names must be non-empty strings")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PlacementError(
                f"{owner}: {what} {name!r} must be a non-negative integer, got {value!r}"
            )


@dataclass(frozen=True, slots=True)
class Host:
    """A hypervisor host. ``cpus``/``memory_mib`` of 0 mean "not described" (no ceiling,
    and the matching minimega load counts as 0). ``nics`` is a NIC budget (None = none)."""

    name: str
    cpus: int = 0
    memory_mib: int = 0
    nics: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Mapping[str, int] = field(default_factory=dict)
    overcommit: Mapping[str, float] = field(default_factory=dict)
    online: bool = True
    #: Images (files a VM boots from, by id: a content root or a name) this host holds,
    #: as the fraction of each one's bytes held here (a partial copy counts in part).
    #: Only the image-locality score reads it (``PlacementConfig.image_locality_weight``).
    images: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PlacementError("host name must be a non-empty string")
        for attr in ("cpus", "memory_mib"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlacementError(
                    f"host {self.name}: {attr} must be a non-negative integer, got {value!r}"
                )
        if self.nics is not None and (not isinstance(self.nics, int) or self.nics < 0):
            raise PlacementError(f"host {self.name}: nics must be >= 0, got {self.nics!r}")
        _check_amounts(f"host {self.name}", "capacity", self.capacity)
        for res, ratio in self.overcommit.items():
            if not isinstance(ratio, int | float) or ratio < 1.0:
                raise PlacementError(
                    f"host {self.name}: overcommit ratio for {res!r} must be >= 1.0, got {ratio!r}"
                )
        for image, held in self.images.items():
            if not isinstance(image, str) or not image:
                raise PlacementError(f"host {self.name}: image ids must be non-empty strings")
            if isinstance(held, bool) or not isinstance(held, int | float) or not 0 <= held <= 1:
                raise PlacementError(
                    f"host {self.name}: image {image!r} held must be a fraction in [0, 1], "
                    f"got {held!r}"
                )

    def limit(self, resource: str, config: PlacementConfig) -> float:
        """How much of ``resource`` the VMs on this host may use (``inf`` = no ceiling)."""
        if resource in self.capacity:
            return math.floor(self.capacity[resource] * self.overcommit.get(resource, 1.0))
        if resource == VCPUS:
            ratio = self.overcommit.get(VCPUS, config.cpu_overcommit)
            return math.inf if ratio is None or not self.cpus else math.floor(self.cpus * ratio)
        if resource == MEMORY:
            ratio = self.overcommit.get(MEMORY, config.memory_overcommit)
            if ratio is None or not self.memory_mib:
                return math.inf
            return math.floor(self.memory_mib * ratio)
        if resource == NICS:
            return math.inf if self.nics is None else self.nics
        if resource == CPU_DEMAND:
            if not self.cpus:
                return math.inf
            return math.floor(self.cpus * 1000 * config.overload_threshold)
        return math.inf


@dataclass(frozen=True, slots=True)
class Vm:
    """A VM as the engine sees it. ``key`` (``namespace/name`` or ``name``) identifies it.

    ``cpu_demand`` is the measured CPU use in CPUs (None = unknown, taken as ``vcpus``).
    ``coschedule`` is minimega's per-VM limit: at most ``coschedule`` *other* VMs on its
    host (-1 = no limit). ``durations`` overrides action durations in seconds
    (``migrate``, ``boot``, ``shutdown``, ``allocate``; BtrPlace attribute names).
    """

    name: str
    namespace: str = ""
    vcpus: int = 1
    memory_mib: int = 2048
    nics: int = 0
    host: str | None = None
    state: str = "running"
    cpu_demand: float | None = None
    coschedule: int = -1
    usage: Mapping[str, int] = field(default_factory=dict)
    durations: Mapping[str, int] = field(default_factory=dict)
    #: Images the VM boots from (id -> size in bytes): hosts holding them score higher
    #: at launch (image locality, ``docs/placement.md``); they are no constraint.
    images: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PlacementError("vm name must be a non-empty string")
        for attr in ("vcpus", "memory_mib", "nics"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlacementError(
                    f"vm {self.name}: {attr} must be a non-negative integer, got {value!r}"
                )
        if self.state not in STATES:
            raise PlacementError(f"vm {self.name}: unknown state {self.state!r}")
        if self.state == "ready" and self.host is not None:
            raise PlacementError(f"vm {self.name}: a ready VM has no host")
        if self.state != "ready" and self.host is None:
            raise PlacementError(f"vm {self.name}: a {self.state} VM needs a host")
        if not isinstance(self.coschedule, int) or self.coschedule < -1:
            raise PlacementError(f"vm {self.name}: coschedule must be -1 or >= 0")
        if self.cpu_demand is not None and not (self.cpu_demand >= 0):
            raise PlacementError(f"vm {self.name}: cpu_demand must be >= 0")
        _check_amounts(f"vm {self.name}", "usage", self.usage)
        _check_amounts(f"vm {self.name}", "duration", self.durations)
        _check_amounts(f"vm {self.name}", "image size", self.images)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def demand(self, resource: str) -> int:
        """Current consumption of ``resource`` (before any ``preserve``)."""
        if resource in self.usage:
            return self.usage[resource]
        if resource == VCPUS:
            return self.vcpus
        if resource == MEMORY:
            return self.memory_mib
        if resource == NICS:
            return self.nics
        if resource == CPU_DEMAND:
            measured = self.vcpus if self.cpu_demand is None else self.cpu_demand
            return math.ceil(measured * 1000)
        return 0

    def duration(self, kind: str, config: PlacementConfig) -> int:
        """Seconds an action of ``kind`` on this VM takes (at least 1)."""
        if kind in self.durations:
            return max(1, self.durations[kind])
        if kind == "migrate":
            return max(1, math.ceil(self.memory_mib / config.migration_mib_per_s))
        return 1


def vm_from_spec(spec: VmSpec, *, namespace: str | None = None) -> Vm:
    """A ready VM (to be launched) from a user's ``VmSpec``.

    ``schedule`` and ``colocate`` are constraints, not VM fields: see
    ``constraints.minimega_constraints``.
    """
    return Vm(
        name=spec.name,
        namespace=spec.namespace if namespace is None else namespace,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        nics=len(spec.networks),
        state="ready",
        coschedule=spec.coschedule,
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The frozen view the solver decides on: hosts and every known VM."""

    hosts: tuple[Host, ...]
    vms: tuple[Vm, ...] = ()

    def __post_init__(self) -> None:
        names: set[str] = set()
        for host in self.hosts:
            if host.name in names:
                raise PlacementError(f"duplicate host {host.name!r}")
            names.add(host.name)
        keys: set[str] = set()
        for vm in self.vms:
            if vm.key in keys:
                raise PlacementError(f"duplicate vm {vm.key!r}")
            keys.add(vm.key)
            if vm.host is not None and vm.host not in names:
                raise PlacementError(f"vm {vm.key} is on unknown host {vm.host!r}")

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise PlacementError(f"unknown host {name!r}")

    def placement(self) -> dict[str, str]:
        """Current host of every running VM, by VM key."""
        return {vm.key: vm.host for vm in self.vms if vm.state == "running" and vm.host}

    def with_vms(self, extra: Iterable[Vm]) -> Snapshot:
        return Snapshot(self.hosts, self.vms + tuple(extra))

    def resources(self, *, relief: bool = False) -> tuple[str, ...]:
        """Every resource that has a ceiling somewhere or is consumed by some VM."""
        names = {VCPUS, MEMORY, NICS}
        for host in self.hosts:
            names.update(host.capacity)
        for vm in self.vms:
            names.update(vm.usage)
        if relief:
            names.add(CPU_DEMAND)
        return tuple(sorted(names))


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch of work that allocates tens of
    thousands of long-lived objects (a 30,000-VM repair spends ~30 % of its time in
    collections that free nothing); reference counting still frees the rest."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
