"""High availability in the daemon: the Trio side of the HA core (``dvms.ha``, composed
into the node's ``NodeCore``). It carries out the core's effects on this host and feeds
it what the host did::

    Fence(vm, action)   --> hypervisor: destroy + undefine, or pause, the copy (awaited
                            before the runner carries out the next effect)
    ArmWatchdog(until)  --> Watchdog.arm(until - now, this host's HA domains)
    Emit(HaEvent)       --> a log line, the metrics (``dvms_ha_*``); the event stream
                            takes it from the runner's listeners (``events.py``)
    a VM created here with an HaTag (launch, restart, migration in) --> core.adopt
    a VM moved away     --> core.release(retire=False)
    a VM removed by its user --> core.release(retire=True): its guardians forget it

At start, before the node joins (``fence_at_start``): every domain of the hypervisor
whose metadata carries an HA generation is fenced. A daemon that starts cannot know
whether its leases ran out while it was down, and its guardians may have started a
newer generation elsewhere; asking them first would let an outdated copy run beside the
newer one while the question is out. The guardians restart the VM once its lease ends
(docs/ha.md).

The watchdog. A frozen or killed daemon does not stop QEMU: a watchdog beside the
daemon stops the host's HA guests when the daemon stops arming it. ``Watchdog`` is that
interface (``arm(remaining_s, guests)``: seconds from now until the guests must be
stopped, None to disarm; ``guests``: their hypervisor domain names); backends register
by name in ``WATCHDOGS``, each a factory of (hypervisor URI, state directory):
``process`` (the fencer, ``dvms.runtime.fencer``: a process of its own that stops the
guests through libvirt, or signals their QEMU; the default on a real hypervisor),
``none`` (the default on test:/// hosts, whose guests die with the daemon) and
``memory`` (records its calls, for tests).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dvms.ha import ArmWatchdog, Fence, HaEvent
from dvms.hypervisor.base import DomainState, Hypervisor
from dvms.hypervisor.errors import HypervisorError, InvalidState, VmNotFound
from dvms.names import vm_key
from dvms.partition.messages import LaunchVm
from dvms.runtime.fencer import watchdog_factory
from dvms.runtime.messages import MAX_ROWS, HaQuery, HaReply, HaRow
from dvms.runtime.services.monitor import HostMonitor
from dvms.stack.core import NodeCore

__all__ = [
    "ADOPT_BATCH_S",
    "HA_EVENT_KINDS",
    "WATCHDOGS",
    "HaCollector",
    "HaShell",
    "MemoryWatchdog",
    "NoWatchdog",
    "Watchdog",
    "WatchdogFactory",
    "default_watchdog",
    "ha_effects",
    "open_watchdog",
    "register_watchdog",
]

log = logging.getLogger("dvms.runtime.ha")

#: VMs created on this host within this long are adopted together, seconds (ours: a
#: launch event creates its VMs within a fraction of a second of each other).
ADOPT_BATCH_S = 0.2

#: Every ``HaEvent.kind`` the core emits (the metrics' label values).
HA_EVENT_KINDS = (
    "adopted",
    "fenced",
    "agreed",
    "launched",
    "launch_failed",
    "gave_up",
    "retired",
)


class Watchdog(Protocol):
    """Stops this host's HA guests if the daemon stops re-arming it in time."""

    async def arm(self, remaining_s: float | None, guests: tuple[str, ...]) -> None:
        """Stop ``guests`` (hypervisor domain names) ``remaining_s`` seconds from now
        unless armed again before; None: disarm (no HA guest here)."""
        ...

    async def aclose(self) -> None: ...


class NoWatchdog:
    """No watchdog: for ``test:///`` hosts, whose guests live in the daemon's process
    and stop with it."""

    async def arm(self, remaining_s: float | None, guests: tuple[str, ...]) -> None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass(slots=True)
