"""Hard constraints as solver filters: each answers "may VM v go on host h now?".

One small class per constraint family. Each has a ``rule`` (the name shown in
explanations), ``check(v, h) -> reason | None``, ``place``/``remove`` hooks that keep its
counters in step with the solver's working state, and ``misplaced()`` -- the VMs that
break it in the current state (BtrPlace's repair mode moves only those first).

Indices: ``v`` is a VM index, ``h`` a host index into the ``Workspace`` (workspace.py).
These classes never look at the constraint records again after construction; the
independent checker (checker.py) has its own code for the same semantics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dvms.placement.workspace import Workspace

__all__ = [
    "AmongFilter",
    "CapacityOnSet",
    "Filter",
    "GatherFilter",
    "LonelyFilter",
    "SplitAmongFilter",
    "SplitFilter",
    "SpreadFilter",
    "StaticFilter",
]


class Filter:
    """Base class. ``members`` = VMs it constrains (empty for a filter that checks every
    VM: ``check_all``)."""

    rule = "?"
    members: frozenset[int] = frozenset()
    #: True when place/remove must be called for every VM, not only members.
    hooks_all = False
    #: True when ``check`` must run for every VM, not only members.
    check_all = False
    #: True for a continuous constraint (also holds at every step of a plan).
    continuous = False

    def check(self, v: int, h: int) -> str | None:
        return None

    def place(self, v: int, h: int) -> None:
        """Count ``v`` as running on ``h``."""

    def remove(self, v: int, h: int) -> None:
        """Undo ``place``."""

    def misplaced(self) -> set[int]:
        return set()

    def violated(self) -> bool:
        """Does the current state break it (even if nothing can be moved)?"""
        return bool(self.misplaced())


class StaticFilter(Filter):
    """ban / fence / schedule / root: a fixed set of allowed (or banned) hosts per VM."""

    def __init__(
        self,
        ws: Workspace,
        rule: str,
        members: Iterable[int],
        *,
        allowed: frozenset[int] | None = None,
        banned: frozenset[int] = frozenset(),
    ) -> None:
        self.ws, self.rule = ws, rule
        self.members = frozenset(members)
        self.allowed, self.banned = allowed, banned
        self._only: str | None = None  # the refusal text, built once (a hot path)

    def check(self, v: int, h: int) -> str | None:
        if h in self.banned:
            return f"{self.rule} forbids this host"
        if self.allowed is not None and h not in self.allowed:
            if self._only is None:
                self._only = f"{self.rule} allows only {self.ws.host_list(self.allowed)}"
            return self._only
        return None

    def misplaced(self) -> set[int]:
        ws = self.ws
        if self.allowed is None and len(self.banned) * 4 < len(self.members):
            # a wide ban: look at the few banned hosts, not at every member
            return {v for h in self.banned for v in ws.host_vms[h] if v in self.members}
        assign = ws.assign
        return {v for v in self.members if assign[v] != -1 and self.check(v, assign[v])}


class _Counting(Filter):
    """Keeps ``on[h]`` = number of placed members on host h."""

    def __init__(self, ws: Workspace, rule: str, members: Iterable[int]) -> None:
        self.ws, self.rule = ws, rule
        self.members = frozenset(members)
        #: a plain dict, not a Counter: a Counter's constructor and its ``__missing__``
        #: are interpreted code, called on every first placement on a host
        self.on: dict[int, int] = {}

    def place(self, v: int, h: int) -> None:
        on = self.on
        on[h] = on.get(h, 0) + 1

    def remove(self, v: int, h: int) -> None:
        on = self.on
        n = on[h] - 1
        if n:
            on[h] = n
        else:
            del on[h]

    def _on_host(self, h: int) -> list[int]:
        return [v for v in self.members if self.ws.assign[v] == h]


class SpreadFilter(_Counting):
    """Members on pairwise distinct hosts."""

    def check(self, v: int, h: int) -> str | None:
        if self.on.get(h):
            return f"another VM of spread({len(self.members)} VMs) runs there"
        return None

    def misplaced(self) -> set[int]:
        out: set[int] = set()
        for h, n in self.on.items():
            if n > 1:
                # keep the most expensive one to move, move the others
                stay = max(self._on_host(h), key=lambda v: (self.ws.cost[v], -v))
                out.update(v for v in self._on_host(h) if v != stay)
        return out


class GatherFilter(_Counting):
    """All members on one host (``rule`` = ``gather`` or ``colocate``)."""

    def check(self, v: int, h: int) -> str | None:
        if self.on and (len(self.on) > 1 or h not in self.on):
            where = self.ws.host_list(frozenset(self.on))
            return f"{self.rule} needs the host of its other VMs ({where})"
        return None

    def misplaced(self) -> set[int]:
        if len(self.on) <= 1:
            return set()
        ws = self.ws
        best = max(self.on, key=lambda h: (self.on[h], sum(ws.cost[v] for v in self._on_host(h))))
        return {v for v in self.members if ws.assign[v] not in (-1, best)}


class AmongFilter(_Counting):
    """All members inside one host group."""

    def __init__(self, ws: Workspace, members: Iterable[int], group_of: dict[int, int]) -> None:
        super().__init__(ws, "among", members)
        #: host -> group number (shared between filters: never mutated)
        self.group_of = group_of
        self.used: dict[int, int] = {}

    def place(self, v: int, h: int) -> None:
        super().place(v, h)
        g = self.group_of.get(h, -1)
        self.used[g] = self.used.get(g, 0) + 1

    def remove(self, v: int, h: int) -> None:
        super().remove(v, h)
        g = self.group_of.get(h, -1)
        n = self.used[g] - 1
        if n:
            self.used[g] = n
        else:
            del self.used[g]

    def check(self, v: int, h: int) -> str | None:
        g = self.group_of.get(h)
        if g is None:
            return "among: host is in none of the groups"
        if self.used and (len(self.used) > 1 or g not in self.used):
            return "among: the other VMs run in another group"
        return None

    def misplaced(self) -> set[int]:
        if len(self.used) <= 1 and -1 not in self.used:
            return set()
        good = [g for g in self.used if g != -1]
        best = max(good, key=lambda g: self.used[g]) if good else None
        ws = self.ws
        return {
            v
            for v in self.members
            if ws.assign[v] != -1 and self.group_of.get(ws.assign[v], -1) != best
        }


class LonelyFilter(_Counting):
    """Members share their host only with members; checked for every VM."""

    check_all = True

    def __init__(self, ws: Workspace, members: Iterable[int]) -> None:
        super().__init__(ws, "lonely", members)

    def check(self, v: int, h: int) -> str | None:
        mine = self.on.get(h, 0)
        if v in self.members:
            if self.ws.count[h] - mine > 0:
                return "lonely: VMs outside its set run there"
        elif mine:
            return "lonely: a VM of a lonely set runs there"
        return None

    def misplaced(self) -> set[int]:
        out: set[int] = set()
        ws = self.ws
        for h, mine in self.on.items():
            others = ws.count[h] - mine
            if others > 0:
                side = (
                    self._on_host(h)
                    if mine <= others
                    else [v for v in ws.vms_on(h) if v not in self.members]
                )
                out.update(side)
        return out


class SplitFilter(Filter):
    """No host holds VMs of two different parts."""

    rule = "split"

    def __init__(self, ws: Workspace, parts: list[list[int]]) -> None:
        self.ws = ws
        self.part = {v: i for i, vms in enumerate(parts) for v in vms}
        self.members = frozenset(self.part)
        self.on: dict[int, Counter[int]] = {}

    def place(self, v: int, h: int) -> None:
        self.on.setdefault(h, Counter())[self.part[v]] += 1

    def remove(self, v: int, h: int) -> None:
        here = self.on[h]
        here[self.part[v]] -= 1
        if not here[self.part[v]]:
            del here[self.part[v]]

    def check(self, v: int, h: int) -> str | None:
        here = self.on.get(h)
        if here and any(p != self.part[v] for p in here):
            return "split: VMs of another part run there"
        return None

    def misplaced(self) -> set[int]:
        out: set[int] = set()
        for h, here in self.on.items():
            if len(here) > 1:
                keep = max(here, key=lambda p: (here[p], -p))
                out.update(v for v in self.ws.vms_on(h) if self.part.get(v, keep) != keep)
        return out


class SplitAmongFilter(Filter):
    """Each part inside one host group, two parts never in the same group."""

    rule = "splitAmong"

    def __init__(self, ws: Workspace, parts: list[list[int]], group_of: dict[int, int]) -> None:
        self.ws = ws
        self.part = {v: i for i, vms in enumerate(parts) for v in vms}
        self.members = frozenset(self.part)
        #: host -> group number (shared between filters: never mutated)
        self.group_of = group_of
        #: per part: placed members per group (-1 = a host in no group)
        self.used: list[Counter[int]] = [Counter() for _ in parts]
        #: per group: placed members per part
        self.owners: dict[int, Counter[int]] = {}

    def place(self, v: int, h: int) -> None:
        p, g = self.part[v], self.group_of.get(h, -1)
        self.used[p][g] += 1
        if g != -1:
            self.owners.setdefault(g, Counter())[p] += 1

    def remove(self, v: int, h: int) -> None:
        p, g = self.part[v], self.group_of.get(h, -1)
        self.used[p][g] -= 1
        if not self.used[p][g]:
            del self.used[p][g]
        if g != -1:
            here = self.owners[g]
            here[p] -= 1
            if not here[p]:
                del here[p]

    def check(self, v: int, h: int) -> str | None:
        g = self.group_of.get(h)
        if g is None:
            return "splitAmong: host is in none of the groups"
        p = self.part[v]
        if any(x != g for x in self.used[p]):
            return "splitAmong: the other VMs of its part run in another group"
        if any(q != p for q in self.owners.get(g, ())):
            return "splitAmong: another part runs in this group"
        return None

    def violated(self) -> bool:
        return any(len(u) > 1 or -1 in u for u in self.used) or any(
            len(o) > 1 for o in self.owners.values()
        )

    def misplaced(self) -> set[int]:
        """Parts claim groups, biggest first (a part keeps the group holding most of
        its VMs among those still free); members elsewhere are misplaced."""
        if not self.violated():
            return set()
        ws = self.ws
        order = sorted(
            range(len(self.used)), key=lambda p: (-max(self.used[p].values(), default=0), p)
        )
        taken: set[int] = set()
        keep: dict[int, int] = {}
        for p in order:
            free = [g for g in self.used[p] if g != -1 and g not in taken]
            if free:
                keep[p] = max(free, key=lambda g: (self.used[p][g], -g))
                taken.add(keep[p])
        return {
            v
            for v, p in self.part.items()
            if ws.assign[v] != -1 and self.group_of.get(ws.assign[v], -1) != keep.get(p, -2)
        }


class CapacityOnSet(Filter):
    """resourceCapacity (``resource`` = index) or runningCapacity (``resource`` = None):
    the summed use over a set of hosts stays <= ``amount``."""

    hooks_all = True
    check_all = True

    def __init__(
        self, ws: Workspace, hosts: frozenset[int], resource: int | None, amount: int
    ) -> None:
        self.ws, self.hosts, self.resource, self.amount = ws, hosts, resource, amount
        self.rule = "runningCapacity" if resource is None else "resourceCapacity"
        self.total = 0.0

    def _use(self, v: int) -> float:
        return 1 if self.resource is None else self.ws.demand[v][self.resource]

    def place(self, v: int, h: int) -> None:
        if h in self.hosts:
            self.total += self._use(v)

    def remove(self, v: int, h: int) -> None:
        if h in self.hosts:
            self.total -= self._use(v)

    def check(self, v: int, h: int) -> str | None:
        if h in self.hosts and self.total + self._use(v) > self.amount:
            what = "VMs" if self.resource is None else self.ws.resources[self.resource]
            total = self.total + self._use(v)
            return f"{self.rule}: {what} on its hosts would be {total:g} > {self.amount}"
        return None

    def violated(self) -> bool:
        return self.total > self.amount

    def misplaced(self) -> set[int]:
        over = self.total - self.amount
        if over <= 0:
            return set()
        ws = self.ws
        cands = [v for h in sorted(self.hosts) for v in ws.vms_on(h) if ws.movable[v]]
        return ws.choose_evictions(cands, lambda v: [self._use(v)], [over])
