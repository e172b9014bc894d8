"""The solver's mutable working state over an immutable ``Snapshot``.

Everything is index based (hosts ``h``, VMs ``v``, resources ``r``) for speed. The
pipeline for "may v go on h" is fixed here, cheapest test first:

    online -> static (ban/fence/schedule/root) -> capacity per resource
           -> coschedule (honoured while choosing) -> constraint filters of v
           -> filters that check every VM (lonely, resource/running capacity)

Hosts are kept in a sorted list by load key (full hosts last, then load, then name), so
the least loaded host that passes is the first hit of a scan.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from dvms.placement import constraints as c
from dvms.placement.config import PlacementConfig
from dvms.placement.explain import HostVerdict, Refusal
from dvms.placement.filters import (
    AmongFilter,
    CapacityOnSet,
    Filter,
    GatherFilter,
    LonelyFilter,
    SplitAmongFilter,
    SplitFilter,
    SpreadFilter,
    StaticFilter,
)
from dvms.placement.load import make_key
from dvms.placement.locality import LocalityNote, held_bytes, locality_score
from dvms.placement.model import (
    CPU_DEMAND,
    MEMORY,
    NICS,
    VCPUS,
    Host,
    PlacementError,
    Snapshot,
    Vm,
)

__all__ = ["Workspace", "rule_of", "shortage"]

Failure = tuple[str, str]
#: Holders a ``LocalityNote`` names (the best scores first).
NOTE_HOLDERS = 8


def rule_of(resource: str) -> str:
    """Explanation rule name for a capacity resource."""
    return {MEMORY: "memory", CPU_DEMAND: "cpu"}.get(resource, resource)


def shortage(resource: str, used: float, demand: float, limit: float) -> str:
    """Why a VM asking ``demand`` of ``resource`` does not fit a host with ``used`` of
    ``limit`` taken, in the units an operator sets (MiB, CPUs, vCPUs)."""
    scale = 1000 if resource == CPU_DEMAND else 1  # milli-CPUs: a launch asks its vcpus
    need, free, cap = (_num(x / scale) for x in (demand, max(limit - used, 0), limit))
    if resource == MEMORY:
        return f"needs {need} MiB of memory, {free} of {cap} MiB free"
    unit = {CPU_DEMAND: "CPUs", VCPUS: "vCPUs"}.get(resource, resource)
    return f"needs {need} {unit}, {free} of {cap} free"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"


def _rows(vms: Sequence[Vm], resources: Sequence[str]) -> tuple[list[list[float]], list[int]]:
    """``[[vm.demand(r) for r in resources] for vm in vms]``, without a call per value,
    reading each VM's attributes once: the same rules as ``Vm.demand``. Also, per VM,
    the bit mask of the resources it uses (demand > 0)."""
    kinds = [_KIND.get(r, 0) for r in resources]
    names = list(resources)
    nr = len(kinds)
    rows: list[list[float]] = []
    masks: list[int] = []
    for vm in vms:
        usage = vm.usage
        row: list[float] = []
        mask = 0
        for r in range(nr):
            kind = kinds[r]
            name = names[r]
            # every demand is an int (usage and sizes are, cpu_demand is rounded up):
            # compiled, tested as a native int, not unboxed as a float
            x: int
            if usage and name in usage:
                x = usage[name]
            elif kind == 1:
                x = vm.vcpus
            elif kind == 2:
                x = vm.memory_mib
            elif kind == 3:
                x = vm.nics
            elif kind == 4:
                measured = vm.cpu_demand
                x = vm.vcpus * 1000 if measured is None else math.ceil(measured * 1000)
            else:
                x = 0
            row.append(x)
            if x > 0:
                mask |= 1 << r
        rows.append(row)
        masks.append(mask)
    return rows, masks


#: ``_rows``: how a resource's demand is read when a VM's ``usage`` does not name it
_KIND = {VCPUS: 1, MEMORY: 2, NICS: 3, CPU_DEMAND: 4}


def _resource_names(hosts: Sequence[Host], vms: Sequence[Vm], relief: bool) -> set[str]:
    """``Snapshot.resources(relief=relief)`` of these hosts and VMs, as a set. Written
    out here: the model's classes are interpreted, and a repair of a small partition
    is mostly fixed cost (``tests/placement/test_pl_workspace.py`` checks they agree)."""
    names = {VCPUS, MEMORY, NICS}
    for host in hosts:
        if host.capacity:
            names.update(host.capacity)
    for vm in vms:
        if vm.usage:
            names.update(vm.usage)
    if relief:
        names.add(CPU_DEMAND)
    return names


def _limits(
    hosts: Sequence[Host], resources: Sequence[str], config: PlacementConfig
) -> list[list[float]]:
    """``[[h.limit(r, config) for r in resources] for h in hosts]``, without an
    interpreted call per value (same rules as ``Host.limit``, checked by the tests)."""
    out: list[list[float]] = []
    inf = math.inf
    for h in hosts:
        row: list[float] = []
        capacity, overcommit = h.capacity, h.overcommit
        for r in resources:
            if r in capacity:
                row.append(math.floor(capacity[r] * overcommit.get(r, 1.0)))
            elif r == VCPUS:
                ratio = overcommit.get(VCPUS, config.cpu_overcommit)
                row.append(inf if ratio is None or not h.cpus else math.floor(h.cpus * ratio))
            elif r == MEMORY:
                ratio = overcommit.get(MEMORY, config.memory_overcommit)
                if ratio is None or not h.memory_mib:
                    row.append(inf)
                else:
                    row.append(math.floor(h.memory_mib * ratio))
            elif r == NICS:
                row.append(inf if h.nics is None else h.nics)
            elif r == CPU_DEMAND:
                row.append(
                    inf if not h.cpus else math.floor(h.cpus * 1000 * config.overload_threshold)
                )
            else:
                row.append(inf)
        out.append(row)
    return out


def _active(cols: Sequence[Sequence[float]], n: int) -> list[tuple[int, ...]]:
    """Per VM, the resources it uses (demand > 0). Most VMs use the same ones: they
    share one tuple, found a column at a time; only the others get their own."""
    zeros = [[v for v, d in enumerate(col) if not d > 0] for col in cols]
    usual = tuple(r for r, z in enumerate(zeros) if 2 * len(z) < n)
    # VMs unlike the usual ones: a zero where most use the resource, or the reverse
    odd: set[int] = set()
    for r, z in enumerate(zeros):
        if r in usual:
            odd.update(z)
        else:
            zero = set(z)
            odd.update(v for v in range(n) if v not in zero)
    out = [usual] * n
    for v in odd:
        out[v] = tuple(r for r, col in enumerate(cols) if col[v] > 0)
    return out


class Workspace:
    def __init__(
        self,
        snapshot: Snapshot,
        constraints: Sequence[c.Constraint],
        config: PlacementConfig,
        *,
        launch: Sequence[Vm] = (),
        relief: bool = False,
    ) -> None:
        self.config = config
        self.hosts = list(snapshot.hosts)
        #: host names by index (read once: see ``now``)
        self.hnames = [h.name for h in self.hosts]
        self.h_index = {name: i for i, name in enumerate(self.hnames)}
        self.vms = list(snapshot.vms) + list(launch)
        #: VM keys by index (``Vm.key`` formats a string on every read; as a property of
        #: an interpreted class it is also a Python call per VM, hence written out here)
        self.vkeys = [f"{vm.namespace}/{vm.name}" if vm.namespace else vm.name for vm in self.vms]
        self.v_index: dict[str, int] = {}
        for i, key in enumerate(self.vkeys):
            if key in self.v_index:
                raise PlacementError(f"duplicate vm {key!r}")
            self.v_index[key] = i
        names = _resource_names(self.hosts, self.vms, relief)
        names.update(k.resource for k in constraints if isinstance(k, c.ResourceCapacity))
        self.resources = tuple(sorted(names))
        self.r_index = {r: i for i, r in enumerate(self.resources)}
        self.online = [h.online for h in self.hosts]
        self.limits = _limits(self.hosts, self.resources, config)
        rows, masks = _rows(self.vms, self.resources)
        #: demand per VM and resource before the plan, then in the target (``preserve``
        #: raises it); a VM's two rows are one list until a ``preserve`` changes it
        self.cur = rows
        self.demand = list(self.cur)
        self.cost = self._costs()
        #: each VM's state now (a repair reads it several times per VM: from compiled
        #: code, an attribute of the model's interpreted class is a generic lookup)
        self.now: list[str] = []
        self.cos: list[int] = []
        for vm in self.vms:
            self.now.append(vm.state)
            cos = vm.coschedule
            self.cos.append(cos + 1 if cos != -1 else -1)
        self.movable = [True] * len(self.vms)
        self._init_state()
        self._build(constraints)
        #: per VM, the resources its target demand uses (> 0)
        if any(row is not self.cur[v] for v, row in enumerate(self.demand)):
            cols = [[row[r] for row in self.demand] for r in range(len(self.resources))]
            self.active = _active(cols, len(self.vms))
        else:  # one tuple per distinct mask, shared
            used: dict[int, tuple[int, ...]] = {}
            active: list[tuple[int, ...]] = []
            for mask in masks:
                found = used.get(mask)
                if found is None:
                    found = used[mask] = tuple(
                        r for r in range(len(self.resources)) if mask >> r & 1
                    )
                active.append(found)
            self.active = active
        #: VMs whose target demand differs from their current one (``preserve``)
        self.grown = frozenset(
            v for v, row in enumerate(self.demand) if row is not self.cur[v] and row != self.cur[v]
        )
        self.keyfn = make_key(config.load, self.hosts, self.resources, self.limits)
        self.keys = [self._key(h) for h in range(len(self.hosts))]
        self.order = sorted((self.keys[h], h) for h in range(len(self.hosts)) if self.online[h])
        self.departing: frozenset[int] | None = None
        #: plan.py: (origin, occupancy per host, VMs per host) before any plan of it
        self.plan_start: tuple[tuple[int, ...], list[list[float]], list[set[int]]] | None = None
        #: plan.py: the continuous filters a plan checks, by VM (spreads) and for all
        self.plan_index: (
            tuple[dict[int, list[SpreadFilter]], list[LonelyFilter | CapacityOnSet]] | None
        ) = None
        self.order_stay: list[tuple[tuple, int]] = []
        self.order_away: list[tuple[tuple, int]] = []
        #: image locality (locality.py): per VM, host -> score > 0 (empty: no image held)
        self.locality = self._localities()
        #: choices the score changed, by the first VM of the unit: (unit, host chosen,
        #: host chosen by load alone, scores); launch.py keeps those still true at the end
        self.locality_notes: dict[int, tuple[tuple[int, ...], int, int, dict[int, float]]] = {}

    def _costs(self) -> list[int]:
        """Seconds each VM's migration takes (its ``migrate`` duration, else its memory
        over ``migration_mib_per_s``; at least 1)."""
        speed = self.config.migration_mib_per_s
        by_memory: dict[int, int] = {}
        out = []
        for vm in self.vms:
            durations = vm.durations
            if durations and "migrate" in durations:
                out.append(max(1, durations["migrate"]))
                continue
            memory = vm.memory_mib
            cost = by_memory.get(memory)
            if cost is None:
                cost = by_memory[memory] = max(1, math.ceil(memory / speed))
            out.append(cost)
        return out

    def _localities(self) -> list[dict[int, float]]:
        """Per VM, the image-locality score of each host holding some of its images;
        VMs with the same images share one (read-only) map."""
        none: dict[int, float] = {}
        if not self.config.image_locality_weight or not any(vm.images for vm in self.vms):
            return [none] * len(self.vms)
        holders: dict[str, set[int]] = {}
        for h, host in enumerate(self.hosts):
            for image in host.images:
                holders.setdefault(image, set()).add(h)
        shared: dict[tuple[tuple[str, int], ...], dict[int, float]] = {}
        out = []
        for vm in self.vms:
            sig = tuple(sorted(vm.images.items()))
            scores = shared.get(sig)
            if scores is None:
                hosts = sorted({h for image in vm.images for h in holders.get(image, ())})
                each = ((h, locality_score(vm, self.hosts[h], self.config)) for h in hosts)
                scores = shared[sig] = {h: s for h, s in each if s > 0}
            out.append(scores if scores else none)
        return out

    def _init_state(self) -> None:
        nh, nr = len(self.hosts), len(self.resources)
        self.assign = [-1] * len(self.vms)
        self.count = [0] * nh
        self.used = [[0.0] * nr for _ in range(nh)]
        #: per host, coschedule limit -> VMs with it (a dict: a Counter is interpreted)
        self.cos_hist: list[dict[int, int]] = [{} for _ in range(nh)]
        self.host_vms: list[set[int]] = [set() for _ in range(nh)]
        self.allowed: list[frozenset[int] | None] = [None] * len(self.vms)
        # per VM lists: most VMs have none, so they share one empty list until a first
        # append gives a VM its own; nothing ever appends to the shared one
        self.statics: list[list[StaticFilter]] = [[]] * len(self.vms)
        self.vm_filters: list[list[Filter]] = [[]] * len(self.vms)
        self.vm_hooks: list[list[Filter]] = [[]] * len(self.vms)
        self.global_checks: list[Filter] = []
        self.global_hooks: list[Filter] = []
        self.filters: list[Filter] = []
        #: filters of continuous constraints (checked at every step of a plan)
        self.continuous: list[Filter] = []
        self.prefer: list[list[c.Prefer]] = [[]] * len(self.vms)
        #: online hosts an ``offline`` constraint empties (``online`` is False for them)
        self.closing: set[int] = set()
        self._every = frozenset(range(nh))
        self._group_maps: dict[tuple[frozenset[str], ...], dict[int, int]] = {}

    def close(self) -> None:
        """Drop the filters. Each points back at the workspace: left alone, the cycle
        waits for the garbage collector, which then walks every list of the workspace
        (~15 % of an 80-VM repair). Closed, the workspace is freed as soon as the
        solver lets go of it. Nothing may use it afterwards."""
        self.filters = []
        self.continuous = []
        self.global_checks = []
        self.global_hooks = []
        self.statics = []
        self.vm_filters = []
        self.vm_hooks = []
        self.plan_index = None

    # -- construction -------------------------------------------------------------------

    def vm(self, key: str) -> int:
        try:
            return self.v_index[key]
        except KeyError:
            raise PlacementError(f"unknown VM {key!r}") from None

    def host(self, name: str) -> int:
        try:
            return self.h_index[name]
        except KeyError:
            raise PlacementError(f"unknown host {name!r}") from None

    def _hosts(self, names: Iterable[str]) -> frozenset[int]:
        return frozenset(self.host(n) for n in names)

    def _build(self, constraints: Sequence[c.Constraint]) -> None:
        for k in constraints:
            self._add(k)

    def _add(self, k: c.Constraint) -> None:
        before = len(self.filters)
        self._add_kind(k)
        if k.continuous:
            for f in self.filters[before:]:
                f.continuous = True
                self.continuous.append(f)

    def _add_kind(self, k: c.Constraint) -> None:
        if isinstance(k, c.Ban):
            self.add_static("ban", k.vms, banned=self._hosts(k.hosts))
        elif isinstance(k, c.Fence):
            self.add_static("fence", k.vms, allowed=self._hosts(k.hosts))
        elif isinstance(k, c.Schedule):
            self.add_static("schedule", (k.vm,), allowed=self._hosts((k.host,)))
        elif isinstance(k, c.Root):
            for key in k.vms:
                v = self.vm(key)
                host = self.vms[v].host
                if host is not None and self.vms[v].state == "running":
                    self.movable[v] = False
                    self.add_static("root", (key,), allowed=self._hosts((host,)))
        elif isinstance(k, c.Spread):
            self._filter(SpreadFilter(self, "spread", map(self.vm, k.vms)))
        elif isinstance(k, c.Gather):
            self._filter(GatherFilter(self, "gather", map(self.vm, k.vms)))
        elif isinstance(k, c.Colocate):
            self._filter(GatherFilter(self, "colocate", (self.vm(k.vm), self.vm(k.target))))
        elif isinstance(k, c.Among):
            self._filter(AmongFilter(self, map(self.vm, k.vms), self._groups(k.groups)))
        elif isinstance(k, c.Offline):
            for h in self._hosts(k.hosts):
                self.online[h] = False  # in the target: its VMs are misplaced, none arrive
                self.closing.add(h)
        elif isinstance(k, c.Lonely):
            self._filter(LonelyFilter(self, map(self.vm, k.vms)))
        elif isinstance(k, c.Split):
            self._filter(SplitFilter(self, [[self.vm(x) for x in part] for part in k.parts]))
        elif isinstance(k, c.SplitAmong):
            parts = [[self.vm(x) for x in part] for part in k.parts]
            self._filter(SplitAmongFilter(self, parts, self._groups(k.groups)))
        elif isinstance(k, c.ResourceCapacity):
            r = self.r_index[k.resource]
            self._filter(CapacityOnSet(self, self._hosts(k.hosts), r, k.amount))
        elif isinstance(k, c.RunningCapacity):
            self._filter(CapacityOnSet(self, self._hosts(k.hosts), None, k.amount))
        elif isinstance(k, c.Preserve):
            self._preserve(k)
        elif isinstance(k, c.Coschedule):
            for key in k.vms:
                v = self.vm(key)
                lim = k.amount + 1
                self.cos[v] = lim if self.cos[v] == -1 else min(self.cos[v], lim)
        elif isinstance(k, c.Prefer):
            for key in k.vms:
                v = self.vm(key)
                if not self.prefer[v]:
                    self.prefer[v] = []
                self.prefer[v].append(k)
        # Running / Ready only set target states: the solvers read them.

    def _groups(self, groups: tuple[frozenset[str], ...]) -> dict[int, int]:
        """Host index -> group number; shared by every among over the same groups (a
        datacenter has ~20 racks and thousands of among constraints over them)."""
        found = self._group_maps.get(groups)
        if found is None:
            found = {h: g for g, names in enumerate(groups) for h in self._hosts(names)}
            self._group_maps[groups] = found
        return found

    def _preserve(self, k: c.Preserve) -> None:
        r = self.r_index.get(k.resource)
        if r is None:
            raise PlacementError(f"preserve: unknown resource {k.resource!r}")
        for key in k.vms:
            v = self.vm(key)
            # "at least amount": never shrink (docs/placement.md, differences)
            row = self.demand[v]
            if row is self.cur[v]:
                row = self.demand[v] = list(row)
            row[r] = max(row[r], k.amount)

    def add_static(
        self,
        rule: str,
        keys: Iterable[str],
        *,
        allowed: frozenset[int] | None = None,
        banned: frozenset[int] = frozenset(),
    ) -> None:
        members = [self.vm(k) for k in keys]
        f = StaticFilter(self, rule, members, allowed=allowed, banned=banned)
        self.filters.append(f)
        every = self._every
        # VMs with the same allowed set before share the one after: a ban of thousands
        # of VMs computes one set, not one per VM
        after: dict[int, frozenset[int]] = {}
        for v in members:
            if not self.statics[v]:
                self.statics[v] = []
            self.statics[v].append(f)
            before = self.allowed[v]
            cur = after.get(id(before))
            if cur is None:
                cur = before if before is not None else every
                if allowed is not None:
                    cur = cur & allowed
                cur = after[id(before)] = cur - banned
            self.allowed[v] = cur

    def _filter(self, f: Filter) -> None:
        self.filters.append(f)
        if f.check_all:
            self.global_checks.append(f)
        if f.hooks_all:
            self.global_hooks.append(f)
        for v in f.members:
            if not f.check_all:
                if not self.vm_filters[v]:
                    self.vm_filters[v] = []
                self.vm_filters[v].append(f)
            if not f.hooks_all:
                if not self.vm_hooks[v]:
                    self.vm_hooks[v] = []
                self.vm_hooks[v].append(f)

    # -- state --------------------------------------------------------------------------

    def _key(self, h: int) -> tuple:
        return self.keyfn(h, self.used[h], self.count[h], self.host_limit(h))

    def _rekey(self, h: int) -> None:
        if not self.online[h]:
            return
        old = (self.keys[h], h)
        i = bisect.bisect_left(self.order, old)
        del self.order[i]
        self.keys[h] = new = self._key(h)
        bisect.insort(self.order, (new, h))
        if self.departing:
            side = self.order_away if h in self.departing else self.order_stay
            del side[bisect.bisect_left(side, old)]
            bisect.insort(side, (new, h))

    def refresh(self, hosts: Iterable[int]) -> None:
        """Bring the load order up to date for ``hosts`` after ``place``/``remove``
        calls with ``rekey=False``; a host whose key is unchanged costs one key."""
        for h in hosts:
            if self.online[h] and self._key(h) != self.keys[h]:
                self._rekey(h)

    def split_order(self, departing: frozenset[int] | None) -> None:
        """Keep two more load orders, of the online hosts in ``departing`` (hosts VMs
        will leave) and of the others, so a search can try the others first without
        scanning past thousands of departing hosts; None stops it. With no departing
        host both stay empty: use ``order``."""
        self.departing = departing
        if not departing:  # nothing to split: ``order`` says it all
            self.order_stay, self.order_away = [], []
            return
        self.order_stay = [(k, h) for k, h in self.order if h not in departing]
        self.order_away = [(k, h) for k, h in self.order if h in departing]

    def host_limit(self, h: int) -> int:
        hist = self.cos_hist[h]
        return min(hist) if hist else -1

    def resort(self) -> None:
        """Rebuild the load order after ``place(..., rekey=False)`` calls."""
        self.keys = [self._key(h) for h in range(len(self.hosts))]
        self.order = sorted((self.keys[h], h) for h in range(len(self.hosts)) if self.online[h])
        self.split_order(self.departing)

    def place(self, v: int, h: int, *, rekey: bool = True) -> None:
        """Count ``v`` on ``h``; ``rekey=False`` (bulk loading) leaves the load order
        stale until ``resort()``."""
        self.assign[v] = h
        self.count[h] += 1
        self.host_vms[h].add(v)
        used, dem = self.used[h], self.demand[v]
        for r in self.active[v]:
            used[r] += dem[r]
        lim = self.cos[v]
        if lim != -1:
            hist = self.cos_hist[h]
            hist[lim] = hist.get(lim, 0) + 1
        for f in self.vm_hooks[v]:
            f.place(v, h)
        for f in self.global_hooks:
            f.place(v, h)
        if rekey:
            self._rekey(h)

    def place_all(self, hosts: Sequence[int]) -> None:
        """``place(v, hosts[v], rekey=False)`` for every VM with a host (-1: none), in
        index order, then ``resort()``: a repair loads the current placement so."""
        assign, count, host_vms, used = self.assign, self.count, self.host_vms, self.used
        demand, active, cos, cos_hist = self.demand, self.active, self.cos, self.cos_hist
        vm_hooks, global_hooks = self.vm_hooks, self.global_hooks
        for v, h in enumerate(hosts):
            if h == -1:
                continue
            assign[v] = h
            count[h] += 1
            host_vms[h].add(v)
            row, dem = used[h], demand[v]
            for r in active[v]:
                row[r] += dem[r]
            lim = cos[v]
            if lim != -1:
                hist = cos_hist[h]
                hist[lim] = hist.get(lim, 0) + 1
            for f in vm_hooks[v]:
                f.place(v, h)
            for f in global_hooks:
                f.place(v, h)
        self.resort()

    def remove(self, v: int, *, rekey: bool = True) -> None:
        """Stop counting ``v`` on its host; ``rekey=False`` as for ``place``."""
        h = self.assign[v]
        self.assign[v] = -1
        self.count[h] -= 1
        self.host_vms[h].discard(v)
        used, dem = self.used[h], self.demand[v]
        for r in self.active[v]:
            used[r] -= dem[r]
        lim = self.cos[v]
        if lim != -1:
            hist = self.cos_hist[h]
            n = hist[lim] - 1
            if n:
                hist[lim] = n
            else:
                del hist[lim]
        for f in self.vm_hooks[v]:
            f.remove(v, h)
        for f in self.global_hooks:
            f.remove(v, h)
        if rekey:
            self._rekey(h)

    # -- the filter pipeline ------------------------------------------------------------

    def first_failure(self, v: int, h: int) -> Failure | None:
        """The first rule refusing ``v`` on ``h`` in the current state, or None."""
        if not self.online[h]:
            if h in self.closing:
                return ("offline", "host must go offline")
            return ("offline", "host is offline")
        allowed = self.allowed[v]
        if allowed is not None and h not in allowed:
            for static in self.statics[v]:
                why = static.check(v, h)
                if why:
                    return (static.rule, why)
            return ("static", "host not allowed")  # unreachable: every set has a filter
        used, lim, dem = self.used[h], self.limits[h], self.demand[v]
        for r in self.active[v]:
            if used[r] + dem[r] > lim[r]:
                res = self.resources[r]
                return (rule_of(res), shortage(res, used[r], dem[r], lim[r]))
        why = self._coschedule(v, h)
        if why:
            return ("coschedule", why)
        for f in self.vm_filters[v]:
            why = f.check(v, h)
            if why:
                return (f.rule, why)
        for f in self.global_checks:
            why = f.check(v, h)
            if why:
                return (f.rule, why)
        return None

    def fits(self, v: int, h: int) -> bool:
        """``first_failure(v, h) is None``, without writing the reason: the searches
        ask this thousands of times and most refusals are only skipped."""
        if not self.could_take(v, h):
            return False
        limit, mine = self.host_limit(h), self.cos[v]
        if mine != -1:
            limit = mine if limit == -1 else min(limit, mine)
        if limit != -1 and self.count[h] + 1 > limit:
            return False
        for f in self.vm_filters[v]:
            if f.check(v, h):
                return False
        return all(not f.check(v, h) for f in self.global_checks)

    def could_take(self, v: int, h: int) -> bool:
        """False when ``h`` refuses ``v`` on the rules that do not depend on where ``v``
        is now (online, allowed hosts, capacity): ``fits(v, h)`` is then False for any
        host of ``v`` other than ``h``. Reads only, so a search can skip the move."""
        if not self.online[h]:
            return False
        allowed = self.allowed[v]
        if allowed is not None and h not in allowed:
            return False
        used, lim, dem = self.used[h], self.limits[h], self.demand[v]
        for r in self.active[v]:  # noqa: SIM110 (compiled: a loop, not a generator)
            if used[r] + dem[r] > lim[r]:
                return False
        return True

    def accepts(self, unit: Sequence[int], h: int) -> bool:
        """Would ``h`` take every VM of ``unit`` now (``try_unit(unit, h, keep=False)``
        is None)?"""
        if len(unit) == 1:
            return self.fits(unit[0], h)
        return self.try_unit(unit, h, keep=False) is None

    def try_place(self, unit: Sequence[int], h: int) -> bool:
        """``try_unit(unit, h) is None``: place the whole unit on ``h`` or nothing."""
        if len(unit) == 1:
            v = unit[0]
            if not self.fits(v, h):
                return False
            self.place(v, h)
            return True
        return self.try_unit(unit, h) is None

    def _coschedule(self, v: int, h: int) -> str | None:
        limit, mine = self.host_limit(h), self.cos[v]
        if mine != -1:
            limit = mine if limit == -1 else min(limit, mine)
        if limit != -1 and self.count[h] + 1 > limit:
            name = self.hosts[h].name
            return f"too many VMs scheduled on {name} for coschedule requirement of {limit}"
        return None

    def try_unit(self, unit: Sequence[int], h: int, *, keep: bool = True) -> Failure | None:
        """Place every VM of ``unit`` on ``h`` (all or nothing). Undone when ``keep`` is
        False or a member is refused; returns the refusal."""
        if len(unit) == 1 and not keep:
            return self.first_failure(unit[0], h)
        done: list[int] = []
        failure = None
        for v in unit:
            failure = self.first_failure(v, h)
            if failure:
                break
            self.place(v, h)
            done.append(v)
        if failure or not keep:
            for v in reversed(done):
                self.remove(v)
        return failure

    def ranked(self) -> Iterator[int]:
        """Online hosts, least loaded first (a snapshot of the current order)."""
        return (h for _, h in list(self.order))

    def refusal(self, unit: Sequence[int], note: str = "") -> Refusal:
        verdicts = []
        for h in range(len(self.hosts)):
            failure = self.try_unit(unit, h, keep=False)
            if failure:
                verdicts.append(HostVerdict(self.hosts[h].name, *failure))
        return Refusal(tuple(self.vms[v].key for v in unit), tuple(verdicts), note)

    def score(self, v: int, h: int) -> float:
        """Soft preferences of ``v`` for ``h`` (higher is better)."""
        total = 0.0
        name = self.hosts[h].name
        for p in self.prefer[v]:
            if p.what == "fence":
                total += p.weight * (name in p.hosts)
            else:
                on = [self.assign[self.v_index[k]] for k in p.vms if k != self.vms[v].key]
                placed = [x for x in on if x != -1]
                if p.what == "spread":
                    total += p.weight * (h not in placed)
                else:
                    total += p.weight * (not placed or h in placed)
        return total

    def locality_note(
        self, unit: tuple[int, ...], chosen: int, plain: int, local: dict[int, float]
    ) -> LocalityNote:
        """Why ``unit`` went to ``chosen`` rather than ``plain``: the hosts holding its
        images (the best ``NOTE_HOLDERS``), with the fraction held and their score."""
        total = sum(sum(self.vms[v].images.values()) for v in unit)
        holders = []
        for h in sorted(local, key=lambda h: (-local[h], h))[:NOTE_HOLDERS]:
            held = sum(held_bytes(self.vms[v], self.hosts[h]) for v in unit)
            holders.append((self.hosts[h].name, held / total if total else 0.0, local[h]))
        return LocalityNote(
            tuple(self.vms[v].key for v in unit),
            self.hosts[chosen].name,
            self.hosts[plain].name,
            local.get(chosen, 0.0),
            tuple(holders),
        )

    # -- helpers for filters and solvers ------------------------------------------------

    def vms_on(self, h: int) -> list[int]:
        return sorted(self.host_vms[h])

    def host_list(self, hosts: Iterable[int], most: int = 4) -> str:
        names = sorted(self.hosts[h].name for h in hosts)
        more = f" and {len(names) - most} more" if len(names) > most else ""
        return ", ".join(names[:most]) + more

    def placement(self) -> dict[str, str]:
        keys, names = self.vkeys, self.hnames
        return {keys[v]: names[h] for v, h in enumerate(self.assign) if h != -1}

    def overflow(self, h: int) -> list[float]:
        """How far each resource of ``h`` is over its limit (0 when within). An index
        loop: compiled, ``zip(..., strict=True)`` and ``max`` are generic calls."""
        used, lim = self.used[h], self.limits[h]
        out: list[float] = []
        for r in range(len(used)):
            x = used[r] - lim[r]
            out.append(x if x > 0.0 else 0.0)
        return out

    def choose_evictions(
        self,
        candidates: Sequence[int],
        use: Callable[[int], Sequence[float]],
        need: Sequence[float],
    ) -> set[int]:
        """Few cheap VMs whose removal brings every ``need`` (excess per dimension) to
        zero: greedy on relief per second of migration (ties: less overshoot, then
        the lower index). Written without nested functions: compiled, a closure and
        its environment form a cycle that would keep the workspace for the collector."""
        need = list(need)
        left = list(candidates)
        chosen: set[int] = set()
        while any(n > 0 for n in need) and left:
            best = -1
            best_key: tuple[float, float, int] | None = None
            for v in left:
                relief = 0.0
                over = 0.0
                row = use(v)
                for r in range(len(need)):
                    n = need[r]
                    if n > 0:
                        u = row[r]
                        relief += min(u, n) / n
                        over += max(0.0, u - n) / n
                key = (relief / self.cost[v] if relief else -math.inf, -over, -v)
                if best_key is None or key > best_key:
                    best, best_key = v, key
            if best_key is None or best_key[0] == -math.inf:
                break
            left.remove(best)
            chosen.add(best)
            row = use(best)
            need = [need[r] - row[r] for r in range(len(need))]
        return chosen
