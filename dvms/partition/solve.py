"""What a partition leader computes: the placement engine on exactly the partition.

``solve_events(states, events)`` is pure. The core does not call it: it returns a
``Solve`` effect carrying a ``SolveRequest`` (data, no code), and the shell calls
``run_solve(request)``, so that a daemon can run it in a worker thread and a simulator
can charge its time. The snapshot holds the members' hosts and their running VMs with measured CPU
demand; ``launch`` events add their VMs (with their constraints, host names restricted to
the partition's hosts), ``overload`` events ask for a relief plan that brings every member
host under its capacity. One plan answers every event of the partition (a merged
partition carries several).

Running VMs carry their vjobs' constraints (``VmState.constraints``; ``carried.py``
says what each becomes inside a partition): every plan, repair or launch, honours them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from dvms.partition.carried import carried_by, running_constraints
from dvms.partition.messages import Event, HostState, LaunchVm, Placed, VmState
from dvms.placement import (
    Host,
    PlacementConfig,
    PlacementError,
    Snapshot,
    Vm,
    check_placement,
    check_plan,
    solve_launch,
    solve_repair,
)
from dvms.placement.constraints import Ban, Constraint
from dvms.placement.launch import vjob_parts
from dvms.placement.model import CPU_DEMAND
from dvms.placement.plan import Action
from dvms.placement.spec import ConstraintSpec, SpecError, VjobSpec

__all__ = ["PlanStep", "SolveOutcome", "SolveRequest", "run_solve", "snapshot_of", "solve_events"]

#: Constraint kinds whose ``hosts`` may name hosts outside the partition: outside hosts
#: are simply not candidates here.
_HOST_SETS = frozenset({"ban", "fence", "among"})


@dataclass(frozen=True, slots=True)
class PlanStep(Action):
    """One action of a plan for the leader to carry out: the placement engine's
    ``Action``, ``migrate`` (src -> dst) or ``boot`` (create ``launch`` on dst).
    ``start``/``end`` are the plan's estimated seconds; the leader runs a step once
    every earlier step sharing one of its hosts has ended."""

    launch: LaunchVm | None = None


@dataclass(frozen=True, slots=True)
class SolveOutcome:
    ok: bool
    reason: str = ""
    actions: tuple[PlanStep, ...] = ()
    placed: tuple[Placed, ...] = ()


@dataclass(frozen=True, slots=True)
class SolveRequest:
    """What a leader asks the solver: one plan for ``events`` on exactly the members'
    hosts ``states``, leaving destinations at most ``target`` of their capacity and
    emptying the hosts ``empty`` (those of underload events), with the leader's
    placement engine settings ``placement``."""

    states: tuple[HostState, ...]
    events: tuple[Event, ...]
    target: float = 1.0
    empty: tuple[str, ...] = ()
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    @property
    def size(self) -> tuple[int, int]:
        """(hosts, VMs) of the problem: the VMs running on ``states`` plus those to launch."""
        vms = sum(len(s.vms) for s in self.states) + sum(len(e.vms) for e in self.events)
        return len(self.states), vms


def run_solve(request: SolveRequest) -> SolveOutcome:
    """Solve ``request`` (pure, possibly slow): what a shell does for a ``Solve`` effect."""
    return solve_events(
        request.states,
        request.events,
        request.placement,
        target=request.target,
        empty=request.empty,
    )


def _cpu_limit(s: HostState, target: float) -> int:
    """CPU (milli-CPUs) a plan may leave on host ``s``. With ``target`` < 1, a host that
    is not overloaded keeps what it has but receives only up to ``target`` of its
    capacity: headroom against the next load change. An overloaded host need only come
    back under its capacity, not down to ``target``, which would move more and heavier
    VMs, whose copies are slower. Why: tests/partition/test_solve.py::
    test_only_destinations_are_held_to_the_relief_target"""
    capacity = s.cpu_milli or s.cpus * 1000
    if target >= 1.0:
        return capacity
    demand = sum(round(v.cpu_demand * 1000) for v in s.vms)
    if demand > capacity:
        return capacity
    return min(capacity, max(int(capacity * target), demand))


def snapshot_of(states: tuple[HostState, ...], target: float = 1.0) -> Snapshot:
    """The solver's view of the members' hosts (see ``_cpu_limit`` for ``target``)."""
    hosts = tuple(
        Host(
            name=s.name,
            cpus=s.cpus,
            memory_mib=s.memory_mib,
            capacity={CPU_DEMAND: _cpu_limit(s, target)},
            images={i.root.hex(): min(1.0, i.held / i.size) for i in s.images if i.size},
        )
        for s in states
    )
    vms = tuple(_placed_vm(v, s.name, v.cpu_demand) for s in states for v in s.vms)
    return Snapshot(hosts, vms)


def _placed_vm(v: VmState | LaunchVm, host: str, cpu_demand: float) -> Vm:
    """The placement engine's view of a VM that runs (or is to boot) on ``host``."""
    return Vm(
        name=v.name,
        namespace=v.namespace,
        vcpus=v.vcpus,
        memory_mib=v.memory_mib,
        host=host,
        cpu_demand=cpu_demand,
        coschedule=v.coschedule,
    )


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
    empty: tuple[str, ...] = (),
) -> SolveOutcome:
    """One plan for ``events`` on the members' hosts ``states``; ``empty`` names the
    hosts of ``underload`` events, whose VMs must all move away (consolidation)."""
    config = config or PlacementConfig()
    try:
        snap = snapshot_of(states, target)
        steps: list[PlanStep] = []
        placed: list[Placed] = []
        running = _running(states, snap)
        launches = [e for e in events if e.kind == "launch"]
        if launches:
            snap, boot_steps, placed, running = _launch(snap, launches, running, config, states)
            steps.extend(boot_steps)
        if any(e.kind in ("overload", "underload") for e in events):
            running = running + _evacuate(snap, empty)
            plan = solve_repair(snap, running, config, relief=True)
            if plan.status != "solved":
                return SolveOutcome(False, plan.reason or "no relief plan in this partition")
            problems = check_plan(snap, running, plan.actions, config, relief=True)
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


