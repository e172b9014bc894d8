"""Load functions: how "loaded" a host is, as minimega defines it.

A host is *full* when it has a coschedule limit (the smallest ``coschedule + 1`` among
its VMs) and its VM count has reached it. Full hosts always rank after non-full ones;
then the load key, lower first; then -- our fix of minimega's undefined tie order --
the host name, so every result is deterministic.

- ``cpucommit`` (default): committed vcpus / CPUs (float)
- ``memcommit``: committed MiB / MiB of RAM (float)
- ``netcommit``: raw committed NIC count (not divided by anything, as minimega)
- ``fill`` (ours, for BtrPlace instances): the highest used/limit ratio over every
  resource that has a ceiling on the host (worst-fit)

``measured_load`` is the overload-relief view: measured CPU demand over CPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dvms.placement.config import PlacementConfig
from dvms.placement.model import CPU_DEMAND, MEMORY, NICS, VCPUS, Host, Snapshot

__all__ = [
    "HostLoad",
    "host_key",
    "host_loads",
    "load_value",
    "make_key",
    "measured_load",
    "overloaded_hosts",
    "rank_hosts",
]


@dataclass(frozen=True, slots=True)
class HostLoad:
    """minimega's per-host numbers (``host`` command) that the load functions rank:
    counts over running VMs."""

    name: str
    cpus: int
    memory_mib: int
    vms: int = 0
    cpu_commit: int = 0
    mem_commit: int = 0
    net_commit: int = 0
    limit: int = -1

    @property
    def full(self) -> bool:
        return self.limit != -1 and self.vms >= self.limit


def _ratio(used: float, total: float) -> float:
    return used / total if total else 0.0


def load_value(stats: HostLoad, load: str) -> float:
    """The load key of one host (lower = preferred); ``fill`` needs ``make_key``."""
    if load == "cpucommit":
        return _ratio(stats.cpu_commit, stats.cpus)
    if load == "memcommit":
        return _ratio(stats.mem_commit, stats.memory_mib)
    if load == "netcommit":
        return float(stats.net_commit)
    raise ValueError(f"load function {load!r} needs resource limits; use make_key")


def host_key(stats: HostLoad, load: str) -> tuple[bool, float, str]:
    return (stats.full, load_value(stats, load), stats.name)


def host_loads(snapshot: Snapshot) -> list[HostLoad]:
    """The load of every online host, from the running VMs of ``snapshot``."""
    acc = {h.name: [0, 0, 0, 0, -1] for h in snapshot.hosts if h.online}
    for vm in snapshot.vms:
        if vm.state != "running" or vm.host not in acc:
            continue
        row = acc[vm.host]
        row[0] += 1
        row[1] += vm.demand(VCPUS)
        row[2] += vm.demand(MEMORY)
        row[3] += vm.demand(NICS)
        if vm.coschedule != -1:
            lim = vm.coschedule + 1
            row[4] = lim if row[4] == -1 else min(row[4], lim)
    return [
        HostLoad(h.name, h.cpus, h.memory_mib, *acc[h.name])
        for h in snapshot.hosts
        if h.name in acc
    ]


def rank_hosts(stats: Sequence[HostLoad], load: str = "cpucommit") -> list[str]:
    """Host names, most preferred first (the order minimega's heap pops them in)."""
    return [s.name for s in sorted(stats, key=lambda s: host_key(s, load))]


KeyFn = Callable[[int, list[float], int, int], tuple]


def make_key(
    load: str, hosts: Sequence[Host], resources: Sequence[str], limits: Sequence[Sequence[float]]
) -> KeyFn:
    """A fast ``key(h, used, count, limit)`` over the solver's index-based arrays (a
    callable object, not a closure: compiled, a closure and its environment form a
    reference cycle that only the collector frees)."""
    index = {r: i for i, r in enumerate(resources)}
    names = [h.name for h in hosts]
    if load == "fill":
        capped = [
            [i for i, lim in enumerate(limits[h]) if lim != math.inf] for h in range(len(hosts))
        ]
        return _FillKey(limits, capped, names)
    res, attr = {"cpucommit": (VCPUS, "cpus"), "memcommit": (MEMORY, "memory_mib")}.get(
        load, (NICS, "")
    )
    denominators = [float(getattr(h, attr)) if attr else 1.0 for h in hosts]
    return _CommitKey(index[res], denominators, names)


class _FillKey:
    """``fill``: the fullest host first (its highest used / limit over capped resources)."""

    def __init__(
        self, limits: Sequence[Sequence[float]], capped: list[list[int]], names: list[str]
    ) -> None:
        self.limits, self.capped, self.names = limits, capped, names

    def __call__(self, h: int, used: list[float], count: int, limit: int) -> tuple:
        lims = self.limits[h]
        worst = 0.0
        for i in self.capped[h]:
            ratio = used[i] / lims[i] if lims[i] else (math.inf if used[i] else 0.0)
            worst = max(worst, ratio)
        return (limit != -1 and count >= limit, worst, self.names[h])


class _CommitKey:
    """``cpucommit`` / ``memcommit`` / NICs: the least committed host first."""

    def __init__(self, i: int, denominators: list[float], names: list[str]) -> None:
        self.i, self.denominators, self.names = i, denominators, names

    def __call__(self, h: int, used: list[float], count: int, limit: int) -> tuple:
        d = self.denominators[h]
        return (limit != -1 and count >= limit, used[self.i] / d if d else 0.0, self.names[h])


def measured_load(snapshot: Snapshot) -> dict[str, float]:
    """Measured CPU demand of each online host's running VMs, in CPUs per host CPU."""
    demand = {h.name: 0 for h in snapshot.hosts if h.online}
    for vm in snapshot.vms:
        if vm.state == "running" and vm.host in demand:
            demand[vm.host] += vm.demand(CPU_DEMAND)
    cpus = {h.name: h.cpus for h in snapshot.hosts}
    return {name: _ratio(milli / 1000, cpus[name]) for name, milli in demand.items()}


def overloaded_hosts(snapshot: Snapshot, config: PlacementConfig) -> list[str]:
    """Hosts whose measured demand is above ``config.overload_threshold``, by name."""
    loads = measured_load(snapshot)
    return sorted(n for n, load in loads.items() if load > config.overload_threshold)
