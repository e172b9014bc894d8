"""What the daemon feeds back after carrying out effects.

    state = launch_finished(state, "foo", launch.schedule, {"vm3": "disk full"}, now=t)
    state = report_vms(state, "foo", {"vm1": ("node2", "RUNNING")})

Both are pure and validate their input (``ValueError`` on an unknown namespace or state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dvms.namespace import schedule as sched
from dvms.namespace.state import VM_STATES, State, with_vms

__all__ = ["forget_vms", "launch_finished", "report_vms"]


def _namespace(state: State, namespace: str):
    ns = state.get(namespace)
    if ns is None:
        raise ValueError(f"unknown namespace: {namespace}")
    return ns


def launch_finished(
    state: State, namespace: str, schedule: int, failed: Mapping[str, str], *, now: float
) -> State:
    """Close the ``ns schedule status`` row of a ``Launch``: every VM of it was created
    except those in ``failed`` (name -> error), which are dropped from the namespace."""
    return state.put(sched.finish(_namespace(state, namespace), schedule, failed, now))


def report_vms(state: State, namespace: str, reports: Mapping[str, tuple[str, str]]) -> State:
    """Hosts' word on VMs of ``namespace``: name -> (host, state). Unknown names are
    ignored (a report may race with ``vm flush``)."""
    ns = _namespace(state, namespace)
    for host, vm_state in reports.values():
        if vm_state not in VM_STATES or not host:
            raise ValueError(f"bad report ({host!r}, {vm_state!r})")
    vms = [replace(v, host=reports[v.name][0], state=reports[v.name][1]) if v.name in reports
           else v for v in ns.vms]  # fmt: skip
    return state.put(with_vms(ns, vms))


def forget_vms(state: State, namespace: str, names: set[str]) -> State:
    """Drop VMs that vanished from their hosts."""
    ns = _namespace(state, namespace)
    return state.put(with_vms(ns, [v for v in ns.vms if v.name not in names]))
