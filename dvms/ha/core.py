"""The high-availability core of one node (sans-I/O): it owns the HA VMs its host runs
and guards the records of the VMs whose key it is close to.

Owner side (the host running a copy)::

    adopt(vm)  --> every renew_period_s: Renew(all its VMs) to each VM's guardians
    RenewAck from a majority of a VM's guardians for the round sent at s
               --> lease_until = s + lease_s; ArmWatchdog(lease_until - fence_margin_s)
    lease_until - fence_margin_s passes without a newer majority
               --> Fence(vm, policy action) before anything else; stop renewing it
    RenewAck says a newer generation started --> Fence(vm) at once

Guardian side (the ``guardians`` overlay nodes closest to the VM's key)::

    Renew  --> record := the VM (spec, policy, generation), lease_until = now + lease_s
    lease expired here, this guardian ranks r by distance to the key
           --> at lease_until + r * propose_stagger_s: Propose(gen + 1) to the others
    Vote yes from a majority (own vote included; a voter says yes only when its own
           lease for the VM expired and it promised that generation to nobody else)
           --> queue; after batch_window_s: StartLaunch(up to batch_max VMs, high
           priority first), a DVMS launch event carried out by ``NodeCore``
    launch failed --> try again after the policy's back-off, up to its attempts
    the new owner renews the new generation --> done

Why no VM runs twice: the owner counts its lease from the moment it *sent* the renewal
a majority acknowledged; each of those guardians counts from when it *received* it, so
later. A restart needs a majority of votes, and any majority includes a guardian that
acknowledged the owner's last counted renewal, whose lease ends after the owner fences
(and after its watchdog, armed at the same time, stops the guests if the daemon itself
is frozen). Durations only are compared, each on one clock: clock offsets between
hosts do not matter, rate differences are covered by ``fence_margin_s``. A generation
is promised to one proposer at a time, so two guardians never start the same one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum, auto
from typing import Any, ClassVar

from dvms.effects import Address, Emit, Send
from dvms.ha.config import HaConfig
from dvms.ha.messages import (
    HA_MESSAGES,
    RENEW_MAX_VMS,
    Propose,
    Release,
    Renew,
    RenewAck,
    Retire,
    StaleVm,
    Vote,
    record_size,
)
from dvms.overlay.messages import Contact
from dvms.partition.messages import HaTag, LaunchVm, WireConstraint
from dvms.placement.hapolicy import priority_rank
from dvms.requests import TimerHeap

__all__ = [
    "HA_TYPES",
    "ArmWatchdog",
    "Fence",
    "HaCore",
    "HaEvent",
    "HaStatus",
    "StartLaunch",
    "vm_key",
]

HA_TYPES = frozenset(HA_MESSAGES.values())
Key = tuple[str, str]


def vm_key(namespace: str, name: str) -> int:
    """The 160-bit overlay key of a VM's HA record (its guardians are closest to it)."""
    return int.from_bytes(hashlib.sha1(f"ha/{namespace}/{name}".encode()).digest(), "big")


# -- effects --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fence:
    """Stop this host's copy of a VM: ``action`` is ``destroy`` or ``pause``."""

    namespace: str
    name: str
    generation: int
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class ArmWatchdog:
    """The host's watchdog stops every HA guest at ``until`` unless armed again later
    (``None``: no HA guest here, disarm)."""

    until: float | None


@dataclass(frozen=True, slots=True)
class StartLaunch:
    """Launch these VMs (new generations) as one DVMS launch event; tell the core
    ``on_launch_done(token, ...)`` when it ends."""

    token: int
    vms: tuple[LaunchVm, ...]
    constraints: tuple[WireConstraint, ...]


@dataclass(frozen=True, slots=True)
class HaEvent:
    """Emitted: ``adopted``, ``fenced``, ``agreed`` (a majority voted a restart),
    ``launched``, ``launch_failed``, ``gave_up``, ``retired``."""

    kind: str
    namespace: str
    name: str
    generation: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HaStatus:
    """What ``vm info`` shows: ``ok``, ``fenced``, ``restarting`` or ``failed``."""

    state: str
    generation: int
    lease_left_s: float = 0.0


class _T(Enum):
    RENEW = auto()
    FENCE = auto()
    EXPIRE = auto()
    VOTING = auto()
    BATCH = auto()
    RETRY = auto()
    WAIT = auto()