class MemoryWatchdog:
    """Records every call (tests read ``calls``)."""

    calls: list[tuple[float | None, tuple[str, ...]]]
    closed: bool = False

    async def arm(self, remaining_s: float | None, guests: tuple[str, ...]) -> None:
        self.calls.append((remaining_s, guests))

    async def aclose(self) -> None:
        self.closed = True


#: A watchdog backend: (the host's hypervisor URI, the daemon's state directory) ->
#: the host's watchdog.
WatchdogFactory = Callable[[str, Path], Watchdog]

#: Watchdog backends by name.
WATCHDOGS: dict[str, WatchdogFactory] = {
    "none": lambda _uri, _state: NoWatchdog(),
    "memory": lambda _uri, _state: MemoryWatchdog([]),
    # the fencer process; its socket, lock and log in the state directory
    "process": watchdog_factory(),
}


def register_watchdog(name: str, factory: WatchdogFactory) -> None:
    WATCHDOGS[name] = factory


def default_watchdog(uri: str) -> str:
    """The backend used when none is configured: ``none`` on ``test:///`` hosts (their
    guests live in the daemon's process and stop with it), else ``process``."""
    return "none" if uri.startswith("test:") else "process"


def open_watchdog(name: str, uri: str, state_dir: Path) -> Watchdog:
    """The watchdog ``name`` for the host at ``uri`` ("": ``default_watchdog(uri)``),
    its files in ``state_dir``."""
    name = name or default_watchdog(uri)
    factory = WATCHDOGS.get(name)
    if factory is None:
        raise ValueError(f"unknown watchdog {name!r}: one of {', '.join(sorted(WATCHDOGS))}")
    return factory(uri, state_dir)


