"""The placement engine: least load under constraints, repair plans, explanations.

Pure code (no I/O, no clock). The partition leader calls it with a frozen ``Snapshot``:

    result = solve_launch(snapshot, vms, constraints, config)   # -> LaunchResult
    plan = solve_repair(snapshot, constraints, config)          # -> Plan
    plan = solve_repair(snapshot, constraints, config, relief=True)  # overload relief
    problems = check_plan(snapshot, constraints, plan.actions, config)  # [] = viable

See dvms/placement/README.md for the data flow and docs/placement.md for semantics.
"""

from __future__ import annotations

from dvms.placement.btrplace import Instance as Instance
from dvms.placement.btrplace import load_instance as load_instance
from dvms.placement.build import KINDS as KINDS
from dvms.placement.build import build_constraints as build_constraints
from dvms.placement.build import minimega_specs as minimega_specs
from dvms.placement.checker import check_placement as check_placement
from dvms.placement.checker import check_plan as check_plan
from dvms.placement.config import PlacementConfig as PlacementConfig
from dvms.placement.constraints import Constraint as Constraint
from dvms.placement.explain import HostVerdict as HostVerdict
from dvms.placement.explain import Refusal as Refusal
from dvms.placement.launch import LaunchResult as LaunchResult
from dvms.placement.launch import launch_vjob as launch_vjob
from dvms.placement.launch import solve_launch as solve_launch
from dvms.placement.load import HostLoad as HostLoad
from dvms.placement.load import overloaded_hosts as overloaded_hosts
from dvms.placement.load import rank_hosts as rank_hosts
from dvms.placement.locality import LocalityNote as LocalityNote
from dvms.placement.locality import locality_score as locality_score
from dvms.placement.model import Host as Host
from dvms.placement.model import PlacementError as PlacementError
from dvms.placement.model import Snapshot as Snapshot
from dvms.placement.model import Vm as Vm
from dvms.placement.model import vm_from_spec as vm_from_spec
from dvms.placement.plan import Action as Action
from dvms.placement.plan import Plan as Plan
from dvms.placement.repair import solve_repair as solve_repair

__all__ = [
    "KINDS",
    "Action",
    "Constraint",
    "Host",
    "HostLoad",
    "HostVerdict",
    "Instance",
    "LaunchResult",
    "LocalityNote",
    "PlacementConfig",
    "PlacementError",
    "Plan",
    "Refusal",
    "Snapshot",
    "Vm",
    "build_constraints",
    "check_placement",
    "check_plan",
    "launch_vjob",
    "load_instance",
    "locality_score",
    "minimega_specs",
    "overloaded_hosts",
    "rank_hosts",
    "solve_launch",
    "solve_repair",
    "vm_from_spec",
]
