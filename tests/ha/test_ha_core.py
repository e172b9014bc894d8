"""The HA core on an in-memory pump (``ha_harness``): leases, fencing, restarts by a
majority of guardians, batches, back-off, and no double run under any fault schedule."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from ha_harness import World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvms.ha import HaConfig, HaEvent, tag_for, vm_key
from dvms.placement.hapolicy import HaPolicy, HaPolicyError, parse_policy


def _events(w: World, kind: str) -> list[tuple[float, int, HaEvent]]:
    return [(t, i, e) for t, i, e in w.events if isinstance(e, HaEvent) and e.kind == kind]


def test_renewals_keep_a_healthy_vm_where_it_is() -> None:
    w = World(6)
    w.start(0, "a")
    w.run_until(120.0)
    assert w.copies("a") == [0]
    assert not _events(w, "agreed") and not _events(w, "fenced")
    st_ = w.hosts[0].core.status("", "a", now=w.now)
    assert st_ is not None and st_.state == "ok" and st_.generation == 1


def test_owner_crash_restarts_once_with_a_newer_generation() -> None:
    w = World(6)
    w.start(0, "a")
    w.run_until(10.0)
    w.crash(0)
    w.run_until(40.0)
    where = w.copies("a")
    assert len(where) == 1 and where[0] != 0
    assert w.hosts[where[0]].running["a"] == 2
    launched = _events(w, "launched")
    assert len(launched) == 1
    # lease 10 s after the last renewal + stagger 0 + batch window + launch
    assert launched[0][0] - 10.0 <= 10.0 + 0.5 + 0.5 + 0.1
    assert not w.double


def test_cut_off_owner_fences_before_the_guardians_restart() -> None:
    w = World(6)
    w.start(0, "a")
    w.run_until(10.0)
    w.cut = {0}
    w.run_until(40.0)
    fenced = _events(w, "fenced")
    agreed = _events(w, "agreed")
    assert fenced and agreed and fenced[0][0] < agreed[0][0]
    w.cut = set()
    w.run_until(80.0)
    assert len(w.copies("a")) == 1 and w.copies("a") != [0]
    assert not w.double


def test_frozen_daemon_watchdog_stops_guests_and_wakes_up_stale() -> None:
    w = World(6)
    w.start(0, "a")
    w.run_until(10.0)
    w.freeze(0, True)
    w.run_until(40.0)
    assert 0 not in w.copies("a")  # the watchdog stopped it although the daemon slept
    w.freeze(0, False)
    w.run_until(60.0)
    assert len(w.copies("a")) == 1 and w.copies("a") != [0]
    st_ = w.hosts[0].core.status("", "a", now=w.now)
    assert st_ is not None and st_.state == "fenced"
    assert not w.double


def test_minority_guardians_cannot_restart_a_live_owner() -> None:
    """Two guardians of three cut off with the owner: the remaining one never gets a
    majority, the owner keeps renewing."""
    w = World(6, config=HaConfig(guardians=3))
    vm = w.start(0, "a")
    assert vm.ha is not None
    w.run_until(5.0)
    gs = w.hosts[0].core.owned[("", "a")].vm.ha.guardians  # type: ignore[union-attr]
    index = {h.contact.node_id: h.i for h in w.hosts}
    w.cut = {0, index[gs[0].node_id], index[gs[1].node_id]}
    w.run_until(60.0)
    assert w.copies("a") == [0]
    assert not _events(w, "agreed")


def test_a_silent_guardian_nobody_can_replace_stays_so_one_more_failure_is_survived() -> None:
    """Four hosts: the owner's three guardians are every other host. One of them is
    frozen longer than ``replace_after_s``; with no fourth node to take its place the
    set must not shrink to two (a majority of two is both): after it thaws, a crash of
    another guardian leaves two of three, and the owner keeps its lease."""
    w = World(4, config=HaConfig(guardians=3))
    w.start(0, "a")
    w.run_until(5.0)
    owned = w.hosts[0].core.owned[("", "a")]
    assert owned.vm.ha is not None and len(owned.vm.ha.guardians) == 3
    index = {h.contact.node_id: h.i for h in w.hosts}
    first, second = (index[g.node_id] for g in owned.vm.ha.guardians[:2])
    w.freeze(first, True)
    w.run_until(20.0)  # silent for 15 s > replace_after_s
    assert w.copies("a") == [0]
    w.freeze(first, False)
    w.run_until(30.0)
    assert owned.vm.ha is not None and len(owned.vm.ha.guardians) == 3
    w.crash(second)
    w.run_until(60.0)
    assert w.copies("a") == [0]
    assert not _events(w, "fenced") and not w.double


def test_two_guardians_crashing_1_s_apart_do_not_lose_the_vm() -> None:
    """With the default 5 guardians, two of them crashing before the owner replaced the
    first leave a majority: the owner keeps renewing, replaces both, and nothing
    restarts. With 3 guardians the owner has to fence and the VM is lost (quorum)."""
    for k, kept in ((5, True), (3, False)):
        w = World(9, config=HaConfig(guardians=k))
        w.start(0, "a")
        w.run_until(5.0)
        gs = w.hosts[0].core.owned[("", "a")].vm.ha.guardians  # type: ignore[union-attr]
        index = {h.contact.node_id: h.i for h in w.hosts}
        w.crash(index[gs[0].node_id])
        w.run_until(6.0)
        w.crash(index[gs[1].node_id])
        w.run_until(60.0)
        assert (w.copies("a") == [0]) is kept, k
        assert not w.double
        if kept:
            now = w.hosts[0].core.owned[("", "a")].vm.ha  # type: ignore[union-attr]
            assert now is not None and not now.previous
            assert not {g.node_id for g in now.guardians} & {gs[0].node_id, gs[1].node_id}
            assert not _events(w, "fenced")


def test_a_guardian_replaced_for_silence_is_not_chosen_again() -> None:
    """A crashed guardian whose routing-table successor is dead too: the owner replaces
    it by that dead node, then that one by the next live node, not by the first dead
    one again (two dead nodes taking turns would leave the VM with the live rest)."""
    w = World(9, config=HaConfig(guardians=3), stale_table=True)
    w.start(0, "a")
    key = vm_key("", "a")
    w.run_until(5.0)
    gs = w.hosts[0].core.owned[("", "a")].vm.ha.guardians  # type: ignore[union-attr]
    by_distance = sorted((h for h in w.hosts if h.i != 0), key=lambda h: h.contact.node_id ^ key)
    ids = {g.node_id for g in gs}
    assert {h.contact.node_id for h in by_distance[:3]} == ids
    dead = {by_distance[0].contact.node_id, by_distance[3].contact.node_id}
    w.crash(by_distance[0].i)
    w.crash(by_distance[3].i)
    w.run_until(60.0)
    tag = w.hosts[0].core.owned[("", "a")].vm.ha
    assert tag is not None and not tag.previous
    assert not {g.node_id for g in tag.guardians} & dead
    assert by_distance[4].contact.node_id in {g.node_id for g in tag.guardians}
    assert w.copies("a") == [0] and not w.double


def test_failed_launches_back_off_then_give_up() -> None:
    w = World(6, fail_launches=3)
    w.start(0, "a", HaPolicy(mode="restart", restart_attempts=3, restart_backoff_s=2.0))
    w.run_until(10.0)
    w.crash(0)
    w.run_until(60.0)
    failed = [t for t, _, _ in _events(w, "launch_failed")]
    gave_up = [t for t, _, _ in _events(w, "gave_up")]
    assert len(failed) == 2 and len(gave_up) == 1
    assert failed[1] - failed[0] >= 2.0 and gave_up[0] - failed[1] >= 4.0  # 2 s, then 4 s
    assert w.copies("a") == []
    st_ = w.hosts[_events(w, "gave_up")[0][1]].core.status("", "a", now=w.now)
    assert st_ is not None and st_.state == "failed"
    # after promise_s another round of attempts starts (here: the launches work again)
    w.run_until(200.0)
    assert len(w.copies("a")) == 1


def test_a_dead_hosts_vms_go_out_in_batches_high_priority_first() -> None:
    w = World(8, config=HaConfig(batch_max=32))
    for k in range(40):
        prio = "high" if k % 4 == 0 else "low"
        w.start(0, f"vm{k:02d}", HaPolicy(mode="restart", priority=prio))
    w.run_until(10.0)
    w.crash(0)
    w.run_until(60.0)
    assert all(len(w.copies(f"vm{k:02d}")) == 1 for k in range(40))
    # one launch per (restarter, batch window), not one per VM
    assert len(w.launches) < 40 / 2
    for _restarter, names in w.launches:
        prios = ["high" if int(n[2:]) % 4 == 0 else "low" for n in names]
        assert prios == sorted(prios)  # "high" < "low"
    assert not w.double


faults = st.lists(
    st.tuples(
        st.sampled_from(["crash", "cut", "freeze"]),
        st.integers(0, 6),
        st.floats(5.0, 80.0),
        st.floats(1.0, 40.0),
    ),
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults=faults, seed=st.integers(0, 10_000))
def test_no_vm_ever_runs_twice(faults: list[tuple[str, int, float, float]], seed: int) -> None:
    """Whatever crashes, cuts and freezes happen, at no instant do two hosts run a copy
    of one VM; once faults end (and a majority of hosts lives), every VM runs."""
    w = World(7, seed=seed)
    for k in range(4):
        w.start(k % 3, f"v{k}")
    crashed = 0
    for kind, host, at, length in sorted(faults, key=lambda f: f[2]):
        w.run_until(at)
        if kind == "crash":
            if crashed < 2:
                w.crash(host)
                crashed += 1
        elif kind == "cut":
            w.cut = {host}
            w.run_until(at + length)
            w.cut = set()
        else:
            w.freeze(host, True)
            w.run_until(at + length)
            w.freeze(host, False)
    w.run_until(w.now + 120.0)
    assert not w.double, w.double[:3]
    for k in range(4):
        assert len(w.copies(f"v{k}")) <= 1


def test_policy_values_and_errors() -> None:
    p = parse_policy({"ha": "restart", "ha_priority": "high", "ha_restart_attempts": "5"})
    assert p.enabled and p.priority == "high" and p.restart_attempts == 5
    assert parse_policy({}).mode == "off"
    assert p.backoff(1) == 5.0 and p.backoff(3) == 20.0
    with pytest.raises(HaPolicyError, match="ha: expected one of off, restart, got 'yes'"):
        parse_policy({"ha": "yes"})
    with pytest.raises(HaPolicyError, match="ha_fence"):
        parse_policy({"ha_fence": "kill"})
    with pytest.raises(HaPolicyError, match="ha_restart_attempts"):
        parse_policy({"ha_restart_attempts": "many"})
    with pytest.raises(HaPolicyError, match="ha_restart_backoff_s"):
        parse_policy({"ha_restart_backoff_s": -1})


def test_ha_messages_cross_the_wire() -> None:
    from dvms.ha import register_ha_messages
    from dvms.ha.messages import Renew, RenewAck, StaleVm
    from dvms.overlay.messages import Contact, register_overlay_messages
    from dvms.partition.messages import LaunchVm, register_partition_messages
    from dvms.wire.envelope import MessageRegistry, WireCodec, WireConfig

    registry = register_ha_messages(
        register_partition_messages(register_overlay_messages(MessageRegistry()))
    )
    codec = WireCodec(bytes(range(32)), registry, WireConfig())
    g = Contact(5, "h1", 7400)
    tag = replace(tag_for(HaPolicy(mode="restart"), 3), guardians=(g,))
    vm = LaunchVm("a", "ns", 1, 512, ha=tag)
    for msg in (Renew(7, g, (vm,)), RenewAck(7, (StaleVm("ns", "a", 4, False),))):
        decoded = codec.decode(codec.encode(msg, sender=1, rid=2, now=0.0), now=0.0)
        assert decoded is not None and decoded.msg == msg


def test_a_voter_holding_a_promise_refuses_a_higher_generation_from_another_proposer() -> None:
    """Guardian A won the votes for generation 2 and is launching it; guardian B, refused
    earlier (``newest`` = 2), proposes generation 3. A voter that promised 2 to A must
    refuse 3 until A's promise ends: voting yes let B gather a majority too, and two
    generations of the VM ran at once on loopback daemons (``ha5``: node2/g3 beside
    node5/g2). A itself may still ask again."""
    from dvms.ha.core import HaCore, _Held
    from dvms.ha.messages import Propose, Vote
    from dvms.overlay.messages import Contact
    from dvms.partition.messages import LaunchVm

    me, a, b = (Contact(i, "127.0.0.1", 7000 + i) for i in (1, 2, 3))
    core = HaCore(me, lambda key, n: [], HaConfig(guardians=3), random.Random(0))
    tag = replace(tag_for(parse_policy({"ha": "restart"})), guardians=(me, a, b))
    vm = LaunchVm("v", "", 1, 256, ha=tag)
    core.held[("", "v")] = _Held(vm, owner=Contact(9, "127.0.0.1", 7009), lease_until=1.0)
    core.held[("", "v")].promised, core.held[("", "v")].promised_to = 2, a.node_id
    core.held[("", "v")].promised_until = 60.0
    out = core.on_message(b.addr, b.node_id, 7, Propose("", "v", 3, 1), now=10.0)
    votes = [e.msg for e in out if isinstance(getattr(e, "msg", None), Vote)]
    assert votes == [Vote("", "v", 3, False, 2)], out
    out = core.on_message(a.addr, a.node_id, 8, Propose("", "v", 2, 1), now=11.0)
    votes = [e.msg for e in out if isinstance(getattr(e, "msg", None), Vote)]
    assert [v.yes for v in votes] == [True], out


def _vm_guarded_away_from(w: World, owner: int, avoid: set[int], k: int) -> tuple[str, list[int]]:
    """A VM name whose ``k`` + 2 closest hosts (the owner left out) avoid ``avoid``, and
    those hosts by distance to its key."""
    for n in range(1000):
        name = f"v{n}"
        key = vm_key("", name)
        order = sorted((h for h in w.hosts if h.i != owner), key=lambda h: h.contact.node_id ^ key)
        near = [h.i for h in order[: k + 2]]
        if not set(near) & avoid:
            return name, near
    raise AssertionError("no such name")


def test_guardians_dropped_by_two_replacements_cannot_restart_a_live_vm() -> None:
    """Three guardians A, B, C. A is cut off and replaced by D (set D, B, C); then A and
    B are cut off together (they reach each other) and B is replaced by E (D, E, C). A
    still holds the first set's record and B the second's: A and B are a majority of
    A's set {A, B, C}, and both their leases ran out. They must not restart the VM
    while its owner renews with D, E, C: a record carries its set's epoch, and a voter
    holding a newer epoch of the same generation refuses a proposal from an older one."""
    w = World(8, seed=3, config=HaConfig(guardians=3))
    owner = 1
    name, near = _vm_guarded_away_from(w, owner, {0}, 3)
    a, b, c, d, e = near
    w.start(owner, name)
    w.run_until(10.0)
    tag = w.hosts[owner].core.owned[("", name)].vm.ha
    assert tag is not None and {g.node_id for g in tag.guardians} == {
        w.hosts[i].contact.node_id for i in (a, b, c)
    }
    w.cut = {a}
    w.run_until(30.0)
    tag = w.hosts[owner].core.owned[("", name)].vm.ha
    assert tag is not None and not tag.previous
    assert {g.node_id for g in tag.guardians} == {w.hosts[i].contact.node_id for i in (d, b, c)}
    w.cut = {a, b}
    w.run_until(90.0)
    tag = w.hosts[owner].core.owned[("", name)].vm.ha
    assert tag is not None
    assert {g.node_id for g in tag.guardians} == {w.hosts[i].contact.node_id for i in (d, e, c)}
    assert w.copies(name) == [owner]
    assert not _events(w, "agreed") and not w.double


set_faults = st.lists(
    st.tuples(
        st.sampled_from(["crash", "cut", "freeze"]),
        st.sets(st.integers(0, 7), min_size=1, max_size=2),
        st.floats(5.0, 120.0),
        st.floats(6.0, 40.0),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults=set_faults, seed=st.integers(0, 10_000), guardians=st.sampled_from([3, 5]))
def test_no_vm_ever_runs_twice_while_guardians_are_replaced(
    faults: list[tuple[str, set[int], float, float]], seed: int, guardians: int
) -> None:
    """Cuts of one or two hosts long enough for their guardians to be replaced, one after
    another (a host dropped from a set stays cut off while the next is replaced), with
    routing tables that still list crashed hosts: no instant shows two copies."""
    w = World(8, seed=seed, config=HaConfig(guardians=guardians), stale_table=seed % 2 == 0)
    for k in range(4):
        w.start(k % 3, f"v{k}")
    crashed = 0
    for kind, hosts, at, length in sorted(faults, key=lambda f: f[2]):
        w.run_until(max(w.now, at))
        if kind == "crash":
            for host in sorted(hosts):
                if crashed < 2:
                    w.crash(host)
                    crashed += 1
        elif kind == "cut":
            w.cut |= hosts  # successive cuts pile up until the next freeze heals them
            w.run_until(w.now + length)
        else:
            host = min(hosts)
            w.freeze(host, True)
            w.run_until(w.now + length)
            w.freeze(host, False)
            w.cut = set()
    w.cut = set()
    w.run_until(w.now + 120.0)
    assert not w.double, w.double[:3]
    for k in range(4):
        assert len(w.copies(f"v{k}")) <= 1


def test_renewals_of_1000_ha_vms_on_one_host_are_paged_under_the_datagram_limit() -> None:
    """One host, 1,000 HA VMs, 5 guardians: each guardian gets the round in pages that
    each fit a 64 KiB datagram (one renewal of all 1,000 would not), every VM in exactly
    one page, and the acknowledgements of all pages renew every VM's lease."""
    from dvms.effects import Send
    from dvms.ha import HaCore, register_ha_messages
    from dvms.ha.messages import Renew
    from dvms.overlay.messages import Contact, register_overlay_messages
    from dvms.partition.messages import LaunchVm, register_partition_messages
    from dvms.wire.envelope import MessageRegistry, WireCodec, WireConfig

    registry = register_ha_messages(
        register_partition_messages(register_overlay_messages(MessageRegistry()))
    )
    codec = WireCodec(bytes(range(32)), registry, WireConfig(max_datagram=65507))
    me = Contact(1, "10.0.0.1", 7400)
    guardians = [Contact(10 + i, f"10.0.0.{2 + i}", 7400) for i in range(5)]
    owner = HaCore(me, lambda key, n: guardians[:n], HaConfig(), random.Random(0))
    host = HaCore(guardians[0], lambda key, n: [], HaConfig(), random.Random(1))
    for i in range(1000):
        vm = LaunchVm(f"web-frontend-{i:04d}", "production", 2, 4096, ("net-a", "net-b"))
        owner.adopt(replace(vm, ha=tag_for(HaPolicy(mode="restart"))), now=0.0)
    owner.on_timer(now=0.0)  # the first round; the one checked is sent at 2 s
    out = owner.on_timer(now=2.0)
    sends = [e for e in out if isinstance(e, Send) and isinstance(e.msg, Renew)]
    by_dst: dict[object, list[Renew]] = {}
    for s in sends:
        assert len(codec.encode(s.msg, sender=me.node_id, rid=s.rid, now=2.0)) <= 65507
        by_dst.setdefault(s.dst, []).append(s.msg)
    assert set(by_dst) == {g.addr for g in guardians}
    for pages in by_dst.values():
        assert len(pages) > 1 and [p.page for p in pages] == list(range(len(pages)))
        names = [vm.name for p in pages for vm in p.vms]
        assert sorted(names) == sorted(f"web-frontend-{i:04d}" for i in range(1000))
    whole = Renew(2, me, tuple(vm for p in by_dst[guardians[0].addr] for vm in p.vms))
    with pytest.raises(ValueError):
        codec.encode(whole, sender=me.node_id, rid=1, now=2.0)

    def ack(last: bool) -> None:
        # a guardian's core makes the real answer to each page
        for g in guardians:
            pages = [s for s in sends if s.dst == g.addr]
            for s in pages[-1:] if last else pages[:-1]:
                (answer,) = host.on_message(me.addr, me.node_id, s.rid, s.msg, now=2.1)
                owner.on_message(g.addr, g.node_id, 0, answer.msg, now=2.1)

    lease = HaConfig().lease_s
    ack(last=False)
    last_page = {vm.name for vm in by_dst[guardians[0].addr][-1].vms}
    for (_ns, name), o in owner.owned.items():
        assert o.lease_until == (lease if name in last_page else 2.0 + lease), name
    ack(last=True)
    assert {o.lease_until for o in owner.owned.values()} == {2.0 + lease}
