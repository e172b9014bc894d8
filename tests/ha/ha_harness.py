"""A small world of HA cores joined by an in-memory pump: hosts that crash, freeze, or
are cut off, a watchdog per host, and launches that place a VM on the first live host.

``copies(vm)`` lists the hosts where a copy really runs: adopted, not fenced by the
core, not stopped by the host's watchdog, host not crashed. A frozen host's guests keep
running (only its daemon is stopped), as on a real host.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from dvms.effects import Emit, Send
from dvms.ha import ArmWatchdog, Fence, HaConfig, HaCore, StartLaunch, tag_for
from dvms.overlay.messages import Contact
from dvms.partition.messages import LaunchVm
from dvms.placement.hapolicy import HaPolicy

DELAY = 0.001


@dataclass
class Host:
    i: int
    contact: Contact
    core: HaCore
    crashed: bool = False
    frozen: bool = False
    watchdog: float | None = None
    running: dict[str, int] = field(default_factory=dict)  # vm -> generation
    timer_at: float | None = None


class World:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        config: HaConfig | None = None,
        launch_s: float = 0.5,
        fail_launches: int = 0,
        stale_table: bool = False,
    ) -> None:
        #: ``stale_table``: routing tables still list crashed hosts (as after a crash the
        #: overlay has not noticed yet)
        self.stale_table = stale_table
        self.rng = random.Random(seed)
        self.config = config or HaConfig()
        self.now = 0.0
        self.heap: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.cut: set[int] = set()  # hosts cut off from the rest (among themselves fine)
        self.launch_s = launch_s
        self.fail_launches = fail_launches
        self.launches: list[tuple[int, tuple[str, ...]]] = []  # restarter, VM names
        self.events: list[Any] = []
        self.double: list[tuple[float, str, list[int]]] = []
        contacts = [Contact(self.rng.getrandbits(160), f"h{i}", 7400) for i in range(n)]
        self.hosts: list[Host] = []
        for i, c in enumerate(contacts):
            core = HaCore(c, self._closest(i), self.config, random.Random(seed * 1000 + i))
            self.hosts.append(Host(i, c, core))
        self.by_addr = {h.contact.addr: h for h in self.hosts}

    def _closest(self, i: int) -> Any:
        def closest(key: int, k: int) -> list[Contact]:
            live = [
                h.contact for h in self.hosts if (self.stale_table or not h.crashed) and h.i != i
            ]
            live.sort(key=lambda c: c.node_id ^ key)
            return live[:k]

        return closest

    # -- scheduling ---------------------------------------------------------------

    def at(self, when: float, kind: str, arg: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, kind, arg))

    def apply(self, h: Host, effects: list[Any]) -> None:
        for eff in effects:
            if type(eff) is Send:
                dst = self.by_addr[eff.dst]
                self.at(self.now + DELAY, "deliver", (h, dst, eff))
            elif type(eff) is Fence:
                if h.running.get(eff.name) == eff.generation:
                    del h.running[eff.name]
            elif type(eff) is ArmWatchdog:
                h.watchdog = eff.until
                if eff.until is not None:
                    self.at(eff.until, "watchdog", (h, eff.until))
            elif type(eff) is StartLaunch:
                self.launches.append((h.i, tuple(v.name for v in eff.vms)))
                self.at(self.now + self.launch_s, "launched", (h, eff))
            elif type(eff) is Emit:
                self.events.append((self.now, h.i, eff.event))
        self._schedule(h)

    def _schedule(self, h: Host) -> None:
        d = h.core.next_deadline()
        if d is not None and (h.timer_at is None or d < h.timer_at):
            h.timer_at = d
            self.at(d, "timer", h)

    def run_until(self, until: float) -> None:
        while self.heap and self.heap[0][0] <= until:
            when, _, kind, arg = heapq.heappop(self.heap)
            self.now = when
            getattr(self, "_" + kind)(arg)
            self.check()
        self.now = until

    def _deliver(self, arg: tuple[Host, Host, Send]) -> None:
        src, dst, eff = arg
        if src.crashed or dst.crashed or (src.i in self.cut) != (dst.i in self.cut):
            return
        if dst.frozen:
            self.at(self.now + 0.5, "deliver", arg)  # waits in the socket buffer
            return
        out = dst.core.on_message(
            src.contact.addr, src.contact.node_id, eff.rid, eff.msg, now=self.now
        )
        self.apply(dst, out)

    def _timer(self, h: Host) -> None:
        if h.crashed or h.frozen:
            h.timer_at = None  # a frozen host's timers run when it thaws
            return
        if h.timer_at is not None and h.timer_at > self.now:
            return  # a later deadline replaced this one
        self._tick(h)

    def _watchdog(self, arg: tuple[Host, float]) -> None:
        h, until = arg
        if h.watchdog == until and not h.crashed:
            h.running.clear()  # the watchdog stops every HA guest of the host

    def _launched(self, arg: tuple[Host, StartLaunch]) -> None:
        h, eff = arg
        if h.crashed:
            return
        if self.fail_launches > 0:
            self.fail_launches -= 1
            if not h.frozen:
                self.apply(h, h.core.on_launch_done(eff.token, False, "no room", now=self.now))
            return
        for vm in eff.vms:
            target = next(
                x for x in self.hosts if not x.crashed and not x.frozen and x.i not in self.cut
            )
            assert vm.ha is not None
            target.running[vm.name] = vm.ha.generation
            self.apply(target, target.core.adopt(vm, now=self.now))
        if not h.frozen:
            self.apply(h, h.core.on_launch_done(eff.token, True, "", now=self.now))

    # -- faults -------------------------------------------------------------------

    def crash(self, i: int) -> None:
        h = self.hosts[i]
        h.crashed = True
        h.running.clear()

    def freeze(self, i: int, frozen: bool) -> None:
        self.hosts[i].frozen = frozen
        if not frozen:
            self._tick(self.hosts[i])

    # -- helpers ------------------------------------------------------------------

    def start(self, host: int, name: str, policy: HaPolicy | None = None) -> LaunchVm:
        pol = policy or HaPolicy(mode="restart")
        vm = LaunchVm(name, "", 1, 512, ha=tag_for(pol))
        h = self.hosts[host]
        h.running[name] = 1
        self.apply(h, h.core.adopt(vm, now=self.now))
        return vm

    def copies(self, name: str) -> list[int]:
        return [h.i for h in self.hosts if name in h.running and not h.crashed]

    def check(self) -> None:
        seen: dict[str, list[int]] = {}
        for h in self.hosts:
            if h.crashed:
                continue
            for n in h.running:
                seen.setdefault(n, []).append(h.i)
        for n, where in seen.items():
            if len(where) > 1:
                self.double.append((self.now, n, where))

    def _tick(self, h: Host) -> None:
        if h.crashed:
            return
        h.timer_at = None
        self.apply(h, h.core.on_timer(now=self.now))
