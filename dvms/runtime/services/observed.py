"""What the node shell observes itself while carrying out the cores' effects, handed to
the runner's listeners beside the cores' own events (``dvms.partition.events``).

The cores return a ``Solve`` or a driver call and later take its result; only the shell
knows how long the call took. These records carry that, so the observability service
(``services/observe.py``) can count and time them without reading a clock of its own
and without the cores knowing about metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DriverCallDone", "SolverRan"]


@dataclass(frozen=True, slots=True)
class SolverRan:
    """A partition's solver run in a worker thread finished."""

    #: hosts and VMs of the partition the solver saw
    hosts: int
    vms: int
    ok: bool
    #: time in the solver, seconds (trio clock)
    duration_s: float


@dataclass(frozen=True, slots=True)
class DriverCallDone:
    """A driver call (``BootVm``, ``MigrateVmTo``) on this node's hypervisor finished."""

    #: "boot" or "migrate"
    call: str
    vm: str
    namespace: str
    #: destination host of a migration ("" for a boot)
    dst: str
    ok: bool
    reason: str
    #: seconds from the call to its result (trio clock)
    duration_s: float
