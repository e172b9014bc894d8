"""What a partition leader computes: the placement engine on exactly the partition.

``solve_events(states, events)`` is pure (the core hands it to the shell as a ``Compute``
effect so that a daemon can run it in a worker thread and a simulator can charge its
time). The snapshot holds the members' hosts and their running VMs with measured CPU
demand; ``launch`` events add their VMs (with their constraints, host names restricted to
the partition's hosts), ``overload`` events ask for a relief plan that brings every member
host under its capacity. One plan answers every event of the partition (a merged
partition carries several).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dvms.partition.messages import Event, HostState, LaunchVm, Placed
from dvms.placement import (
    Host,
    PlacementConfig,
    PlacementError,
    Snapshot,
    Vm,
    check_plan,
    launch_vjob,
    solve_repair,
)
from dvms.placement.model import CPU_DEMAND
from dvms.placement.spec import ConstraintSpec, SpecError, VjobSpec

__all__ = ["PlanStep", "SolveOutcome", "snapshot_of", "solve_events"]

#: Constraint kinds whose ``hosts`` may name hosts outside the partition: outside hosts
#: are simply not candidates here.
_HOST_SETS = frozenset({"ban", "fence", "among"})


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One action for the leader to carry out: ``migrate`` (src -> dst) or ``boot``
    (create ``launch`` on dst). ``start``/``end`` are the plan's estimated seconds; the
    leader runs a step once every earlier step sharing one of its hosts has ended."""

    kind: str
    vm: str
    start: int
    end: int
    src: str | None = None
    dst: str | None = None
    launch: LaunchVm | None = None


@dataclass(frozen=True, slots=True)
class SolveOutcome:
    ok: bool
    reason: str = ""
    actions: tuple[PlanStep, ...] = ()
    placed: tuple[Placed, ...] = ()


def _cpu_limit(s: HostState, target: float) -> int:
    """CPU (milli-CPUs) a plan may leave on host ``s``. With ``target`` < 1 an overloaded
    host must come down to ``target`` of its capacity (headroom against the next load
    change); any other host may keep what it has but receive only up to the target."""
    capacity = s.cpu_milli or s.cpus * 1000
    if target >= 1.0:
        return capacity
    demand = sum(round(v.cpu_demand * 1000) for v in s.vms)
    goal = int(capacity * target)
    return goal if demand > capacity else min(capacity, max(goal, demand))


def snapshot_of(states: tuple[HostState, ...], target: float = 1.0) -> Snapshot:
    """The solver's view of the members' hosts (see ``_cpu_limit`` for ``target``)."""
    hosts = tuple(
        Host(
            name=s.name,
            cpus=s.cpus,
            memory_mib=s.memory_mib,
            capacity={CPU_DEMAND: _cpu_limit(s, target)},
        )
        for s in states
    )
    vms = tuple(
        Vm(
            name=v.name,
            namespace=v.namespace,
            vcpus=v.vcpus,
            memory_mib=v.memory_mib,
            host=s.name,
            cpu_demand=v.cpu_demand,
            coschedule=v.coschedule,
        )
        for s in states
        for v in s.vms
    )
    return Snapshot(hosts, vms)


def _restrict(spec: ConstraintSpec, hosts: set[str]) -> ConstraintSpec:
    if spec.kind not in _HOST_SETS:
        return spec
    groups = tuple(tuple(h for h in g if h in hosts) for g in spec.groups)
    return replace(spec, hosts=tuple(h for h in spec.hosts if h in hosts), groups=groups)


def solve_events(
    states: tuple[HostState, ...],
    events: tuple[Event, ...],
    config: PlacementConfig | None = None,
    *,
    target: float = 1.0,
) -> SolveOutcome:
    config = config or PlacementConfig()
    try:
        snap = snapshot_of(states, target)
        steps: list[PlanStep] = []
        placed: list[Placed] = []
        launches = [e for e in events if e.kind == "launch"]
        if launches:
            snap, boot_steps, placed = _launch(snap, launches, config)
            steps.extend(boot_steps)
        if any(e.kind == "overload" for e in events):
            plan = solve_repair(snap, (), config, relief=True)
            if plan.status != "solved":
                return SolveOutcome(False, plan.reason or "no relief plan in this partition")
            problems = check_plan(snap, (), plan.actions, config, relief=True)
            if problems:  # the independent checker disagrees with the solver: refuse
                return SolveOutcome(False, "plan rejected by the checker: " + problems[0])
            offset = 1 if steps else 0
            for a in plan.actions:
                if a.kind == "migrate":
                    steps.append(
                        PlanStep("migrate", a.vm, a.start + offset, a.end + offset, a.src, a.dst)
                    )
        return SolveOutcome(True, "", tuple(steps), tuple(placed))
    except (PlacementError, SpecError) as exc:
        return SolveOutcome(False, str(exc))


def _launch(snap: Snapshot, launches: list[Event], config: PlacementConfig):
    """Place each launch event's vjob in turn (a merged partition may carry several, from
    different namespaces); each vjob's constraint names resolve in its own namespace."""
    hosts = {h.name for h in snap.hosts}
    steps, placed = [], []
    for event in launches:
        namespaces = {v.namespace for v in event.vms}
        namespace = namespaces.pop() if len(namespaces) == 1 else ""
        vjob = VjobSpec(
            name=f"launch-{event.event_id:x}",
            vms=tuple(v.to_spec() for v in event.vms),
            constraints=tuple(_restrict(c.to_spec(), hosts) for c in event.constraints),
            namespace=namespace,
        )
        result = launch_vjob(snap, vjob, config)
        if not result.ok:
            raise PlacementError(str(result.refusal) if result.refusal else "no placement")
        new_vms = []
        for v in event.vms:
            key = f"{v.namespace}/{v.name}" if v.namespace else v.name
            host = result.placement[key]
            steps.append(PlanStep("boot", key, 0, 1, None, host, v))
            placed.append(Placed(v.name, v.namespace, host))
            new_vms.append(
                Vm(
                    name=v.name,
                    namespace=v.namespace,
                    vcpus=v.vcpus,
                    memory_mib=v.memory_mib,
                    host=host,
                    coschedule=v.coschedule,
                    cpu_demand=0.0,
                )
            )
        snap = snap.with_vms(new_vms)
    return snap, steps, placed
