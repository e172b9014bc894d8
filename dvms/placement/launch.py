"""Launch solving: place new (ready) VMs next to the running ones, minimega style.

Order of work (minimega's, with the fixes of docs/namespaces.md):

    checks (no host / no VM / pinned host down)      -> PlacementError, minimega's text
    batches = runs of VMs with the same config, sorted:
        pinned first (by host name) > coschedule limit first (lower first)
        > more colocate followers first > larger batch first      (stable sort)
    units = each non-floating VM + every VM that colocates with it (recursively)
    place units (search.py): least loaded host passing every filter, then harder

Coschedule is honoured while choosing (a host that would break a limit is refused), a
single host gets no shortcut, and ties are broken by host name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dvms.placement import constraints as c
from dvms.placement.build import build_constraints, minimega_specs
from dvms.placement.config import PlacementConfig
from dvms.placement.explain import HostVerdict, Refusal
from dvms.placement.locality import LocalityNote
from dvms.placement.model import PlacementError, Snapshot, Vm, vm_from_spec
from dvms.placement.search import place_units
from dvms.placement.spec import VjobSpec
from dvms.placement.workspace import Workspace

__all__ = ["LaunchResult", "launch_vjob", "solve_launch", "vjob_parts"]


@dataclass(frozen=True, slots=True)
class LaunchResult:
    """``placement`` maps each launched VM key to its host (empty unless ``ok``).
    ``proven`` says an infeasible answer is a proof (exhaustive search)."""

    ok: bool
    placement: Mapping[str, str] = field(default_factory=dict)
    refusal: Refusal | None = None
    proven: bool = False
    search_nodes: int = 0
    #: launches the image-locality score sent to another host than the least loaded
    #: one (locality.py), in placement order of their first VM
    locality: tuple[LocalityNote, ...] = ()

    def __str__(self) -> str:
        return "ok" if self.ok else str(self.refusal)


def _precheck(snapshot: Snapshot, n_vms: int) -> None:
    if not snapshot.hosts:
        raise PlacementError("namespace must contain at least one host to launch VMs")
    if not n_vms:
        raise PlacementError("namespace must contain at least one queued VM to launch VMs")
    if not any(h.online for h in snapshot.hosts):
        raise PlacementError("no hosts to schedule VMs on")


def solve_launch(
    snapshot: Snapshot,
    vms: Sequence[Vm],
    constraints: Sequence[c.Constraint] = (),
    config: PlacementConfig | None = None,
) -> LaunchResult:
    """Hosts for the ready VMs ``vms`` given the running VMs of ``snapshot``."""
    config = config or PlacementConfig()
    _precheck(snapshot, len(vms))
    for vm in vms:
        if vm.state != "ready":
            raise PlacementError(f"vm {vm.key}: only ready VMs can be launched")
    online = {h.name for h in snapshot.hosts if h.online}
    for k in constraints:
        if isinstance(k, c.Schedule) and k.host not in online:
            raise PlacementError(f"VM scheduled on unknown host: `{k.host}`")
    ws = Workspace(snapshot, constraints, config, launch=vms)
    try:
        return _solve_launch(ws, vms, constraints, online)
    finally:
        ws.close()


def _solve_launch(
    ws: Workspace, vms: Sequence[Vm], constraints: Sequence[c.Constraint], online: set[str]
) -> LaunchResult:
    too_few = _spread_needs_more_hosts(ws, constraints, online)
    if too_few is not None:
        return LaunchResult(False, {}, too_few, proven=True)
    for v, vm in enumerate(ws.vms):
        if vm.state == "running" and vm.host is not None:
            ws.place(v, ws.h_index[vm.host])
    units = _units(ws, vms, constraints)
    outcome = place_units(ws, units)
    if not outcome.ok:
        return LaunchResult(False, {}, outcome.refusal, outcome.proven, outcome.nodes)
    placement = {vm.key: ws.hosts[ws.assign[ws.v_index[vm.key]]].name for vm in vms}
    notes = tuple(
        ws.locality_note(unit, chosen, plain, local)
        for _, (unit, chosen, plain, local) in sorted(ws.locality_notes.items())
        if all(ws.assign[v] == chosen for v in unit)
    )
    return LaunchResult(True, placement, None, False, outcome.nodes, notes)


def _spread_needs_more_hosts(
    ws: Workspace, constraints: Sequence[c.Constraint], online: set[str]
) -> Refusal | None:
    """A spread of more VMs than online hosts cannot hold: say so at once, without a
    search, which could prove it only by exhausting its budget (a partition grows one
    node at a time and solves at every size). Why: tests/placement/test_pl_launch.py::
    test_spread_wider_than_the_online_hosts_is_refused_at_once_and_says_why"""
    for k in constraints:
        if not isinstance(k, c.Spread):
            continue
        members = sorted({v for v in k.vms if v in ws.v_index})
        if len(members) > len(online):
            detail = (
                f"spread of {len(members)} VMs needs {len(members)} hosts, {len(online)} online"
            )
            verdicts = tuple(HostVerdict(h, "spread", detail) for h in sorted(online))
            return Refusal(tuple(members), verdicts, note=detail)
    return None


def _units(ws: Workspace, vms: Sequence[Vm], constraints: Sequence[c.Constraint]) -> list:
    launching = {vm.key for vm in vms}
    pins = {k.vm: k.host for k in constraints if isinstance(k, c.Schedule)}
    follows = {k.vm: k.target for k in constraints if isinstance(k, c.Colocate)}
    followers: dict[str, list[str]] = {}
    for vm in vms:
        target = follows.get(vm.key)
        if target is None:
            continue
        if target in launching and vm.key not in pins:
            followers.setdefault(target, []).append(vm.key)
        elif target not in launching:
            host = ws.vms[ws.v_index[target]].host
            if host is not None:
                pins.setdefault(vm.key, host)  # as minimega
    floating = {k for ks in followers.values() for k in ks}

    def unit(key: str) -> tuple[int, ...]:
        out, todo = [], [key]
        while todo:
            k = todo.pop(0)
            out.append(ws.v_index[k])
            todo.extend(followers.get(k, ()))
        return tuple(out)

    batches: list[list[Vm]] = []
    last = None
    for vm in vms:
        v = ws.v_index[vm.key]
        cfg = (
            vm.namespace,
            vm.vcpus,
            vm.memory_mib,
            vm.nics,
            ws.cos[v],
            pins.get(vm.key),
            follows.get(vm.key),
        )
        if batches and cfg == last:
            batches[-1].append(vm)
        else:
            batches.append([vm])
        last = cfg

    def order(batch: list[Vm]) -> tuple:
        first = batch[0]
        pin = pins.get(first.key)
        cos = ws.cos[ws.v_index[first.key]]
        n_follow = sum(len(followers.get(vm.key, ())) for vm in batch)
        return (pin is None, pin or "", cos == -1, max(cos, 0), -n_follow, -len(batch))

    batches.sort(key=order)
    return [unit(vm.key) for batch in batches for vm in batch if vm.key not in floating]


def vjob_parts(snapshot: Snapshot, vjob: VjobSpec) -> tuple[list[Vm], list[c.Constraint]]:
    """The ready VMs and the engine constraints of a vjob (minimega's scheduling fields
    included), refusing bad input with minimega's texts where it has them."""
    launch = [vm_from_spec(s, namespace=vjob.namespace or s.namespace) for s in vjob.vms]
    keys = [vm.key for vm in snapshot.vms] + [vm.key for vm in launch]
    specs = [*minimega_specs(vjob.vms), *vjob.constraints]
    built = build_constraints(
        specs, vm_keys=keys, hosts=[h.name for h in snapshot.hosts], namespace=vjob.namespace
    )
    return launch, built


def launch_vjob(
    snapshot: Snapshot, vjob: VjobSpec, config: PlacementConfig | None = None
) -> LaunchResult:
    """Launch a user's vjob: ``vjob_parts`` then ``solve_launch``."""
    _precheck(snapshot, len(vjob.vms))
    launch, built = vjob_parts(snapshot, vjob)
    return solve_launch(snapshot, launch, built, config)