class HaShell:
    """The daemon side of one node's HA core (``node.ha``)."""

    def __init__(
        self,
        node: NodeCore,
        monitor: HostMonitor,
        watchdog: Watchdog,
        *,
        apply: Callable[[list[Any]], Awaitable[None]],
        spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None,
    ) -> None:
        """``apply`` carries out effects of the node core; ``spawn`` runs a task in the
        node's nursery (the batched adoptions)."""
        self.node = node
        self.monitor = monitor
        self.watchdog = watchdog
        self._apply = apply
        self._spawn_task = spawn
        #: VMs created here and not adopted yet (``created``)
        self._pending: dict[tuple[str, str], LaunchVm] = {}
        #: ``HaEvent`` kind -> count (the metrics read it; also ``status``)
        self.counts: dict[str, int] = dict.fromkeys(HA_EVENT_KINDS, 0)
        self.fence_errors = 0

    @property
    def hv(self) -> Hypervisor:
        return self.monitor.hv

    # -- effects (registered with the runner) -----------------------------------------

    async def fence(self, eff: Fence) -> None:
        """Stop this host's copy now: nothing else the core asked for is carried out
        before this returns."""
        key = vm_key(eff.name, eff.namespace)
        try:
            await self._stop(key, eff.action)
        except VmNotFound:
            pass  # gone already
        except HypervisorError as exc:
            self.fence_errors += 1
            log.error("cannot fence %s (generation %d): %s", key, eff.generation, exc)
        log.warning("fenced %s generation %d (%s): %s", key, eff.generation, eff.action, eff.reason)
        with contextlib.suppress(HypervisorError):
            await self.monitor.refresh()

    async def _stop(self, key: str, action: str) -> None:
        if action == "pause":
            with contextlib.suppress(InvalidState):
                await self.hv.suspend(key)
            return
        with contextlib.suppress(InvalidState):
            await self.hv.destroy(key)
        await self.hv.undefine(key)
        self.monitor.specs.pop(key, None)

    async def arm(self, eff: ArmWatchdog) -> None:
        ha = self.node.ha
        guests: tuple[str, ...] = ()
        if ha is not None:
            guests = tuple(sorted(vm_key(n, ns) for (ns, n), o in ha.owned.items() if not o.fenced))
        remaining = None if eff.until is None else eff.until - trio.current_time()
        await self.watchdog.arm(remaining, guests if remaining is not None else ())

    def on_event(self, event: object) -> None:
        """A runner listener: HA events to the log and the counts."""
        if not isinstance(event, HaEvent):
            return
        if event.kind in self.counts:
            self.counts[event.kind] += 1
        vm = f"{event.namespace}/{event.name}" if event.namespace else event.name
        detail = f": {event.detail}" if event.detail else ""
        level = logging.WARNING if event.kind in ("fenced", "gave_up") else logging.INFO
        log.log(level, "ha %s %s generation %d%s", event.kind, vm, event.generation, detail)

    # -- what the host did -------------------------------------------------------------

    async def created(self, vm: LaunchVm) -> None:
        """``vm`` now runs here (created, restarted or moved in): adopt it if HA, with
        the others created within ``ADOPT_BATCH_S`` (one renewal round for all: a
        launch of n VMs would otherwise send n rounds of up to n VMs each)."""
        if vm.ha is None or self.node.ha is None:
            return
        # ``schedule`` said where to launch it (a pin travels as a constraint): a
        # restart goes wherever the constraints allow
        vm = replace(vm, schedule=None)
        first = not self._pending
        self._pending[(vm.namespace, vm.name)] = vm
        if first:
            self._spawn(self._adopt_pending)

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        if self._spawn_task is not None:
            self._spawn_task(fn)
        else:
            raise RuntimeError("HaShell needs spawn to adopt VMs")

    async def _adopt_pending(self) -> None:
        await trio.sleep(ADOPT_BATCH_S)
        pending, self._pending = self._pending, {}
        now = trio.current_time()
        out: list[Any] = []
        for vm in pending.values():
            out += self.node.ha_adopt(vm, now=now)
        await self._apply(out)

    async def removed(self, namespace: str, name: str, *, retire: bool) -> None:
        """This host no longer runs ``namespace/name``: moved away, or removed for good
        (``retire``)."""
        ha = self.node.ha
        self._pending.pop((namespace, name), None)
        if ha is None or (namespace, name) not in ha.owned:
            return
        now = trio.current_time()
        await self._apply(self.node.ha_release(namespace, name, retire=retire, now=now))

    def spec(self, namespace: str, name: str) -> LaunchVm | None:
        """The HA record of a VM this host owns (its guardians, generation)."""
        ha = self.node.ha
        owned = ha.owned.get((namespace, name)) if ha is not None else None
        return owned.vm if owned is not None else None

    def status(self, namespace: str, name: str) -> tuple[str, int] | None:
        """(state, generation) of an HA VM this host owns: ``ok`` or ``fenced``."""
        ha = self.node.ha
        if ha is None:
            return None
        st = ha.status(namespace, name, now=trio.current_time())
        return (st.state, st.generation) if st is not None else None

    def guarded(self) -> list[tuple[str, str, str, int]]:
        """(namespace, name, state, generation) of the restarts this node drives as a
        guardian: ``restarting`` or ``failed``."""
        ha = self.node.ha
        if ha is None:
            return []
        out = []
        for (ns, name), r in ha.restarts.items():
            if r.state == "voting" and len(r.yes) < 2:
                continue  # only proposed: the lease may still run
            out.append((ns, name, "failed" if r.state == "failed" else "restarting", r.gen))
        return out

    async def answer(self, msg: HaQuery) -> HaReply:
        """A peer's ``vm info``: the restarts this node drives (``guarded``), with the
        size each VM had."""
        ha = self.node.ha
        rows: list[HaRow] = []
        for ns, name, state, gen in self.guarded():
            if msg.namespace is not None and ns != msg.namespace:
                continue
            r = ha.restarts.get((ns, name)) if ha is not None else None
            vm = r.vm if r is not None else None
            rows.append(
                HaRow(
                    name,
                    ns,
                    state,
                    gen,
                    vm.vcpus if vm is not None else 0,
                    vm.memory_mib if vm is not None else 0,
                )
            )
        return HaReply(self.monitor.name, tuple(rows[:MAX_ROWS]))

    async def command(self, _args: dict[str, Any]) -> dict[str, Any]:
        """``debug_ha``: this node's HA core in numbers, and the leases it holds as an
        owner (seconds left of the shortest and the longest)."""
        ha = self.node.ha
        if ha is None:
            return {"enabled": False}
        now = trio.current_time()
        left = [o.lease_until - now for o in ha.owned.values() if not o.fenced]
        return {
            "enabled": True,
            "owned": len(ha.owned),
            "fenced": sum(o.fenced for o in ha.owned.values()),
            "held": len(ha.held),
            "restarts": len(ha.restarts),
            "lease_left_s": [round(min(left), 2), round(max(left), 2)] if left else [],
            # owned VMs by how many guardians they have: "3": 100
            "guardians": _count(
                len(o.vm.ha.guardians) if o.vm.ha else 0 for o in ha.owned.values()
            ),
            "stats": dict(ha.stats),
            "events": dict(self.counts),
            "fence_errors": self.fence_errors,
        }

    # -- start -------------------------------------------------------------------------

    async def fence_at_start(self) -> list[str]:
        """Fence every HA copy on the hypervisor (see the module's header); returns
        their domain names."""
        try:
            vms = await self.hv.list_vms()
        except HypervisorError as exc:
            log.error("cannot list the hypervisor's domains to fence HA copies: %s", exc)
            return []
        fenced = []
        for v in vms:
            if v.ha_generation <= 0:
                continue
            if v.ha_fence == "pause" and v.state is not DomainState.RUNNING:
                fenced.append(v.key)
                continue
            try:
                await self._stop(v.key, v.ha_fence or "destroy")
            except HypervisorError as exc:
                self.fence_errors += 1
                log.error("cannot fence %s at start: %s", v.key, exc)
                continue
            fenced.append(v.key)
            log.warning(
                "fenced %s generation %d at start (%s): its lease may have ended while "
                "this daemon was down",
                v.key, v.ha_generation, v.ha_fence or "destroy",
            )  # fmt: skip
        return fenced

    async def aclose(self) -> None:
        await self.watchdog.aclose()


