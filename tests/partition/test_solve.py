"""What a partition leader's solver sees of its hosts (``dvms.partition.solve``): the
CPU each host may hold under ``relief_target``."""

from __future__ import annotations

import pytest

from dvms.partition.messages import HostState, VmState
from dvms.partition.solve import snapshot_of
from dvms.placement.model import CPU_DEMAND


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
