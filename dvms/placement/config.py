"""Configuration of the placement engine: one frozen dataclass, every field documented.

Units are in the field names (``_mib``, ``_s``); ratios are plain floats. Profiles are
classmethods built with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["INSTANCE_OBJECTIVE_EVALS", "LOAD_FUNCTIONS", "OBJECTIVES", "PlacementConfig"]

#: Names accepted by ``PlacementConfig.load`` (see dvms/placement/load.py).
LOAD_FUNCTIONS = ("cpucommit", "memcommit", "netcommit", "fill")
#: Names accepted by ``PlacementConfig.objective``.
OBJECTIVES = ("migrations", "mttr")
#: The local search budget (plans) ``dvms solve`` gives a BtrPlace instance unless told
#: otherwise: the instance names what to optimise (minimizeMTTR when it names nothing,
#: as in BtrPlace), so the engine optimises it. On the TDSC instances it adds at most
#: ~0.3 s to the repair (0.15 s compiled; docs/results.md).
INSTANCE_OBJECTIVE_EVALS = 100


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Knobs of the placement engine.

    Defaults follow minimega's scheduler (load function ``cpucommit``) and BtrPlace's
    migration model; the capacity ceilings are our addition (minimega has none).
    """

    #: Least-load comparator: ``cpucommit`` (minimega default: committed vcpus / CPUs),
    #: ``memcommit`` (committed MiB / MiB), ``netcommit`` (raw NIC count, minimega),
    #: ``fill`` (highest used/limit ratio over capped resources; BtrPlace's WorstFit).
    load: str = "cpucommit"
    #: vcpus a host may commit per physical CPU; ``None`` = no ceiling (minimega).
    #: 16.0 is OpenStack Nova's historical ``cpu_allocation_ratio`` default.
    cpu_overcommit: float | None = 16.0
    #: MiB a host may commit per MiB of RAM; ``None`` = no ceiling (minimega).
    #: 1.0 = never overcommit memory (Nova's default is 1.5; swapping VMs is worse).
    memory_overcommit: float | None = 1.0
    #: Overload relief: a host is overloaded when the measured CPU demand of its VMs
    #: exceeds ``cpus * overload_threshold`` (fraction of the host's CPUs, as DVMS).
    overload_threshold: float = 1.0
    #: Concurrent outgoing / incoming migrations per host in a plan (BtrPlace mVM and
    #: Nova both default to small caps; 2 keeps a 10 Gb/s link busy without thrashing).
    max_migrations_out: int = 2
    max_migrations_in: int = 2
    #: Live-migration throughput used to estimate a migration's duration when the VM
    #: has no explicit ``migrate`` duration (MiB/s; ~10 Gb/s link).
    migration_mib_per_s: float = 1024.0
    #: The second greedy pass places units with the fewest feasible hosts first,
    #: counting at most this many per unit (units with more are equally unconstrained):
    #: it bounds that pass at units x cap checks in a datacenter-sized problem.
    constrained_cap: int = 256
    #: Backtracking budget (search nodes) for instances larger than ``exhaustive_*``.
    search_budget: int = 20_000
    #: Instances with at most this many hosts and VMs to place are searched without
    #: a budget: "infeasible" is then a proof.
    exhaustive_hosts: int = 8
    exhaustive_vms: int = 12
    #: Host checks (filter pipeline runs) a repair may spend moving arrivals that would
    #: wait for room to hosts with room now (arrivals.py), when its plan has such waits;
    #: bounds that pass in a datacenter-sized repair.
    unchain_checks: int = 20_000
    #: Local search after a repair (localsearch.py): at most this many candidate plans
    #: (moves every filter accepts) are evaluated to cut migrations, then plan
    #: duration; a plan is scheduled only if a lower bound says it could win. 0 = off
    #: (the greedy plan).
    #: A count, not seconds: the engine reads no clock and one seed gives one result.
    local_search_evals: int = 0
    #: What the local search ranks first: ``migrations`` (fewest migrations, then the
    #: shortest plan; BtrPlace's minimizeMigrations) or ``mttr`` (the shortest plan,
    #: then fewest migrations; minimizeMTTR), which may move more VMs for a plan that
    #: ends sooner and also tries to split a waiting move into several that start at
    #: once. The greedy repair itself is the same under both.
    objective: str = "migrations"
    #: Image locality (kube-scheduler's ImageLocality score): at launch, a host already
    #: holding the images a VM boots from ranks as if its load were lower by up to this
    #: much, in the load function's units (``cpucommit``: vCPUs committed per CPU, so
    #: 0.5 = a host holding the whole image wins over one half a vCPU per CPU less
    #: committed). Only hosts that pass every hard constraint are ranked. 0 = off.
    image_locality_weight: float = 0.5
    #: A VM's images smaller than this in all count for nothing (kube-scheduler's
    #: threshold: 23 MB), so a kernel or an initrd alone does not pull VMs together.
    image_locality_min_mib: int = 23
    #: Image size per image from which holding all of it scores 1 (kube-scheduler: 1000
    #: MB per container image); between the two the score is scaled down linearly,
    #: and a partial copy scores by the fraction it holds.
    image_locality_max_mib: int = 1000

    def __post_init__(self) -> None:
        if self.load not in LOAD_FUNCTIONS:
            raise ValueError(
                f"unknown load function {self.load!r}; expected one of {', '.join(LOAD_FUNCTIONS)}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; expected one of {', '.join(OBJECTIVES)}"
            )
        for name in ("max_migrations_out", "max_migrations_in", "constrained_cap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.local_search_evals < 0 or self.unchain_checks < 0:
            raise ValueError("local_search_evals and unchain_checks must be >= 0")
        if self.image_locality_weight < 0:
            raise ValueError("image_locality_weight must be >= 0")
        if not 0 <= self.image_locality_min_mib < self.image_locality_max_mib:
            raise ValueError("need 0 <= image_locality_min_mib < image_locality_max_mib")
        if self.migration_mib_per_s <= 0 or self.overload_threshold <= 0:
            raise ValueError("migration_mib_per_s and overload_threshold must be > 0")

    @classmethod
    def minimega(cls) -> PlacementConfig:
        """minimega's behaviour: no capacity ceilings at all, cpucommit."""
        return replace(cls(), cpu_overcommit=None, memory_overcommit=None)

    @classmethod
    def btrplace(cls) -> PlacementConfig:
        """For BtrPlace instances: capacities come from the views, worst-fit load."""
        return replace(cls(), load="fill", cpu_overcommit=None, memory_overcommit=None)
