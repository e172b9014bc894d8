"""What a partition leader's solver sees and uses (``dvms.partition.solve``): the CPU
each host may hold under ``relief_target``, and its node's placement settings."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact
from dvms.partition.config import PartitionConfig
from dvms.partition.events import Solve
from dvms.partition.messages import HostState, LaunchVm, VmState
from dvms.partition.solve import run_solve, snapshot_of
from dvms.placement import PlacementConfig
from dvms.placement.model import CPU_DEMAND
from dvms.stack.core import NodeCore, build_cores


def host(demand: float) -> HostState:
    """A 4-CPU host running one VM of ``demand`` CPUs."""
    return HostState("h", 4, 8192, (VmState("v", "", 4, 1024, demand),))


#: (demand on a 4-CPU host, relief target) -> milli-CPUs a plan may leave on it.
CPU_LIMIT_ROWS = {
    "target 1: the capacity": (1.0, 1.0, 4000),
    "idle destination: target of the capacity": (1.0, 0.9, 3600),
    "destination above the target keeps what it has": (3.8, 0.9, 3800),
    "overloaded host: back under its capacity only": (5.0, 0.9, 4000),
}


@pytest.mark.parametrize(
    ("demand", "target", "limit"), CPU_LIMIT_ROWS.values(), ids=CPU_LIMIT_ROWS.keys()
)
def test_only_destinations_are_held_to_the_relief_target(
    demand: float, target: float, limit: int
) -> None:
    (h,) = snapshot_of((host(demand),), target).hosts
    assert h.capacity[CPU_DEMAND] == limit


def test_a_node_solves_with_its_own_placement_config() -> None:
    """A leader's solve request carries the placement settings its node was built with:
    a memory ceiling below the VM's size turns a launch that fits by default into a
    refusal that names the ceiling."""
    tight = replace(PlacementConfig(), memory_overcommit=0.1)
    launch = (LaunchVm("big", "ns", 1, 2048),)
    outcomes = {}
    for name, placement in (("default", None), ("tight", tight)):
        me = Contact(1, "10.0.0.1", 7400)
        overlay, part = build_cores(
            me,
            KademliaConfig(),
            random.Random(1),
            partition=replace(PartitionConfig(), min_partition_size=1, directory=False),
            placement=placement,
            local_state=lambda: HostState("h1", 4, 8192, ()),
            self_monitor=False,
        )
        node = NodeCore(overlay, part)
        _, out = node.launch(launch, (), now=0.0)
        now = 0.0
        while not any(isinstance(e, Solve) for e in out):
            deadline = node.next_deadline()
            assert deadline is not None and deadline < 10.0
            now = deadline
            out = node.on_timer(now=now)
        (solve,) = [e for e in out if isinstance(e, Solve)]
        assert solve.request.placement == (placement or PlacementConfig())
        outcomes[name] = run_solve(solve.request)
    assert outcomes["default"].ok
    assert not outcomes["tight"].ok and "memory" in outcomes["tight"].reason


def test_a_launch_prefers_the_member_that_holds_its_image_and_the_wire_carries_it() -> None:
    """Members report the files they hold (``HostState.images``) and a launched VM names
    its images' roots (``LaunchVm.images``): the leader's solve sends the VM to the
    holder, and to the least loaded member when nobody holds it or weight is 0."""
    from dvms.partition.messages import Event, HeldImage
    from dvms.partition.solve import solve_events
    from dvms.wire.envelope import MessageRegistry

    root = bytes(range(32))
    size = 4 << 30
    states = (
        HostState("h1", 8, 32768, ()),
        HostState(
            "h2",
            8,
            32768,
            (VmState("busy", "", 1, 1024, 0.0),),
            images=(HeldImage(root, size // 2, size),),
        ),
    )
    vm = LaunchVm("web", "ns", 1, 1024, disk="file:deb", images=(root,))
    event = Event("launch", Contact(1, "10.0.0.1", 7400), 7, (vm,))
    placed = solve_events(states, (event,)).placed
    assert [(p.vm, p.host) for p in placed] == [("web", "h2")]
    off = replace(PlacementConfig(), image_locality_weight=0.0)
    assert [p.host for p in solve_events(states, (event,), off).placed] == ["h1"]
    plain = Event("launch", event.origin, 8, (replace(vm, images=()),))
    assert [p.host for p in solve_events(states, (plain,)).placed] == ["h1"]
    # the fields survive the wire
    from dvms.partition.messages import MemberState, register_partition_messages

    reg = MessageRegistry()
    register_partition_messages(reg)
    msg = MemberState(1, 2, states[1])
    assert reg.decode(*reg.encode(msg)) == msg


def test_a_launch_within_the_vcpu_overcommit_fits() -> None:
    """A VM to launch has no measured demand: it counts ``vcpus / cpu_overcommit`` CPUs
    against its host's CPU capacity, as the vCPU limit the namespace interpreter plans
    with. 40 one-vCPU VMs on an 8-CPU host fit under overcommit 16 (5 CPUs of 8); 140
    do not (vCPUs 140 > 128); without overcommit a VM counts at its vCPUs (9 > 8); a
    host whose VMs burn its CPUs (measured) still refuses."""
    from dvms.partition.messages import Event
    from dvms.partition.solve import solve_events

    def launch(n: int, states: tuple[HostState, ...], config: PlacementConfig) -> str:
        vms = tuple(LaunchVm(f"v{i}", "ns", 1, 64) for i in range(n))
        event = Event("launch", Contact(1, "10.0.0.1", 7400), 7, vms)
        out = solve_events(states, (event,), config)
        return "ok" if out.ok else out.reason

    idle = (HostState("h1", 8, 65536, ()),)
    plain = PlacementConfig()
    assert launch(40, idle, plain) == "ok"
    assert "vCPUs" in launch(140, idle, plain)
    no_overcommit = replace(plain, cpu_overcommit=None)
    assert launch(8, idle, no_overcommit) == "ok"
    assert "CPUs" in launch(9, idle, no_overcommit)
    busy = (HostState("h1", 8, 65536, (VmState("burn", "ns", 8, 64, 7.9),)),)
    assert "CPUs" in launch(2, busy, plain)


def test_a_retried_launch_places_the_vms_that_run_already_where_they_run() -> None:
    """A launch retried after its partition created part of its VMs (its actions failed
    or its leader went before the outcome) finds them running: each one that runs with
    the size asked (on its ``schedule`` host) is placed where it runs and not created
    again; one of another size is still a duplicate."""
    from dvms.partition.messages import Event
    from dvms.partition.solve import solve_events

    def launch(vms: tuple[LaunchVm, ...], states: tuple[HostState, ...]):
        return solve_events(states, (Event("launch", Contact(1, "10.0.0.1", 7400), 7, vms),))

    ran = (
        HostState("h1", 8, 65536, (VmState("a", "ns", 1, 64, 0.0),)),
        HostState("h2", 8, 65536, ()),
    )
    out = launch(
        (LaunchVm("a", "ns", 1, 64, schedule="h1"), LaunchVm("b", "ns", 1, 64, schedule="h1")), ran
    )
    assert out.ok, out.reason
    assert sorted((p.vm, p.host) for p in out.placed) == [("a", "h1"), ("b", "h1")]
    assert [(s.kind, s.vm) for s in out.actions] == [("boot", "ns/b")]
    out = launch((LaunchVm("a", "ns", 1, 64),), ran)  # every VM runs: nothing to do
    assert out.ok and out.actions == () and [p.host for p in out.placed] == ["h1"]
    assert "duplicate" in launch((LaunchVm("a", "ns", 2, 64),), ran).reason
    assert "duplicate" in launch((LaunchVm("a", "ns", 1, 64, schedule="h2"),), ran).reason
