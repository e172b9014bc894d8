"""BtrPlace JSON instances: import, and plan export.

Nodes and VMs keep their integer ids as names (``"12"``). Each ``shareableResource``
view becomes an extra resource: node capacities in ``Host.capacity``, VM consumption in
``Vm.usage`` (defaults applied). minimega's own resources are zeroed so only the views
count. Action durations come from the VM attributes (``migrate``, ``boot``...;
default 1 s, as BtrPlace).

Supported constraint ids: ban, fence, spread, gather, among, lonely, split, splitAmong,
root, preserve, resourceCapacity, runningCapacity, running, ready, killed (as ready),
sleeping (a running VM is suspended on its host),
overbook (a host overcommit ratio), quarantine (root + continuous ban), offline (the
node is emptied: no VM may stay or arrive; switching it off is not a plan action),
online (of an online node: nothing to do). Anything else is refused by name.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvms.placement import constraints as c
from dvms.placement.model import Host, PlacementError, Snapshot, Vm, paused_gc
from dvms.placement.plan import Action

__all__ = ["Instance", "load_instance", "parse_instance", "plan_actions_json"]

_KINDS = ("migrate", "boot", "shutdown", "suspend", "allocate")


@dataclass(frozen=True, slots=True)
class Instance:
    snapshot: Snapshot
    constraints: tuple[c.Constraint, ...]
    objective: str = "minimizeMTTR"
    notes: tuple[str, ...] = field(default=())


def load_instance(path: str | Path) -> Instance:
    """Read a ``.json`` or ``.json.gz`` instance; errors name the file and problem."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlacementError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise PlacementError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlacementError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    with paused_gc():
        return parse_instance(doc, source=str(path))


def _get(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise PlacementError(f"{where}: missing {key!r}")
    value = d[key]
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        what = " or ".join(k.__name__ for k in kinds)
        raise PlacementError(f"{where}: {key!r} must be a {what}")
    return value


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlacementError(f"{where}: ids must be non-negative integers, got {value!r}")
    return str(value)


def parse_instance(doc: Any, *, source: str = "instance") -> Instance:
    model = _get(doc, "model", dict, source)
    mapping = _get(model, "mapping", dict, f"{source}: model")
    views = model.get("views", [])
    attrs = model.get("attributes", {}) or {}
    vm_host, vm_state, online, offline = _mapping(mapping, source)
    capacity, usage, notes = _views(views, source, set(online) | set(offline), set(vm_state))
    raw = _get(doc, "constraints", list, source)
    overbook: dict[str, dict[str, float]] = {}
    cons: list[c.Constraint] = []
    # built once: an instance has ~10,000 node-state constraints over ~30,000 VMs
    known_vms, known_nodes = set(vm_state), set(online) | set(offline)
    ctx = _Context(vm_host, set(online))
    checked: set[int] = set()
    for i, item in enumerate(raw):
        where = f"{source}: constraint #{i}"
        found = _constraint(item, where, ctx, overbook)
        _check_refs(found, where, known_vms, known_nodes, checked)
        cons.extend(found)
    hosts = tuple(
        Host(n, capacity=capacity.get(n, {}), overcommit=overbook.get(n, {}), online=n in online)
        for n in [*online, *offline]
    )
    vm_attrs = attrs.get("vms", {}) if isinstance(attrs, dict) else {}
    vms = tuple(
        Vm(
            key,
            vcpus=0,
            memory_mib=0,
            nics=0,
            host=vm_host.get(key),
            state=vm_state[key],
            usage=usage.get(key, {}),
            durations=_durations(vm_attrs.get(key, {})),
        )
        for key in vm_state
    )
    objective = doc.get("objective", {}).get("id", "minimizeMTTR") if isinstance(doc, dict) else ""
    return Instance(Snapshot(hosts, vms), tuple(cons), str(objective), tuple(notes))


def _mapping(mapping: dict, source: str) -> tuple[dict, dict, list, list]:
    where = f"{source}: mapping"
    vm_host: dict[str, str] = {}
    vm_state: dict[str, str] = {}

    def declare(vm: Any, state: str, host: str | None) -> None:
        key = _id(vm, where)
        if key in vm_state:
            raise PlacementError(f"{where}: VM {key} is declared twice")
        vm_state[key] = state
        if host is not None:
            vm_host[key] = host

    online: list[str] = []
    for node, content in _get(mapping, "onlineNodes", dict, where).items():
        name = _id(int(node) if str(node).isdigit() else node, where)
        online.append(name)
        for vm in content.get("runningVMs", []):
            declare(vm, "running", name)
        for vm in content.get("sleepingVMs", []):
            declare(vm, "sleeping", name)
    offline = [_id(n, where) for n in mapping.get("offlineNodes", [])]
    if len(set(online) | set(offline)) != len(online) + len(offline):
        raise PlacementError(f"{where}: a node is declared twice")
    for vm in mapping.get("readyVMs", []):
        declare(vm, "ready", None)
    return vm_host, vm_state, online, offline


def _views(
    views: Any, source: str, nodes: set[str], vms: set[str]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], list[str]]:
    capacity: dict[str, dict[str, int]] = {}
    usage: dict[str, dict[str, int]] = {}
    notes: list[str] = []
    if not isinstance(views, list):
        raise PlacementError(f"{source}: model views must be a list")
    for view in views:
        kind = view.get("id") if isinstance(view, dict) else None
        if kind != "shareableResource":
            notes.append(f"view {kind!r} ignored")
            continue
        where = f"{source}: view {view.get('rcId')!r}"
        rc = _get(view, "rcId", str, where)
        cap_default = _get(view, "defCapacity", int, where)
        use_default = _get(view, "defConsumption", int, where)
        caps, uses = view.get("nodes", {}), view.get("vms", {})
        for key in set(caps) - nodes:
            raise PlacementError(f"{where}: unknown node {key}")
        for key in set(uses) - vms:
            raise PlacementError(f"{where}: unknown VM {key}")
        for node in nodes:
            capacity.setdefault(node, {})[rc] = int(caps.get(node, cap_default))
        for vm in vms:
            usage.setdefault(vm, {})[rc] = int(uses.get(vm, use_default))
    return capacity, usage, notes