def _evacuate(snap: Snapshot, hosts: tuple[str, ...]) -> list[Constraint]:
    """Underload: every VM on ``hosts`` must end elsewhere, and none may move there (a
    discrete ban of every VM; without the second half a plan could swap VMs in)."""
    if not hosts:
        return []
    return [Ban(tuple(vm.key for vm in snap.vms), frozenset(hosts), False)]


def _running(states: tuple[HostState, ...], snap: Snapshot) -> list[Constraint]:
    """The running VMs' constraints, minus any the current placement already breaks:
    the engine can only preserve a continuous constraint, so one broken constraint (a
    host lost, a VM started by hand) would otherwise fail every event near it."""
    where = {vm.key: vm.host for vm in snap.vms if vm.host is not None}
    if not any(v.constraints for s in states for v in s.vms):
        return []
    hosts = [h.name for h in snap.hosts]
    carriers = ((v.namespace, v.name, v.constraints) for s in states for v in s.vms)
    built, _problems = running_constraints(carriers, where, hosts)
    baseline = len(check_placement(snap, (), where))
    return [k for k in built if len(check_placement(snap, (k,), where)) == baseline]


def _with_images(vm: Vm, launch: LaunchVm, sizes: dict[str, int]) -> Vm:
    """``vm`` with the sizes of its images that some member holds (image locality)."""
    images = {r.hex(): sizes[r.hex()] for r in launch.images if r.hex() in sizes}
    return replace(vm, images=images) if images else vm


