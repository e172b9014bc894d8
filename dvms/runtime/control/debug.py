"""Control commands for tests and demos (``dvms debug ...``): they change what a node
reports about itself, never the protocol. ``commands(daemon)`` maps command names to
coroutines taking the request's ``args``, as ``Daemon.commands`` does.

- ``debug_load {name, cpus, namespace?, anywhere?}``: give a VM of this node's test host a
  synthetic CPU demand of ``cpus`` CPUs (0 clears it). The host monitor reports it to the
  partition protocol instead of the (absent) measurement, so the node's overload check
  sees it at its next round (``PartitionConfig.monitor_period_s``). The VM must run here
  and ``cpus`` may not exceed its vCPUs, unless ``anywhere`` (with a ``namespace``): then
  the entry waits for a VM of that name to arrive (the CLI's ``--dir`` sets it on every
  node so that the load follows a migrated VM).
- ``debug_loads``: this host's capacity, total demand, overload flag and the VMs with a
  synthetic demand (those waiting for a VM too), and each VM's measured demand on a
  real hypervisor (``measured``: vm -> CPUs).
- ``debug_capacity {cpus}``: the CPU capacity this host reports to the partitions from
  now on, in CPUs (0: the host's own CPUs): an operator reserving CPU, or a lab host made
  small so that a guest burning CPU overloads it. Not a load: demand stays measured.
- ``debug_domains``: the domains of this node's hypervisor as the hypervisor lists them
  now (not dvms' records): name, state, HA generation. What a test samples to see that
  no VM runs on two hosts at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dvms.hypervisor.errors import HypervisorError
from dvms.names import InvalidName, validate_namespace_name, validate_vm_name
from dvms.runtime.client import ControlError

if TYPE_CHECKING:
    from dvms.runtime.control.commands import Daemon

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

#: Largest synthetic load accepted, CPUs (the wire limit of ``VmState.cpu_demand``).
MAX_LOAD_CPUS = 4096.0


def commands(daemon: Daemon) -> dict[str, Handler]:
    async def load(args: dict[str, Any]) -> dict[str, Any]:
        return await set_load(daemon, args)

    async def loads(args: dict[str, Any]) -> dict[str, Any]:
        return await show_loads(daemon)

    async def capacity(args: dict[str, Any]) -> dict[str, Any]:
        cpus = args.get("cpus")
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not math.isfinite(cpus):
            raise ControlError(f"debug capacity: CPUS must be a number, got {cpus!r}")
        if not 0 <= cpus <= MAX_LOAD_CPUS:
            raise ControlError(f"debug capacity: CPUS must be between 0 and {MAX_LOAD_CPUS:g}")
        daemon.monitor.set_capacity(float(cpus))
        return _summary(daemon)

    async def domains(args: dict[str, Any]) -> dict[str, Any]:
        try:
            vms = await daemon.monitor.hv.list_vms()
        except HypervisorError as exc:
            raise ControlError(f"debug domains: {exc}") from None
        rows = [{"name": v.key, "state": v.state.value, "generation": v.ha_generation} for v in vms]
        return {"host": daemon.monitor.name, "domains": rows}

    return {
        "debug_load": load,
        "debug_loads": loads,
        "debug_capacity": capacity,
        "debug_domains": domains,
    }


def _cpus(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ControlError(f"debug load: CPUS must be a number, got {value!r}")
    if not 0 <= value <= MAX_LOAD_CPUS:
        raise ControlError(f"debug load: CPUS must be between 0 and {MAX_LOAD_CPUS:g}, got {value}")
    return float(value)


def _names(args: dict[str, Any]) -> tuple[str, str | None]:
    name, namespace = args.get("name"), args.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ControlError("debug load: namespace must be a string")
    try:
        name = validate_vm_name(name)
        if namespace:
            validate_namespace_name(namespace)
    except InvalidName as exc:
        raise ControlError(f"debug load: {exc}") from None
    return name, namespace


async def set_load(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    """Validate everything first: a refused request changes nothing."""
    name, namespace = _names(args)
    cpus = _cpus(args.get("cpus"))
    anywhere = bool(args.get("anywhere"))
    if anywhere and namespace is None:
        raise ControlError("debug load: 'anywhere' needs a namespace ('' for none)")
    monitor = daemon.monitor
    await monitor.refresh()
    here = [v for v in monitor.vms if v.name == name and namespace in (None, v.namespace)]
    if len({v.namespace for v in here}) > 1:
        spaces = ", ".join(sorted(repr(v.namespace) for v in here))
        raise ControlError(f"debug load: vm {name} is in several namespaces ({spaces}): pick one")
    if not here and not anywhere:
        raise ControlError(
            f"debug load: vm {name} does not run on {monitor.name} "
            "(talk to the node that hosts it: dvms vm info)"
        )
    if here and cpus > here[0].vcpus:
        raise ControlError(
            f"debug load: vm {name} has {here[0].vcpus} vCPUs, it cannot use {cpus:g} CPUs"
        )
    ns = here[0].namespace if here else namespace
    assert ns is not None
    monitor.set_synthetic_load(ns, name, cpus)
    return {**_summary(daemon), "vm": name, "namespace": ns, "cpus": cpus, "here": bool(here)}


async def show_loads(daemon: Daemon) -> dict[str, Any]:
    monitor = daemon.monitor
    await monitor.refresh()
    present = {(v.namespace, v.name): v for v in monitor.vms}
    rows = [
        {
            "vm": name,
            "namespace": ns,
            "cpus": cpus,
            "vcpus": present[(ns, name)].vcpus if (ns, name) in present else None,
            "here": (ns, name) in present,
        }
        for (ns, name), cpus in sorted(monitor.synthetic.items())
    ]
    measured = {key: cpus for key, cpus in sorted(monitor.measured.items())}
    return {**_summary(daemon), "vms": rows, "measured": measured}


def _summary(daemon: Daemon) -> dict[str, Any]:
    """The host as its overload check sees it (demand and capacity in CPUs)."""
    monitor = daemon.monitor
    state = monitor.state()
    demand = sum((v.cpu_demand for v in state.vms), 0.0) if state is not None else 0.0
    return {
        "host": monitor.name,
        "capacity": monitor.capacity,
        "demand": round(demand, 3),
        "overloaded": daemon.partition.overloaded(),
        "partition": "busy" if daemon.partition.busy() else "free",
    }