def _durations(attrs: Mapping[str, Any]) -> dict[str, int]:
    out = dict.fromkeys(_KINDS, 1)
    for kind in _KINDS:
        value = attrs.get(kind)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[kind] = value
    return out


class _Context:
    """What node-state constraints look up: the online nodes, the VMs of each node."""

    def __init__(self, vm_host: dict[str, str], online: set[str]) -> None:
        self.vm_host, self.online = vm_host, online
        self._on: dict[str, list[str]] | None = None
        self._keys: tuple[str, ...] | None = None
        self._groups: dict[tuple, tuple[frozenset[str], ...]] = {}

    def groups(self, parts: list, where: str) -> tuple[frozenset[str], ...]:
        """Node groups of an ``among``, built once per distinct list (thousands of
        constraints choose among the same racks)."""
        try:
            raw = tuple(tuple(p) for p in parts)
            found = self._groups.get(raw)
        except TypeError:  # unhashable junk: let _id name it
            raw, found = None, None
        if found is None:
            found = tuple(frozenset(_id(n, where) for n in p) for p in parts)
            if raw is not None:
                self._groups[raw] = found
        return found

    def running(self) -> tuple[str, ...]:
        """Every VM with a host, sorted."""
        if self._keys is None:
            self._keys = tuple(sorted(self.vm_host))
        return self._keys

    def vms_on(self, node: str) -> tuple[str, ...]:
        if self._on is None:
            self._on = {}
            for key, host in sorted(self.vm_host.items()):
                self._on.setdefault(host, []).append(key)
        return tuple(self._on.get(node, ()))