@dataclass(slots=True)
class _Owned:
    vm: LaunchVm
    lease_until: float
    since: float
    acks: dict[int, set[int]] = field(default_factory=dict)  # round -> guardian ids
    last_ack: dict[int, float] = field(default_factory=dict)
    fenced: bool = False
    #: the first round that carried the current guardian set (commits a replacement)
    set_round: int = 0
    #: nodes asked to hold the record before they replace silent guardians, and when
    #: they were first asked: only one that answered joins the set
    candidates: dict[int, Contact] = field(default_factory=dict)
    probed: dict[int, float] = field(default_factory=dict)
    #: the renewal size of ``sized`` (``record_size``), measured once per record
    size: int = 0
    sized: LaunchVm | None = None


@dataclass(slots=True)
class _Held:
    vm: LaunchVm
    owner: Contact
    lease_until: float
    promised: int = 0
    promised_to: int = 0
    promised_until: float = 0.0
    newest_seen: int = 0
    refused: int = 0  # proposals in a row refused because the lease runs elsewhere


@dataclass(slots=True)
class _Restart:
    vm: LaunchVm  # the record as held (the old generation)
    gen: int
    state: str = "voting"  # voting, queued, launching, backoff, waiting, failed
    yes: set[int] = field(default_factory=set)
    no: set[int] = field(default_factory=set)
    newest: int = 0
    failures: int = 0
    #: a voter holds a newer guardian set of this generation than the proposer
    stale_set: bool = False


def _gen(vm: LaunchVm) -> int:
    return vm.ha.generation if vm.ha is not None else 0


def _version(vm: LaunchVm) -> tuple[int, int]:
    """The record's generation and guardian-set epoch: records only move forward."""
    return (vm.ha.generation, vm.ha.epoch) if vm.ha is not None else (0, 0)


def _guardians(vm: LaunchVm) -> tuple[Contact, ...]:
    """Every guardian a message about ``vm`` goes to: its set, and the set before
    while a replacement is not committed."""
    if vm.ha is None:
        return ()
    if not vm.ha.previous:
        return vm.ha.guardians
    ids = {g.node_id for g in vm.ha.guardians}
    return vm.ha.guardians + tuple(g for g in vm.ha.previous if g.node_id not in ids)


def _majority(n: int) -> int:
    return n // 2 + 1


def _quorum(vm: LaunchVm, ids: set[int]) -> bool:
    """``ids`` hold a majority of the VM's guardians (and of the set before, while a
    replacement is under way: joint majorities, so any two quorums intersect)."""
    tag = vm.ha
    if tag is None:
        return False
    for group in (tag.guardians, tag.previous):
        if group and sum(g.node_id in ids for g in group) < _majority(len(group)):
            return False
    return True


def _beaten(vm: LaunchVm, ids: set[int]) -> bool:
    """``ids`` deny a quorum for good (too many of one set said no)."""
    tag = vm.ha
    if tag is None:
        return True
    for group in (tag.guardians, tag.previous):
        n = len(group)
        if group and sum(g.node_id in ids for g in group) > n - _majority(n):
            return True
    return False


