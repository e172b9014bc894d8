"""MODEL.toml: a partition as the scheduler would see it, for ``dvms solve``.

::

    relief = true                 # optional: also relieve measured CPU overload

    [config]                      # optional: PlacementConfig fields
    load = "cpucommit"
    cpu_overcommit = 16.0

    [[hosts]]
    name = "h1"
    cpus = 16
    memory = 65536                # MiB
    nics = 8                      # optional NIC budget
    online = true                 # optional
    labels = { rack = "r1" }      # optional
    capacity = { gpu = 2 }        # optional extra resources
    overcommit = { vcpus = 4.0 }  # optional per-resource ratios
    images = { debian-12 = 1.0 }  # optional: fraction of each image held here

      [[hosts.vms]]               # VMs running on h1 now
      name = "db1"
      namespace = "prod"          # optional
      vcpus = 2
      memory = 4096               # MiB
      nics = 1
      cpu_demand = 1.5            # optional measured CPUs
      coschedule = -1             # optional
      usage = { gpu = 1 }         # optional
      migrate = 4                 # optional migration seconds

    [images]                      # optional: image sizes in MiB, for image locality:
    debian-12 = 2048              # a vjob VM naming file:debian-12 prefers its holders

    [vjob]                        # optional: VMs to launch + constraints (docs/vjob.md)
    name = "web"
    ...

Everything is validated; an error names the key path (``hosts[1].vms[0].memory``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dvms.placement import constraints as c
from dvms.placement.checker import check_plan
from dvms.placement.config import PlacementConfig
from dvms.placement.launch import solve_launch, vjob_parts
from dvms.placement.locality import LocalityNote
from dvms.placement.model import Host, PlacementError, Snapshot, Vm
from dvms.placement.plan import Action, Plan
from dvms.placement.repair import solve_repair
from dvms.placement.spec import VjobSpec, VmSpec

__all__ = ["Model", "ModelOutcome", "load_model", "model_from_dict", "solve_model"]

_TOP = ("config", "hosts", "vjob", "relief", "images")
_HOST = ("name", "cpus", "memory", "nics", "online", "labels", "capacity", "overcommit", "images",
         "vms")  # fmt: skip
_VM = ("name", "namespace", "vcpus", "memory", "nics", "cpu_demand", "coschedule", "usage",
       "migrate", "state")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Model:
    snapshot: Snapshot
    config: PlacementConfig
    vjob: VjobSpec | None = None
    relief: bool = False
    #: image sizes in bytes (``[images]``, given in MiB): the vjob's VMs that name one
    #: as ``file:NAME`` score its holders higher (image locality)
    images: Mapping[str, int] = field(default_factory=dict)


def load_model(path: str | Path) -> Model:
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlacementError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlacementError(f"{where}: invalid TOML: {exc}") from None
    return model_from_dict(data, where=where)


def _keys(where: str, table: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise PlacementError(f"{where}: expected a table")
    for key in table:
        if key not in allowed:
            raise PlacementError(f"{where}: unknown key {key!r} (expected {', '.join(allowed)})")
    return table


def _int(where: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlacementError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _config(where: str, table: Any) -> PlacementConfig:
    names = tuple(f.name for f in fields(PlacementConfig))
    table = _keys(where, table, names)
    try:
        return PlacementConfig(**table)
    except (TypeError, ValueError) as exc:
        raise PlacementError(f"{where}: {exc}") from None


def _vm(where: str, table: Any, host: str) -> Vm:
    t = _keys(where, table, _VM)
    if "name" not in t:
        raise PlacementError(f"{where}: missing 'name'")
    demand = t.get("cpu_demand")
    if demand is not None and (isinstance(demand, bool) or not isinstance(demand, int | float)):
        raise PlacementError(f"{where}.cpu_demand: expected a number, got {demand!r}")
    durations = {"migrate": _int(f"{where}.migrate", t["migrate"])} if "migrate" in t else {}
    try:
        return Vm(
            name=t["name"],
            namespace=t.get("namespace", ""),
            vcpus=_int(f"{where}.vcpus", t.get("vcpus", 1)),
            memory_mib=_int(f"{where}.memory", t.get("memory", 2048)),
            nics=_int(f"{where}.nics", t.get("nics", 0)),
            host=host,
            state=t.get("state", "running"),
            cpu_demand=demand,
            coschedule=_int(f"{where}.coschedule", t.get("coschedule", -1), minimum=-1),
            usage=dict(t.get("usage", {})),
            durations=durations,
        )
    except PlacementError as exc:
        raise PlacementError(f"{where}: {exc}") from None


def _host(where: str, table: Any) -> tuple[Host, list[Vm]]:
    t = _keys(where, table, _HOST)
    if "name" not in t:
        raise PlacementError(f"{where}: missing 'name'")
    try:
        host = Host(
            name=t["name"],
            cpus=_int(f"{where}.cpus", t.get("cpus", 0)),
            memory_mib=_int(f"{where}.memory", t.get("memory", 0)),
            nics=None if "nics" not in t else _int(f"{where}.nics", t["nics"]),
            labels=dict(t.get("labels", {})),
            capacity=dict(t.get("capacity", {})),
            overcommit=dict(t.get("overcommit", {})),
            online=bool(t.get("online", True)),
            images=_held(f"{where}.images", t.get("images", {})),
        )
    except PlacementError as exc:
        raise PlacementError(f"{where}: {exc}") from None
    vms = t.get("vms", [])
    if not isinstance(vms, list):
        raise PlacementError(f"{where}.vms: expected an array of tables")
    return host, [_vm(f"{where}.vms[{i}]", v, host.name) for i, v in enumerate(vms)]


def model_from_dict(d: Mapping[str, Any], *, where: str) -> Model:
    d = _keys(where, d, _TOP)
    config = _config(f"{where}: config", d.get("config", {}))
    raw_hosts = d.get("hosts", [])
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise PlacementError(f"{where}: hosts: expected at least one [[hosts]] table")
    hosts, vms = [], []
    for i, table in enumerate(raw_hosts):
        host, on = _host(f"{where}: hosts[{i}]", table)
        hosts.append(host)
        vms.extend(on)
    images = _images(f"{where}: images", d.get("images", {}))
    for i, host in enumerate(hosts):
        unknown = sorted(set(host.images) - set(images))
        if unknown:
            raise PlacementError(f"{where}: hosts[{i}].images: {unknown[0]!r} is not in [images]")
    snapshot = Snapshot(tuple(hosts), tuple(vms))
    vjob = None
    if "vjob" in d:
        from dvms.placement.vjob import vjob_from_dict  # the formats' parser

        vjob = vjob_from_dict(d["vjob"], where=f"{where}: vjob")
    relief = d.get("relief", False)
    if not isinstance(relief, bool):
        raise PlacementError(f"{where}: relief: expected true or false")
    return Model(snapshot, config, vjob, relief, images)


def _held(where: str, table: Any) -> dict[str, float]:
    if not isinstance(table, Mapping):
        raise PlacementError(f"{where}: expected a table of fractions held")
    return dict(table)


def _images(where: str, table: Any) -> dict[str, int]:
    if not isinstance(table, Mapping):
        raise PlacementError(f"{where}: expected a table of sizes in MiB")
    return {name: _int(f"{where}.{name}", mib, minimum=1) << 20 for name, mib in table.items()}


def with_images(vms: list[Vm], specs: tuple[VmSpec, ...], sizes: Mapping[str, int]) -> list[Vm]:
    """The launched VMs with the sizes of the images they name (``file:NAME``) that
    ``sizes`` knows: what the image-locality score reads."""
    out = []
    for vm, spec in zip(vms, specs, strict=True):
        images = {ref: sizes[ref] for ref in spec.file_refs() if ref in sizes}
        out.append(replace(vm, images=images) if images else vm)
    return out


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What ``dvms solve MODEL.toml`` reports: the launch (if a vjob is given), then the
    repair plan of the result. ``actions`` start with the boots of the launched VMs;
    ``problems`` comes from the independent checker ([] = viable)."""

    status: str
    launched: Mapping[str, str]
    plan: Plan | None
    actions: tuple[Action, ...]
    placement: Mapping[str, str]
    problems: tuple[str, ...]
    reason: str = ""
    details: tuple[str, ...] = ()
    #: launches the image-locality score sent elsewhere than the least loaded host
    locality: tuple[LocalityNote, ...] = ()