def _constraint(
    item: Any,
    where: str,
    ctx: _Context,
    overbook: dict[str, dict[str, float]],
) -> list[c.Constraint]:
    kind = _get(item, "id", str, where)
    where = f"{where} ({kind})"
    cont = bool(item.get("continuous", False))
    vms = _vms(item, where) if ("vm" in item or "vms" in item) else ()
    nodes = frozenset(_id(n, where) for n in item.get("nodes", []))
    if kind == "ban":
        return [c.Ban(vms, nodes, cont)]
    if kind == "fence":
        return [c.Fence(vms, nodes, cont)]
    if kind in ("spread", "gather", "lonely"):
        return [c.VM_GROUPS[kind](vms, cont)]
    if kind == "among":
        return [c.Among(vms, ctx.groups(_get(item, "parts", list, where), where), cont)]
    if kind == "root":
        return [c.Root(vms)]
    if kind == "split":
        parts = tuple(tuple(_id(v, where) for v in p) for p in _get(item, "parts", list, where))
        seen = [v for p in parts for v in p]
        if len(seen) != len(set(seen)):
            raise PlacementError(f"{where}: parts overlap")
        return [c.Split(parts, cont)]
    if kind == "splitAmong":
        parts = tuple(tuple(_id(v, where) for v in p) for p in _get(item, "vParts", list, where))
        seen = [v for p in parts for v in p]
        if len(seen) != len(set(seen)):
            raise PlacementError(f"{where}: vParts overlap")
        groups = ctx.groups(_get(item, "pParts", list, where), where)
        if sum(map(len, groups)) != len(frozenset().union(*groups)):
            raise PlacementError(f"{where}: pParts overlap")
        return [c.SplitAmong(parts, groups, cont)]
    if kind == "sleeping":
        return [c.Sleeping(vms)]
    if kind in ("running", "ready", "killed"):
        return [c.Running(vms) if kind == "running" else c.Ready(vms)]
    if kind == "preserve":
        return [c.Preserve(vms, _get(item, "rc", str, where), _get(item, "amount", int, where))]
    if kind == "resourceCapacity":
        rc, amount = _get(item, "rc", str, where), _get(item, "amount", int, where)
        return [c.ResourceCapacity(nodes, rc, amount, cont)]
    if kind == "runningCapacity":
        return [c.RunningCapacity(nodes, _get(item, "amount", int, where))]
    if kind == "overbook":
        node = _id(_get(item, "node", int, where), where)
        ratio = float(_get(item, "ratio", (int, float), where))
        overbook.setdefault(node, {})[_get(item, "rc", str, where)] = ratio
        return []
    if kind in ("quarantine", "offline", "online"):
        node = _id(_get(item, "node", int, where), where)
        if kind == "online":
            if node not in ctx.online:
                raise PlacementError(f"{where}: booting node {node} is not supported")
            return []
        if kind == "offline":
            return [c.Offline(frozenset({node}))]
        here = ctx.vms_on(node)
        mine = set(here)
        others = tuple(k for k in ctx.running() if k not in mine)
        found: list[c.Constraint] = [c.Root(here)] * bool(here)
        return found + [c.Ban(others, frozenset({node}), True)] * bool(others)
    raise PlacementError(f"{where}: unsupported constraint {kind!r}")


def _check_refs(
    found: list[c.Constraint], where: str, vms: set[str], nodes: set[str], checked: set[int]
) -> None:
    """Every VM and node a constraint names exists (shared group tuples, whose ids are
    in ``checked``, are looked at once)."""
    for k in found:
        names = set(getattr(k, "vms", ())) | {v for p in getattr(k, "parts", ()) for v in p}
        for name in sorted(names - vms):
            raise PlacementError(f"{where} ({k.kind}): unknown VM {name!r}")
        hosts = set(getattr(k, "hosts", ()))
        groups = getattr(k, "groups", ())
        if id(groups) not in checked:
            hosts.update(n for g in groups for n in g)
        for name in sorted(hosts - nodes):
            raise PlacementError(f"{where} ({k.kind}): unknown host {name!r}")
        if groups:
            checked.add(id(groups))


def _vms(item: dict, where: str) -> tuple[str, ...]:
    raw = item["vms"] if "vms" in item else [item["vm"]]
    return tuple(_id(v, where) for v in raw)


def plan_actions_json(actions: list[Action]) -> list[dict]:
    """Actions in BtrPlace's plan vocabulary (``migrateVM`` with ``from``/``to``...)."""
    out = []
    for a in actions:
        ident = {
            "migrate": "migrateVM",
            "boot": "bootVM",
            "shutdown": "shutdownVM",
            "suspend": "suspendVM",
            "allocate": "allocate",
        }[a.kind]
        item: dict[str, Any] = {"id": ident, "vm": _num(a.vm), "start": a.start, "end": a.end}
        if a.kind in ("migrate", "suspend"):
            item.update({"from": _num(a.src), "to": _num(a.dst)})
        elif a.kind == "allocate":
            item.update({"on": _num(a.dst), "rc": a.resource, "amount": a.amount})
        else:
            item["on"] = _num(a.dst if a.kind == "boot" else a.src)
        out.append(item)
    return out


def _num(name: str | None) -> int | str | None:
    return int(name) if name is not None and name.isdigit() else name