class HaCore:
    def __init__(
        self,
        me: Contact,
        closest: Callable[[int, int], list[Contact]],
        config: HaConfig,
        rng: random.Random,
        *,
        now: float = 0.0,
    ) -> None:
        #: ``closest(key, n)``: the ``n`` live overlay nodes this node knows closest to
        #: ``key`` (``RoutingTable.closest(key, n, healthy=True)``).
        self.me = me
        self.closest = closest
        self.config = config
        self.rng = rng
        self.owned: dict[Key, _Owned] = {}
        self.held: dict[Key, _Held] = {}
        self.restarts: dict[Key, _Restart] = {}
        self.timers: TimerHeap[_T] = TimerHeap()
        self.round = 0
        self._round_sent: dict[int, float] = {}
        #: (round, guardian, page) -> the VMs of that renewal page
        self._round_vms: dict[tuple[int, int, int], tuple[Key, ...]] = {}
        self._renew_at: float | None = None
        self._batch_at: float | None = None
        self._watchdog: float | None = None
        self._tokens: dict[int, tuple[Key, ...]] = {}
        #: node id -> until when it is not chosen as a guardian (replaced for silence)
        self._silent: dict[int, float] = {}
        self._next_token = 1
        self.stats: dict[str, int] = {
            "renewals_sent": 0,
            "fenced": 0,
            "proposals": 0,
            "restarts_launched": 0,
            "launch_failures": 0,
            "bad_messages": 0,
        }

    # -- owner commands ----------------------------------------------------------------

    def adopt(self, vm: LaunchVm, *, now: float) -> list[Any]:
        """This host now runs ``vm`` (its ``ha`` tag set): created here, restarted here,
        or migrated in. Guardians are chosen now if the tag names none."""
        if vm.ha is None:
            raise ValueError(f"vm {vm.name}: adopt needs an HA tag")
        key = (vm.namespace, vm.name)
        if not vm.ha.guardians:
            vm = replace(vm, ha=replace(vm.ha, guardians=self._choose(key, (), now=now)))
        self.owned[key] = _Owned(vm, now + self.config.lease_s, now, set_round=self.round + 1)
        out: list[Any] = [Emit(HaEvent("adopted", vm.namespace, vm.name, _gen(vm)))]
        self._fence_timer(key, now)
        self._renew_soon(now)
        self._arm(out)
        return out

    def release(self, namespace: str, name: str, *, retire: bool, now: float) -> list[Any]:
        """This host no longer runs the VM: migrated away (``retire`` false: the new
        host renews it) or removed by its user (``retire``: guardians forget it)."""
        o = self.owned.pop((namespace, name), None)
        out: list[Any] = []
        if o is None:
            return out
        if retire:
            msg = Retire(namespace, name, _gen(o.vm))
            for g in _guardians(o.vm):
                out.append(Send(g.addr, self._rid(), msg))
            out.append(Emit(HaEvent("retired", namespace, name, _gen(o.vm))))
        self._arm(out)
        return out

    def stopped(self, namespace: str, name: str, *, now: float) -> list[Any]:
        """The host's watchdog stopped this copy: it is fenced, renewals stop (the
        guardians restart it once the lease runs out)."""
        o = self.owned.get((namespace, name))
        out: list[Any] = []
        if o is not None and not o.fenced:
            o.fenced = True
            out.append(Emit(HaEvent("fenced", namespace, name, _gen(o.vm), "watchdog")))
            self._arm(out)
        return out

    def status(self, namespace: str, name: str, *, now: float) -> HaStatus | None:
        key = (namespace, name)
        o = self.owned.get(key)
        if o is not None:
            if o.fenced:
                return HaStatus("fenced", _gen(o.vm))
            return HaStatus("ok", _gen(o.vm), max(0.0, o.lease_until - now))
        r = self.restarts.get(key)
        if r is not None:
            return HaStatus("failed" if r.state == "failed" else "restarting", r.gen)
        return None

    # -- inputs ------------------------------------------------------------------------

    def on_message(self, src: Address, sender: int, rid: int, msg: Any, *, now: float) -> list[Any]:
        out: list[Any] = []
        t = type(msg)
        if t is Renew:
            self._on_renew(src, rid, msg, now, out)
        elif t is RenewAck:
            self._on_ack(sender, msg, now, out)
        elif t is Propose:
            self._on_propose(src, sender, rid, msg, now, out)
        elif t is Vote:
            self._on_vote(sender, msg, now, out)
        elif t is Release:
            h = self.held.get((msg.namespace, msg.name))
            if h is not None and h.promised == msg.generation and h.promised_to == sender:
                h.promised, h.promised_to, h.promised_until = 0, 0, 0.0
        elif t is Retire:
            h = self.held.get((msg.namespace, msg.name))
            if h is not None and _gen(h.vm) <= msg.generation:
                del self.held[(msg.namespace, msg.name)]
        else:
            self.stats["bad_messages"] += 1
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def on_timer(self, *, now: float) -> list[Any]:
        out: list[Any] = []
        # Fences first: a host waking from a freeze stops stale copies before it
        # sends anything.
        due = []
        while (item := self.timers.pop_due(now)) is not None:
            due.append(item)
        due.sort(key=lambda it: (it[2] is not _T.FENCE, it[0], it[1]))
        for _when, _seq, kind, ref in due:
            self._handlers[kind](self, ref, now, out)
        return out

    def on_launch_done(self, token: int, ok: bool, reason: str, *, now: float) -> list[Any]:
        out: list[Any] = []
        for key in self._tokens.pop(token, ()):
            r = self.restarts.get(key)
            if r is None or r.state != "launching":
                continue
            ns, name = key
            if ok:
                r.state = "waiting"
                out.append(Emit(HaEvent("launched", ns, name, r.gen)))
                self.timers.at(now + self.config.promise_s, _T.WAIT, (key, r.gen))
                continue
            r.failures += 1
            self.stats["launch_failures"] += 1
            tag = r.vm.ha
            attempts = tag.attempts if tag is not None else 1
            if r.failures >= attempts:
                r.state = "failed"
                out.append(Emit(HaEvent("gave_up", ns, name, r.gen, reason)))
                continue
            r.state = "backoff"
            out.append(Emit(HaEvent("launch_failed", ns, name, r.gen, reason)))
            backoff = tag.backoff_s * 2.0 ** (r.failures - 1) if tag is not None else 1.0
            self.timers.at(now + backoff, _T.RETRY, (key, r.gen))
        return out

    # -- owner -------------------------------------------------------------------------

    def _rid(self) -> int:
        return self.rng.getrandbits(63)

    def _choose(
        self,
        key: Key,
        keep: tuple[Contact, ...],
        avoid: frozenset[int] = frozenset(),
        *,
        now: float,
    ) -> tuple[Contact, ...]:
        """``keep`` and the closest nodes to the VM's key up to ``guardians``, never a
        node replaced for silence within ``avoid_silent_s``: the routing table may still
        show a crashed node as healthy, and two dead nodes must not take turns."""
        k = self.config.guardians
        target = vm_key(*key)
        chosen = list(keep)
        for node_id in [n for n, until in self._silent.items() if until <= now]:
            del self._silent[node_id]
        ids = {c.node_id for c in chosen} | {self.me.node_id} | avoid | self._silent.keys()
        for c in self.closest(target, k + len(ids)):
            if len(chosen) >= k:
                break
            if c.node_id not in ids:
                chosen.append(c)
                ids.add(c.node_id)
        return tuple(chosen)

    def _renew_soon(self, now: float) -> None:
        if self._renew_at is None or self._renew_at > now:
            self._renew_at = now
            self.timers.at(now, _T.RENEW)

    def _renew(self, _ref: None, now: float, out: list[Any]) -> None:
        if self._renew_at is None or self._renew_at > now:
            return  # superseded by an earlier renewal
        live = [(k, o) for k, o in self.owned.items() if not o.fenced]
        if not live:
            self._renew_at = None
            return
        self.round += 1
        r = self.round
        self._round_sent[r] = now
        for old in [x for x, t in self._round_sent.items() if t < now - self.config.lease_s]:
            del self._round_sent[old]
        by_guardian: dict[int, tuple[Contact, list[_Owned]]] = {}
        for key, o in live:
            self._replace_silent(key, o, now)
            if o.sized is not o.vm:
                o.size, o.sized = record_size(o.vm), o.vm
            for g in (*_guardians(o.vm), *o.candidates.values()):
                by_guardian.setdefault(g.node_id, (g, []))[1].append(o)
        self._round_vms = {k: v for k, v in self._round_vms.items() if k[0] in self._round_sent}
        for gid, (g, owned) in by_guardian.items():
            for page, chunk in enumerate(self._pages(owned)):
                self._round_vms[(r, gid, page)] = tuple((v.namespace, v.name) for v in chunk)
                out.append(Send(g.addr, self._rid(), Renew(r, self.me, chunk, page)))
                self.stats["renewals_sent"] += 1
        self._renew_at = now + self.config.renew_period_s
        self.timers.at(self._renew_at, _T.RENEW)

    def _pages(self, owned: list[_Owned]) -> list[tuple[LaunchVm, ...]]:
        """The records for one guardian in pages of at most ``renew_max_bytes`` and
        ``RENEW_MAX_VMS`` (a record larger than a page goes alone)."""
        limit = self.config.renew_max_bytes
        pages: list[tuple[LaunchVm, ...]] = []
        page: list[LaunchVm] = []
        used = 0
        for o in owned:
            if page and (used + o.size > limit or len(page) >= RENEW_MAX_VMS):
                pages.append(tuple(page))
                page, used = [], 0
            page.append(o.vm)
            used += o.size
        if page:
            pages.append(tuple(page))
        return pages

    def _replace_silent(self, key: Key, o: _Owned, now: float) -> None:
        """Swap out guardians silent for ``replace_after_s`` for the next closest nodes
        that answered. A candidate is sent the renewals from one period before the
        guardian counts as silent and joins the set only once it acknowledged one: the
        routing table may list a crashed or cut-off node as healthy, and a set that
        names unreachable nodes can neither commit nor, once the owner is gone, restart
        the VM. A candidate silent for ``replace_after_s`` is avoided like a replaced
        guardian and the next one asked. The old set stays in
        the tag (``previous``) until a majority of both sets has acknowledged a renewal
        carrying the new one: an owner cut off from most of its guardians cannot
        escape its lease by picking new ones."""
        tag = o.vm.ha
        if tag is None or tag.previous:
            return  # one replacement at a time
        limit = self.config.replace_after_s
        gs = tag.guardians
        quiet = {g.node_id: now - o.last_ack.get(g.node_id, o.since) for g in gs}
        suspect = [i for i, q in quiet.items() if q > limit - self.config.renew_period_s]
        if not suspect:
            o.candidates.clear()
            o.probed.clear()
            return
        keep = tuple(g for g in gs if quiet[g.node_id] <= limit)
        silent = frozenset(g.node_id for g in gs) - {g.node_id for g in keep}
        avoid_until = now + self.config.avoid_silent_s
        for node_id in silent:
            self._silent[node_id] = avoid_until
        ready: list[Contact] = []
        asked = tuple(g for g in gs if g.node_id not in suspect)
        for cid, c in list(o.candidates.items()):
            if o.last_ack.get(cid, -1.0) >= o.probed[cid]:
                ready.append(c)
            elif now - o.probed[cid] > limit:
                self._silent[cid] = avoid_until
                del o.candidates[cid], o.probed[cid]
        if len(o.candidates) < len(suspect):
            asked += tuple(o.candidates.values())
            for c in self._choose(key, asked, frozenset(suspect), now=now)[len(asked) :]:
                o.candidates[c.node_id] = c
                o.probed[c.node_id] = now
        # with no candidate (a small cluster) a silent guardian stays: a smaller set
        # would need every guardian left for a majority (2 of 2) and is never grown
        # again, so one more failure would lose the VM
        if not ready or not silent:
            return
        new = keep + tuple(ready[: len(silent)])
        new += tuple(g for g in gs if g.node_id in silent)[: len(gs) - len(new)]
        o.vm = replace(o.vm, ha=replace(tag, guardians=new, previous=gs, epoch=tag.epoch + 1))
        o.set_round = self.round
        for g in new:
            o.candidates.pop(g.node_id, None)
            o.probed.pop(g.node_id, None)
            o.last_ack.setdefault(g.node_id, now)

    def _on_ack(self, sender: int, msg: RenewAck, now: float, out: list[Any]) -> None:
        sent = self._round_sent.get(msg.round)
        keys = self._round_vms.get((msg.round, sender, msg.page))
        if sent is None or keys is None:
            return
        refused = set()
        for s in msg.stale:
            key = (s.namespace, s.name)
            o = self.owned.get(key)
            if o is None or s.generation <= _gen(o.vm):
                continue
            refused.add(key)
            if s.started and not o.fenced:
                self._fence(key, o, f"generation {s.generation} runs elsewhere", out)
        for key in keys:
            o = self.owned.get(key)
            if key in refused or o is None or o.fenced:
                continue
            if sender in o.candidates:
                o.last_ack[sender] = now  # ready to replace a silent guardian
                continue
            if not any(g.node_id == sender for g in _guardians(o.vm)):
                continue
            o.last_ack[sender] = now
            self._silent.pop(sender, None)
            acks = o.acks.setdefault(msg.round, set())
            acks.add(sender)
            if _quorum(o.vm, acks):
                o.lease_until = max(o.lease_until, sent + self.config.lease_s)
                for old in [x for x in o.acks if x < msg.round]:
                    del o.acks[old]
                tag = o.vm.ha
                if tag is not None and tag.previous and msg.round >= o.set_round:
                    o.vm = replace(o.vm, ha=replace(tag, previous=()))  # committed
                    # tell the guardians now, not a period later: until they hear it,
                    # their votes still need a majority of the set before, which may
                    # hold the very nodes that were replaced
                    self._renew_soon(now)
        self._arm(out)

    def _fence_timer(self, key: Key, now: float) -> None:
        o = self.owned[key]
        self.timers.at(o.lease_until - self.config.fence_margin_s, _T.FENCE, key)

    def _check_fence(self, key: Key, now: float, out: list[Any]) -> None:
        o = self.owned.get(key)
        if o is None or o.fenced:
            return
        due = o.lease_until - self.config.fence_margin_s
        if now >= due:
            self._fence(key, o, "lease not renewed by a majority of guardians", out)
        else:
            self.timers.at(due, _T.FENCE, key)

    def _fence(self, key: Key, o: _Owned, reason: str, out: list[Any]) -> None:
        o.fenced = True
        self.stats["fenced"] += 1
        tag = o.vm.ha
        action = tag.fence if tag is not None else "destroy"
        out.append(Fence(key[0], key[1], _gen(o.vm), action, reason))
        out.append(Emit(HaEvent("fenced", key[0], key[1], _gen(o.vm), reason)))
        self._arm(out)

    def _arm(self, out: list[Any]) -> None:
        live = [o.lease_until for o in self.owned.values() if not o.fenced]
        # half the margin: the core's own fence of one VM comes first, the watchdog
        # (every HA guest of the host) only if the daemon did not act
        until = min(live) - self.config.fence_margin_s / 2 if live else None
        if until != self._watchdog:
            self._watchdog = until
            out.append(ArmWatchdog(until))

    # -- guardian ----------------------------------------------------------------------

    def _on_renew(self, src: Address, rid: int, msg: Renew, now: float, out: list[Any]) -> None:
        stale: list[StaleVm] = []
        lease = self.config.lease_s
        for vm in msg.vms:
            if vm.ha is None:
                self.stats["bad_messages"] += 1
                continue
            key = (vm.namespace, vm.name)
            gen = vm.ha.generation
            h = self.held.get(key)
            if h is None:
                self.held[key] = _Held(vm, msg.owner, now + lease, newest_seen=gen)
                self.timers.at(now + lease, _T.EXPIRE, key)
                continue
            if _gen(h.vm) > gen:
                stale.append(StaleVm(vm.namespace, vm.name, _gen(h.vm), True))
                continue
            if h.promised > gen and now < h.promised_until:
                stale.append(StaleVm(vm.namespace, vm.name, h.promised, False))
                continue
            newer = gen > _gen(h.vm)
            if _version(vm) >= _version(h.vm):
                h.vm = vm  # never back to an older guardian set (a late datagram)
            h.owner, h.refused = msg.owner, 0
            h.newest_seen = max(h.newest_seen, gen)
            if h.lease_until <= now:
                self.timers.at(now + lease, _T.EXPIRE, key)
            h.lease_until = now + lease
            r = self.restarts.get(key)
            if newer and r is not None and r.gen <= gen:
                del self.restarts[key]  # the restarted copy's owner renews: done
        out.append(Send(src, rid, RenewAck(msg.round, tuple(stale), msg.page)))

    def _rank(self, h: _Held) -> int | None:
        target = vm_key(h.vm.namespace, h.vm.name)
        tag = h.vm.ha
        order = sorted(tag.guardians if tag is not None else (), key=lambda c: c.node_id ^ target)
        for i, c in enumerate(order):
            if c.node_id == self.me.node_id:
                return i
        return None

    def _expire(self, key: Key, now: float, out: list[Any]) -> None:
        h = self.held.get(key)
        if h is None or key in self.restarts:
            return
        rank = self._rank(h)
        if rank is None:
            if now >= h.lease_until + self.config.promise_s:
                del self.held[key]  # no longer one of its guardians
            else:
                self.timers.at(h.lease_until + self.config.promise_s, _T.EXPIRE, key)
            return
        due = h.lease_until + rank * self.config.propose_stagger_s
        if now < due:
            self.timers.at(due, _T.EXPIRE, key)
            return
        if h.promised > _gen(h.vm) and now < h.promised_until and h.promised_to != self.me.node_id:
            self.timers.at(h.promised_until, _T.EXPIRE, key)  # another guardian restarts it
            return
        gen = max(_gen(h.vm), h.promised, h.newest_seen) + 1
        if h.promised_to == self.me.node_id and h.promised > _gen(h.vm):
            gen = max(gen - 1, h.promised)  # our own earlier proposal: same generation
        self._propose(key, h, gen, now, out)

    def _propose(self, key: Key, h: _Held, gen: int, now: float, out: list[Any]) -> None:
        self.stats["proposals"] += 1
        r = _Restart(h.vm, gen, yes={self.me.node_id})
        self.restarts[key] = r
        h.promised, h.promised_to = gen, self.me.node_id
        h.promised_until = now + self.config.promise_s
        msg = Propose(key[0], key[1], gen, *_version(h.vm))
        for g in _guardians(h.vm):
            if g.node_id != self.me.node_id:
                out.append(Send(g.addr, self._rid(), msg))
        self.timers.at(now + self.config.propose_retry_s, _T.VOTING, (key, gen))
        self._tally(key, r, now, out)

    def _on_propose(
        self, src: Address, sender: int, rid: int, msg: Propose, now: float, out: list[Any]
    ) -> None:
        key = (msg.namespace, msg.name)
        h = self.held.get(key)
        yes, newest, stale_set = False, 0, False
        if h is None:
            pass
        elif _gen(h.vm) >= msg.generation:
            newest = _gen(h.vm)
        elif _version(h.vm) > (msg.base, msg.epoch):
            # the proposer's record is older than ours: its guardian set may be one we
            # were dropped from with others, whose majority is no quorum any more
            if _gen(h.vm) == msg.base:
                stale_set = True
            else:
                newest = _gen(h.vm)
        elif now < h.lease_until:
            newest = 0
        elif (
            # a restart promised to another proposer is outstanding: whatever generation
            # this one asks for, it waits (a higher one would start a second copy beside
            # the promised one)
            h.promised > _gen(h.vm)
            and h.promised_to != sender
            and now < h.promised_until
            and not self._give_way(key, h, sender, msg.generation, out)
        ):
            newest = h.promised
        else:
            yes = True
            h.promised, h.promised_to = msg.generation, sender
            h.promised_until = now + self.config.promise_s
            mine = self.restarts.get(key)
            if mine is not None and mine.state == "voting" and mine.gen <= msg.generation:
                del self.restarts[key]  # we give way to the other proposal
        vote = Vote(msg.namespace, msg.name, msg.generation, yes, newest, stale_set)
        out.append(Send(src, rid, vote))

    def _give_way(self, key: Key, h: _Held, sender: int, gen: int, out: list[Any]) -> bool:
        """Two guardians propose at once: the one farther from the key withdraws its
        own proposal (still being voted) and gives its votes back, so they never both
        wait for each other."""
        mine = self.restarts.get(key)
        if mine is None or mine.state != "voting" or h.promised_to != self.me.node_id:
            return False
        target = vm_key(*key)
        if (sender ^ target) >= (self.me.node_id ^ target) or mine.gen > gen:
            return False
        del self.restarts[key]
        self._release(key, h.vm, mine.gen, out)
        return True

    def _release(self, key: Key, vm: LaunchVm, gen: int, out: list[Any]) -> None:
        msg = Release(key[0], key[1], gen)
        for g in _guardians(vm):
            if g.node_id != self.me.node_id:
                out.append(Send(g.addr, self._rid(), msg))

    def _on_vote(self, sender: int, msg: Vote, now: float, out: list[Any]) -> None:
        key = (msg.namespace, msg.name)
        r = self.restarts.get(key)
        if r is None or r.gen != msg.generation or r.state != "voting":
            return
        if not any(g.node_id == sender for g in _guardians(r.vm)):
            return
        if msg.yes:
            r.yes.add(sender)
        else:
            r.no.add(sender)
            r.newest = max(r.newest, msg.newest)
            r.stale_set = r.stale_set or msg.stale_set
        self._tally(key, r, now, out)

    def _tally(self, key: Key, r: _Restart, now: float, out: list[Any]) -> None:
        if _quorum(r.vm, r.yes):
            r.state = "queued"
            out.append(Emit(HaEvent("agreed", key[0], key[1], r.gen)))
            if self._batch_at is None:
                self._batch_at = now + self.config.batch_window_s
                self.timers.at(self._batch_at, _T.BATCH)
        elif _beaten(r.vm, r.no):
            self._lost_vote(key, r, now, out)

    def _lost_vote(self, key: Key, r: _Restart, now: float, out: list[Any]) -> None:
        del self.restarts[key]
        self._release(key, r.vm, r.gen, out)
        h = self.held.get(key)
        if h is None:
            return
        h.newest_seen = max(h.newest_seen, r.newest)
        if h.promised_to == self.me.node_id and h.promised == r.gen:
            h.promised, h.promised_to, h.promised_until = 0, 0, 0.0
        if r.newest == 0:
            h.refused += 1  # the lease runs with the others, or under a newer set
            if h.refused >= 3 and (r.stale_set or self._rank(h) is None):
                # not one of its guardians any more (an owner that still counts on
                # this node sends it the record again with its next renewal)
                del self.held[key]
                return
        delay = self.config.propose_retry_s * min(8, 2 ** max(0, h.refused - 1))
        rank = self._rank(h) or 0
        self.timers.at(now + delay + rank * self.config.propose_stagger_s, _T.EXPIRE, key)

    def _voting_timeout(self, ref: tuple[Key, int], now: float, out: list[Any]) -> None:
        key, gen = ref
        r = self.restarts.get(key)
        if r is not None and r.gen == gen and r.state == "voting":
            self._lost_vote(key, r, now, out)

    def _batch(self, _ref: None, now: float, out: list[Any]) -> None:
        self._batch_at = None
        queued = [(k, r) for k, r in self.restarts.items() if r.state == "queued"]
        queued.sort(key=lambda kr: (priority_rank(_priority(kr[1].vm)), kr[0]))
        size = self.config.batch_max
        for i in range(0, len(queued), size):
            chunk = queued[i : i + size]
            vms: list[LaunchVm] = []
            cons: dict[WireConstraint, None] = {}
            for _key, r in chunk:
                r.state = "launching"
                assert r.vm.ha is not None
                tag = replace(r.vm.ha, generation=r.gen)
                vms.append(replace(r.vm, ha=tag))
                for c in r.vm.constraints:
                    cons.setdefault(c, None)
            token = self._next_token
            self._next_token += 1
            self._tokens[token] = tuple(k for k, _ in chunk)
            self.stats["restarts_launched"] += len(chunk)
            out.append(StartLaunch(token, tuple(vms), tuple(cons)))

    def _retry(self, ref: tuple[Key, int], now: float, out: list[Any]) -> None:
        key, gen = ref
        r = self.restarts.get(key)
        h = self.held.get(key)
        if r is None or r.gen != gen or r.state != "backoff" or h is None:
            return
        failures = r.failures
        self._propose(key, h, gen, now, out)  # renew the promises, then queue again
        self.restarts[key].failures = failures

    def _wait(self, ref: tuple[Key, int], now: float, out: list[Any]) -> None:
        """The restarted copy's owner never renewed: restart again (newer generation)."""
        key, gen = ref
        r = self.restarts.get(key)
        if r is None or r.gen != gen or r.state != "waiting":
            return
        del self.restarts[key]
        h = self.held.get(key)
        if h is not None:
            h.newest_seen = max(h.newest_seen, gen)
            self.timers.at(now, _T.EXPIRE, key)

    _handlers: ClassVar[dict[_T, Any]] = {
        _T.RENEW: _renew,
        _T.FENCE: lambda self, key, now, out: self._check_fence(key, now, out),
        _T.EXPIRE: lambda self, key, now, out: self._expire(key, now, out),
        _T.VOTING: _voting_timeout,
        _T.BATCH: _batch,
        _T.RETRY: _retry,
        _T.WAIT: _wait,
    }


def _priority(vm: LaunchVm) -> str:
    return vm.ha.priority if vm.ha is not None else "medium"


def tag_for(policy: Any, generation: int = 1) -> HaTag:
    """The ``HaTag`` a new HA VM of ``policy`` (an ``HaPolicy``) starts with."""
    return HaTag(
        generation,
        priority=policy.priority,
        fence=policy.fence,
        attempts=policy.restart_attempts,
        backoff_s=float(policy.restart_backoff_s),
    )