def _unmeasured(vm: Vm, config: PlacementConfig) -> Vm:
    """A VM to launch, whose CPU demand nobody has measured yet, counts against its
    host's CPU capacity at ``vcpus / cpu_overcommit`` CPUs: the share of a CPU each vCPU
    is committed to by the same rule that admits it (the namespace interpreter and the
    vCPU limit of every placement), so a launch the interpreter planned within
    ``cpu_overcommit`` is not refused here for CPUs, while a host whose VMs do burn
    their CPUs (measured demand) still refuses. Without overcommit (None): its vCPUs.
    Why: tests/partition/test_solve.py::test_a_launch_within_the_vcpu_overcommit_fits"""
    if vm.cpu_demand is not None:
        return vm
    ratio = config.cpu_overcommit
    if not ratio:
        return replace(vm, cpu_demand=float(vm.vcpus))
    # whole milli-CPUs rounded down: the vCPU limit, not a rounding, is what binds
    return replace(vm, cpu_demand=math.floor(vm.vcpus * 1000 / ratio) / 1000)


def _runs_as_asked(v: LaunchVm, here: dict[str, Vm]) -> str | None:
    """The host where ``v`` runs already with the size asked (on its ``schedule`` host
    if it has one), else None."""
    vm = here.get(f"{v.namespace}/{v.name}" if v.namespace else v.name)
    if vm is None or vm.host is None or vm.vcpus != v.vcpus or vm.memory_mib != v.memory_mib:
        return None
    return vm.host if v.schedule is None or v.schedule == vm.host else None


def _launch(
    snap: Snapshot,
    launches: list[Event],
    running: list[Constraint],
    config: PlacementConfig,
    states: tuple[HostState, ...] = (),
) -> tuple[Snapshot, list[PlanStep], list[Placed], list[Constraint]]:
    """Place each launch event's vjob in turn (a merged partition may carry several, from
    different namespaces); each vjob's constraint names resolve in its own namespace, and
    every vjob placed before it (and every running VM) keeps its constraints."""
    hosts = {h.name for h in snap.hosts}
    sizes = {i.root.hex(): i.size for s in states for i in s.images if i.size}
    running = list(running)
    steps: list[PlanStep] = []
    placed: list[Placed] = []
    for event in launches:
        if not event.vms:
            raise PlacementError("namespace must contain at least one queued VM to launch VMs")
        vms = event.vms
        if not event.constraints:
            # A VM of a retried launch whose creation landed before its partition ended
            # runs already, as asked: placed where it runs, not created twice (a
            # constrained vjob is placed whole, its constraints name every VM)
            here = {vm.key: vm for vm in snap.vms}
            vms = tuple(v for v in event.vms if _runs_as_asked(v, here) is None)
            for v in event.vms:
                if (host := _runs_as_asked(v, here)) is not None:
                    placed.append(Placed(v.name, v.namespace, host))
            if not vms:
                continue
        namespaces = {v.namespace for v in vms}
        namespace = namespaces.pop() if len(namespaces) == 1 else ""
        vjob = VjobSpec(
            name=f"launch-{event.event_id:x}",
            vms=tuple(v.to_spec() for v in vms),
            constraints=tuple(_restrict(c.to_spec(), hosts) for c in event.constraints),
            namespace=namespace,
        )
        launch, built = vjob_parts(snap, vjob)
        launch = [
            _with_images(_unmeasured(vm, config), v, sizes)
            for vm, v in zip(launch, vms, strict=True)
        ]
        result = solve_launch(snap, launch, [*built, *running], config)
        if not result.ok:
            raise PlacementError(str(result.refusal) if result.refusal else "no placement")
        running += built
        new_vms = []
        for v in vms:
            key = f"{v.namespace}/{v.name}" if v.namespace else v.name
            host = result.placement[key]
            v = replace(v, constraints=carried_by(v, event.constraints))
            steps.append(PlanStep("boot", key, 0, 1, dst=host, launch=v))
            placed.append(Placed(v.name, v.namespace, host))
            new_vms.append(_placed_vm(v, host, 0.0))
        snap = snap.with_vms(new_vms)
    return snap, steps, placed, running