def solve_model(model: Model) -> ModelOutcome:
    """Launch the vjob (minimega semantics), then repair/relieve the result."""
    snap, config = model.snapshot, model.config
    new_vms: list[Vm] = []
    cons: list[c.Constraint] = []
    launched: dict[str, str] = {}
    locality: tuple[LocalityNote, ...] = ()
    if model.vjob is not None:
        new_vms, cons = vjob_parts(snap, model.vjob)
        new_vms = with_images(new_vms, model.vjob.vms, model.images)
        result = solve_launch(snap, new_vms, cons, config)
        if not result.ok:
            assert result.refusal is not None
            return ModelOutcome("infeasible", {}, None, (), snap.placement(), (),
                                str(result.refusal), tuple(result.refusal.details()))  # fmt: skip
        launched = dict(result.placement)
        locality = result.locality
    running = tuple(replace(vm, state="running", host=launched[vm.key]) for vm in new_vms)
    plan = solve_repair(snap.with_vms(running), cons, config, relief=model.relief)
    boots = [
        Action("boot", vm.key, 0, vm.duration("boot", config), dst=launched[vm.key])
        for vm in new_vms
    ]
    shift = max((a.end for a in boots), default=0)
    actions = (
        *boots,
        *(replace(a, start=a.start + shift, end=a.end + shift) for a in plan.actions),
    )
    full = snap.with_vms(new_vms)
    checks = [*cons, c.Running(tuple(launched))] if launched else cons
    problems = check_plan(full, checks, actions, config, relief=model.relief)
    if plan.status != "solved":
        where = full_placement(snap, launched)
        return ModelOutcome(plan.status, launched, plan, tuple(boots), where,
                            tuple(problems), plan.reason, plan.details, locality)  # fmt: skip
    return ModelOutcome(
        "solved", launched, plan, actions, plan.placement, tuple(problems), locality=locality
    )


def full_placement(snap: Snapshot, launched: Mapping[str, str]) -> dict[str, str]:
    return {**snap.placement(), **launched}
