"""Hypothesis properties: launches agree with brute force, and every placement and every
step of every plan passes the independent checker."""

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dvms.placement import (
    Host,
    PlacementConfig,
    Snapshot,
    Vm,
    check_placement,
    check_plan,
    solve_launch,
    solve_repair,
)
from dvms.placement import constraints as c

CFG = PlacementConfig(cpu_overcommit=1.0, memory_overcommit=1.0)
ROOMY = PlacementConfig(cpu_overcommit=3.0, memory_overcommit=1.0)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fits(vm, host, others):
    on = [o for o in others if o.host == host.name] + [vm]
    limits = [o.coschedule + 1 for o in on if o.coschedule != -1]
    return (
        sum(o.vcpus for o in on) <= host.cpus
        and sum(o.memory_mib for o in on) <= host.memory_mib
        and (not limits or len(on) <= min(limits))
    )


@st.composite
def clusters(draw, max_hosts=6, max_running=6, fit=False):
    n = draw(st.integers(1, max_hosts))
    hosts = tuple(
        Host(
            f"h{i}", cpus=draw(st.integers(1, 4)), memory_mib=draw(st.sampled_from([2, 4, 8])) * 512
        )
        for i in range(n)
    )
    running = []
    for i in range(draw(st.integers(0, max_running))):
        vm = Vm(
            f"r{i}",
            vcpus=draw(st.integers(0, 2)),
            memory_mib=draw(st.sampled_from([256, 512, 1024])),
            host=f"h{draw(st.integers(0, n - 1))}",
            coschedule=draw(st.sampled_from([-1, -1, -1, 1, 3])),
        )
        if not fit or _fits(vm, hosts[int(vm.host[1:])], running):
            running.append(vm)
    return hosts, running


def _subset(draw, names, least=1):
    return tuple(draw(st.lists(st.sampled_from(names), min_size=least, max_size=len(names),
                               unique=True)))  # fmt: skip


@st.composite
def constraint_sets(draw, vm_names, host_names, *, with_colocate=True, most=4):
    out = []
    kinds = ["ban", "fence", "spread", "gather", "among", "lonely", "runcap", "rescap", "colocate"]
    kinds += ["root", "cspread", "split"]
    for kind in draw(st.lists(st.sampled_from(kinds), max_size=most)):
        if kind == "ban":
            out.append(c.Ban(_subset(draw, vm_names), frozenset(_subset(draw, host_names))))
        elif kind == "fence":
            out.append(c.Fence(_subset(draw, vm_names), frozenset(_subset(draw, host_names))))
        elif kind == "spread":
            vms = _subset(draw, vm_names, 2) if len(vm_names) > 1 else vm_names
            out.append(c.Spread(vms, continuous=False))
        elif kind == "split" and len(vm_names) > 1:
            cut = draw(st.integers(1, len(vm_names) - 1))
            out.append(c.Split((tuple(vm_names[:cut]), tuple(vm_names[cut:]))))
        elif kind == "root":
            out.append(c.Root(_subset(draw, vm_names)))
        elif kind == "cspread":
            out.append(c.Spread(_subset(draw, vm_names), continuous=True))
        elif kind == "gather":
            out.append(c.Gather(_subset(draw, vm_names)))
        elif kind == "lonely":
            out.append(c.Lonely(_subset(draw, vm_names)))
        elif kind == "among" and len(host_names) > 1:
            cut = draw(st.integers(1, len(host_names) - 1))
            groups = (frozenset(host_names[:cut]), frozenset(host_names[cut:]))
            out.append(c.Among(_subset(draw, vm_names), groups))
        elif kind == "runcap":
            hosts = frozenset(_subset(draw, host_names))
            out.append(c.RunningCapacity(hosts, draw(st.integers(0, 4))))
        elif kind == "rescap":
            hosts = frozenset(_subset(draw, host_names))
            out.append(c.ResourceCapacity(hosts, "vcpus", draw(st.integers(0, 6))))
        elif kind == "colocate" and with_colocate and len(vm_names) > 1:
            i = draw(st.integers(1, len(vm_names) - 1))
            out.append(c.Colocate(vm_names[i], vm_names[draw(st.integers(0, i - 1))]))
    return out


def brute_force(snap, new, cons):
    """Some placement of ``new`` passing the independent checker, or None."""
    names = [h.name for h in snap.hosts]
    full = snap.with_vms(new)
    checks = [*cons, c.Running(tuple(vm.key for vm in new))]
    base = snap.placement()
    for combo in itertools.product(names, repeat=len(new)):
        placement = {**base, **{vm.key: h for vm, h in zip(new, combo, strict=True)}}
        if not check_placement(full, checks, placement, CFG):
            return placement
    return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_launch_agrees_with_brute_force(data):
    hosts, running = data.draw(clusters(fit=True))
    budget = max(1, int(1024 ** (1 / len(hosts)) + 1e-9)) if len(hosts) > 1 else 8
    n_new = data.draw(st.integers(1, min(8, budget)))
    new = [
        Vm(
            f"n{i}",
            state="ready",
            vcpus=data.draw(st.integers(1, 3)),
            memory_mib=data.draw(st.sampled_from([256, 512, 1024, 2048])),
            coschedule=data.draw(st.sampled_from([-1, -1, -1, 0, 1, 2])),
        )
        for i in range(n_new)
    ]
    snap = Snapshot(hosts, tuple(running))
    cons = data.draw(constraint_sets(tuple(vm.key for vm in new), tuple(h.name for h in hosts)))
    # a launch places new VMs; breaking constraints already broken is repair's job
    assume(check_placement(snap, cons, snap.placement(), CFG) == [])
    result = solve_launch(snap, new, cons, CFG)
    witness = brute_force(snap, new, cons)
    if result.ok:
        placement = {**snap.placement(), **result.placement}
        checks = [*cons, c.Running(tuple(vm.key for vm in new))]
        assert check_placement(snap.with_vms(new), checks, placement, CFG) == []
    else:
        assert witness is None, f"solver said infeasible ({result}), but {witness} works"
        assert result.proven