def _count(values: Iterable[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def ha_effects(shell: HaShell) -> dict[type, Callable[[Any], Awaitable[None]]]:
    """The effect types ``shell`` carries out for the runner (``Fence`` first)."""
    return {Fence: shell.fence, ArmWatchdog: shell.arm}


class HaCollector(Collector):
    """The ``dvms_ha_*`` families, read at each scrape (labels: event kinds only, never
    VM names)."""

    def __init__(self, shell: HaShell) -> None:
        self.shell = shell

    def collect(self) -> Iterable[Metric]:
        shell = self.shell
        events = CounterMetricFamily(
            "dvms_ha_events", "High-availability events on this node, by kind (adopted, "
            "fenced, agreed, launched, launch_failed, gave_up, retired).", labels=["kind"],
        )  # fmt: skip
        for kind in HA_EVENT_KINDS:
            events.add_metric([kind], shell.counts[kind])
        yield events
        yield CounterMetricFamily(
            "dvms_ha_fence_errors", "Fences of HA copies the hypervisor refused.",
            value=shell.fence_errors,
        )  # fmt: skip
        ha = shell.node.ha
        owned = sum(not o.fenced for o in ha.owned.values()) if ha is not None else 0
        held = len(ha.held) if ha is not None else 0
        restarting = len(shell.guarded())
        yield GaugeMetricFamily(
            "dvms_ha_owned_vms", "HA VMs running on this host under a lease.", value=owned
        )
        yield GaugeMetricFamily(
            "dvms_ha_guarded_vms", "HA records this node holds as a guardian.", value=held
        )
        yield GaugeMetricFamily(
            "dvms_ha_restarting_vms", "Restarts this node drives as a guardian now.",
            value=restarting,
        )  # fmt: skip
