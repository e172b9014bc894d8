"""One node's whole protocol stack as a single sans-I/O core: the overlay (Kademlia +
Vivaldi) and, when the node hosts VMs, the partition protocol on top of it. Messages
are routed by type; timers and deadlines are merged. The Trio runner and the simulator
both drive this object.

It is also the glue between the two cores. The partition core only reads the overlay;
what it needs done there it returns as effects (``dvms.partition.events
.OVERLAY_EFFECTS``), which this class carries out before handing the rest on::

    partition effect      --> overlay operation                --> answer
    ClaimNames            --> get, put claim, get (per name)   --> partition.on_names_claimed
    RecordLocation        --> get, put hosted record
    ReleaseNames          --> unpublish claims (get, put free)
    PeerUnreachable       --> overlay.table.failed(node)

(``dvms.partition.directory`` has the record format and the client.) Shells should
call the partition commands through the wrappers below (``launch``, ``on_computed``,
``on_driver_result``, ``on_monitor``, ``shutdown``); a shell that calls the partition
core directly still gets the same behaviour one timer tick later (the core holds such
effects and makes its deadline due, and ``on_timer`` comes through here)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dvms.effects import Address, Emit, Send
from dvms.ha.core import HA_TYPES, HaCore, StartLaunch
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact, FindNode, FindValue, Store
from dvms.overlay.records import Identity, ValidatorRegistry
from dvms.partition.config import PartitionConfig
from dvms.partition.core import PartitionCore
from dvms.partition.directory import PREFIX, Directory, directory_validator
from dvms.partition.events import EventDone, RecordLocation
from dvms.partition.messages import (
    PARTITION_MESSAGES,
    CanMerge,
    CreateVm,
    HostState,
    Isp,
    LaunchVm,
    MigrateVm,
    SetPartition,
    StatePage,
    StillValid,
    WireConstraint,
)
from dvms.placement.config import PlacementConfig
from dvms.stack.limits import PeerLimiter
from dvms.vivaldi import VivaldiClient, VivaldiConfig

__all__ = ["NodeCore", "build_cores"]

_PARTITION_TYPES = frozenset(PARTITION_MESSAGES.values())
#: The requests that cost this node work, by rate-limit class (``limits.py``).
_LIMITED: dict[type, str] = {
    FindNode: "lookup",
    FindValue: "lookup",
    Store: "store",
    **{
        t: "partition"
        for t in (Isp, SetPartition, StatePage, CanMerge, StillValid, MigrateVm, CreateVm)
    },
}


def build_cores(
    contact: Contact,
    kademlia: KademliaConfig,
    rng: random.Random,
    *,
    vivaldi: VivaldiConfig | None = None,
    validators: ValidatorRegistry | None = None,
    partition: PartitionConfig | None = None,
    placement: PlacementConfig | None = None,
    local_state: Callable[[], HostState | None] | None = None,
    self_monitor: bool = True,
    now: float = 0.0,
) -> tuple[OverlayCore, PartitionCore | None]:
    """A node's overlay core (with a Vivaldi client when ``vivaldi`` is given) and, with
    ``partition``, its partition core, whose solver runs with ``placement`` (default:
    the placement engine's defaults), as the daemon, the simulators and the test harness
    all build them. Random sources come from ``rng`` in one fixed order, so one seed gives
    the same node everywhere: the overlay uses ``rng`` itself, then Vivaldi and the
    partition core each get their own ``random.Random`` drawn from it."""
    client = None
    if vivaldi is not None:
        client = VivaldiClient(vivaldi, random.Random(rng.getrandbits(64)))
    overlay = OverlayCore(contact, kademlia, rng, vivaldi=client, validators=validators, now=now)
    if partition is None:
        return overlay, None
    if local_state is None:
        raise ValueError("a partition core needs local_state")
    part = PartitionCore(
        contact,
        overlay,
        partition,
        random.Random(rng.getrandbits(64)),
        local_state=local_state,
        self_monitor=self_monitor,
        placement=placement,
        now=now,
    )
    return overlay, part


class NodeCore:
    def __init__(
        self,
        overlay: OverlayCore,
        partition: PartitionCore | None = None,
        *,
        identity: Identity | None = None,
        ha: HaCore | None = None,
        limits: PeerLimiter | None = None,
    ) -> None:
        """``identity`` signs this node's directory records (the daemon passes its own
        key pair). Without one, a key pair is derived from the node id: fine in a
        simulation, forgeable by anyone who knows the id, so not for a real cluster.
        ``limits``: per-peer rate limits on expensive requests (none: unlimited)."""
        self.overlay = overlay
        self.partition = partition
        #: High availability (``dvms.ha``): its restart launches go through this node's
        #: partition core (``StartLaunch``), their ends come back to it.
        self.ha = ha
        self._ha_launches: dict[int, int] = {}  # launch event id -> HA token
        self.limits = limits
        self._identity = identity
        self.directory: Directory | None = None
        if partition is not None:
            validators = overlay.store.validators
            try:
                validators.for_name(PREFIX)
            except ValueError:
                validators.register(directory_validator(partition.config.directory_replicas))
            self.directory = Directory(overlay, self.identity, self._names_claimed)

    @property
    def node_id(self) -> int:
        return self.overlay.node_id

    def identity(self) -> Identity:
        if self._identity is None:
            seed = b"dvms-sim-directory:" + self.node_id.to_bytes(20, "big")
            self._identity = Identity.from_seed(seed)
        return self._identity

    # -- inputs ------------------------------------------------------------------------

    def admit(self, src: Address, cls: str, *, now: float) -> bool:
        """Whether a request of rate-limit class ``cls`` from ``src`` is served now."""
        return self.limits is None or self.limits.admit(src, cls, now)

    def on_message(self, src: Address, sender: int, rid: int, msg: Any, *, now: float) -> list[Any]:
        cls = _LIMITED.get(type(msg))
        if cls is not None and not self.admit(src, cls, now=now):
            return []
        if type(msg) in HA_TYPES:
            if self.ha is None:
                return []
            return self._glue(self.ha.on_message(src, sender, rid, msg, now=now), now)
        if type(msg) in _PARTITION_TYPES:
            if self.partition is None:
                return []
            return self._glue(self.partition.on_message(src, sender, rid, msg, now=now), now)
        return self._glue(self.overlay.on_message(src, sender, rid, msg, now=now), now)

    def on_timer(self, *, now: float) -> list[Any]:
        out: list[Any] = []
        if self.ha is not None:
            d = self.ha.next_deadline()
            if d is not None and d <= now:
                out += self.ha.on_timer(now=now)  # fences before anything else
        out += self.overlay.on_timer(now=now)
        if self.partition is not None:
            d = self.partition.next_deadline()
            if d is not None and d <= now:
                out += self.partition.on_timer(now=now)
        return self._glue(out, now)

    def next_deadline(self) -> float | None:
        a = self.overlay.next_deadline()
        b = self.partition.next_deadline() if self.partition is not None else None
        if self.ha is not None:
            c = self.ha.next_deadline()
            if c is not None and (b is None or c < b):
                b = c
        if a is None:
            return b
        return a if b is None or a < b else b

    # -- partition commands (glued) ----------------------------------------------------

    def _part(self) -> PartitionCore:
        if self.partition is None:
            raise RuntimeError("this node runs no partition protocol")
        return self.partition

    def launch(
        self,
        vms: tuple[LaunchVm, ...],
        constraints: tuple[WireConstraint, ...],
        *,
        now: float,
        claim: bool = True,
        prefer: tuple[Contact, ...] = (),
    ) -> tuple[int, list[Any]]:
        part = self._part()
        event_id, out = part.launch(vms, constraints, now=now, claim=claim, prefer=prefer)
        return event_id, self._glue(out + part.take_outbox(), now)

    def on_computed(self, token: int, outcome: Any, *, now: float) -> list[Any]:
        part = self._part()
        out = part.on_computed(token, outcome, now=now)
        return self._glue(out + part.take_outbox(), now)

    def on_driver_result(self, op: int, ok: bool, reason: str, *, now: float) -> list[Any]:
        part = self._part()
        out = part.on_driver_result(op, ok, reason, now=now)
        return self._glue(out + part.take_outbox(), now)

    def on_monitor(self, *, now: float) -> list[Any]:
        part = self._part()
        out = part.on_monitor(now=now)
        return self._glue(out + part.take_outbox(), now)

    def shutdown(self, *, now: float) -> list[Any]:
        part = self._part()
        out = part.shutdown(now=now)
        return self._glue(out + part.take_outbox(), now)

    def leave(self, *, at: float, now: float) -> list[Any]:
        """This node stops cleanly: a Leave signed by its identity (``at``: wall clock,
        seconds) to every routing-table peer (``OverlayCore.leave``). Peers check the
        signature against the node id, so only a node whose id is its identity's (the
        daemon's) is believed."""
        return self.overlay.leave(self.identity().sign_leave(at), now=now)

    def ha_adopt(self, vm: LaunchVm, *, now: float) -> list[Any]:
        """This host now runs HA VM ``vm`` (created, restarted or migrated in here)."""
        if self.ha is None:
            return []
        return self._glue(self.ha.adopt(vm, now=now), now)

    def ha_release(self, namespace: str, name: str, *, retire: bool, now: float) -> list[Any]:
        """This host no longer runs HA VM ``namespace/name`` (``retire``: for good)."""
        if self.ha is None:
            return []
        return self._glue(self.ha.release(namespace, name, retire=retire, now=now), now)

    def ha_stopped(self, namespace: str, name: str, *, now: float) -> list[Any]:
        """The host's watchdog stopped HA VM ``namespace/name``."""
        if self.ha is None:
            return []
        return self._glue(self.ha.stopped(namespace, name, now=now), now)

    def located(
        self, namespace: str, name: str, host: str, node_id: int, *, now: float
    ) -> list[Any]:
        """VM ``namespace/name`` now runs on ``host`` (node ``node_id``) by a move this
        node made outside a partition (``vm migrate``): write its directory record."""
        if self.directory is None:
            return []
        return self._glue([RecordLocation(namespace, name, host, node_id)], now)

    def forget_vm(self, namespace: str, name: str, *, now: float) -> list[Any]:
        """This node removed VM ``namespace/name`` for good: free its directory name."""
        if self.directory is None:
            return []
        return self._glue(self.directory.forget(namespace, name, now), now)

    # -- glue --------------------------------------------------------------------------

    def _ha_glue(self, effects: list[Any], now: float) -> list[Any]:
        """HA restart launches become launch events here (no directory claim: the
        generation decides which copy is the VM); their ends go back to the HA core."""
        ha = self.ha
        assert ha is not None
        if not any(type(e) is StartLaunch for e in effects) and not self._ha_launches:
            return effects
        out: list[Any] = []
        queue = list(effects)
        i = 0
        while i < len(queue):
            eff = queue[i]
            i += 1
            if type(eff) is StartLaunch:
                if self.partition is None:
                    queue += ha.on_launch_done(eff.token, False, "no partition protocol", now=now)
                    continue
                part = self.partition
                eid, more = part.launch(eff.vms, eff.constraints, now=now, claim=False)
                self._ha_launches[eid] = eff.token
                queue += more + part.take_outbox()
                continue
            if type(eff) is Emit and type(eff.event) is EventDone:
                token = self._ha_launches.pop(eff.event.event_id, None)
                if token is not None:
                    ev = eff.event
                    queue += ha.on_launch_done(token, ev.ok, ev.reason, now=now)
            out.append(eff)
        return out

    def _names_claimed(
        self,
        event_id: int,
        taken: tuple[str, ...],
        seqs: tuple[tuple[str, str, int], ...],
        now: float,
    ) -> list[Any]:
        part = self._part()
        return part.on_names_claimed(event_id, taken, now=now, seqs=seqs) + part.take_outbox()

    def _glue(self, effects: list[Any], now: float) -> list[Any]:
        """Carry out the overlay effects among ``effects`` (and everything they lead
        to), return the rest for the shell."""
        if self.ha is not None:
            effects = self._ha_glue(effects, now)
        d = self.directory
        if d is None:
            return effects
        for e in effects:  # mostly datagrams, which the directory never takes
            if type(e) is not Send and d.wants(e):
                break
        else:
            return effects
        out: list[Any] = []
        queue = list(effects)
        i = 0
        while i < len(queue):
            eff = queue[i]
            i += 1
            if d.wants(eff):
                queue += d.take(eff, now)
            else:
                out.append(eff)
        return out