@st.composite
def repair_cases(draw):
    hosts, running = draw(clusters(max_hosts=5, max_running=8))
    names = tuple(vm.key for vm in running)
    cons = (
        draw(constraint_sets(names, tuple(h.name for h in hosts), with_colocate=False))
        if names
        else []
    )
    if names and draw(st.booleans()):
        vm = draw(st.sampled_from(names))
        cons.append(c.Preserve((vm,), "vcpus", draw(st.integers(0, 3))))
    relief = draw(st.booleans())
    demand = [draw(st.sampled_from([None, 0.5, 1.0, 2.5])) for _ in running]
    running = [replace(vm, cpu_demand=d) for vm, d in zip(running, demand, strict=True)]
    return Snapshot(hosts, tuple(running)), cons, relief


@SETTINGS
@given(case=repair_cases())
def test_every_plan_step_passes_the_checker(case):
    snap, cons, relief = case
    plan = solve_repair(snap, cons, CFG, relief=relief)
    before = check_plan(snap, cons, [], CFG, relief=relief)
    if plan.status == "solved":
        assert check_plan(snap, cons, plan.actions, CFG, relief=relief) == []
        if not before:
            assert plan.actions == ()  # already viable: nothing to do
        assert plan.placement == {
            **{k: v for k, v in snap.placement().items() if k in plan.placement},
            **plan.placement,
        }
    else:
        assert plan.reason


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_exhaustive_limit_8_hosts_12_vms(data):
    """At the exhaustive size the solver is complete: infeasible answers are proofs, and
    feasible ones check out (brute force is too slow here; the solver's own claim of a
    proof is compared with a placement built by spreading round robin when possible)."""
    n_hosts = data.draw(st.integers(6, 8))
    hosts = tuple(Host(f"h{i}", cpus=data.draw(st.integers(1, 3)), memory_mib=4096)
                  for i in range(n_hosts))  # fmt: skip
    new = [Vm(f"n{i}", state="ready", vcpus=data.draw(st.integers(1, 2)),
              coschedule=data.draw(st.sampled_from([-1, 0, 1]))) for i in range(12)]  # fmt: skip
    cons = data.draw(constraint_sets(tuple(vm.key for vm in new), tuple(h.name for h in hosts)))
    snap = Snapshot(hosts)
    result = solve_launch(snap, new, cons, CFG)
    if result.ok:
        checks = [*cons, c.Running(tuple(vm.key for vm in new))]
        assert check_placement(snap.with_vms(new), checks, result.placement, CFG) == []
    else:
        assert result.proven


class _Exhausted(Exception):
    pass


def pruned_brute_force(snap, new, cons, budget, cfg):
    """Depth-first over the new VMs, pruning with the independent checker (every rule is
    monotone: a partial placement that breaks one cannot be completed)."""
    full = snap.with_vms(new)
    names = [h.name for h in snap.hosts]
    base = snap.placement()
    nodes = 0

    def extend(i, placement):
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            raise _Exhausted
        if check_placement(full, cons, placement, cfg):
            return None
        if i == len(new):
            return placement
        for host in names:
            found = extend(i + 1, {**placement, new[i].key: host})
            if found:
                return found
        return None

    return extend(0, dict(base))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_launch_complete_up_to_8_hosts_12_vms(data):
    """At the exhaustive size, an infeasible answer is never wrong: a pruned brute force
    (pruning by the independent checker) finds no placement either."""
    hosts, running = data.draw(clusters(max_hosts=8, max_running=4, fit=True))
    assume(len(hosts) >= 4)
    new = [
        Vm(
            f"n{i}",
            state="ready",
            vcpus=data.draw(st.integers(1, 2)),
            memory_mib=data.draw(st.sampled_from([256, 512, 1024])),
            coschedule=data.draw(st.sampled_from([-1, -1, 0, 1])),
        )
        for i in range(data.draw(st.integers(8, 12)))
    ]
    snap = Snapshot(hosts, tuple(running))
    names = tuple(vm.key for vm in new)
    cons = data.draw(constraint_sets(names, tuple(h.name for h in hosts), most=2))
    assume(check_placement(snap, cons, snap.placement(), ROOMY) == [])
    result = solve_launch(snap, new, cons, ROOMY)
    if result.ok:
        return  # checked by the other properties
    assert result.proven
    try:
        witness = pruned_brute_force(snap, new, cons, 3000, ROOMY)
    except _Exhausted:
        return
    assert witness is None, f"solver said infeasible ({result}), but {witness} works"
