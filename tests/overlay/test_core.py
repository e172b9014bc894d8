"""The Kademlia core driven by the discrete-event engine: joins, exact lookups, records,
failures. Small populations on a constant-latency network, seeded."""

import random
from dataclasses import replace

import pytest

from dvms.effects import Send
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import LookupDone, OverlayCore, PutDone
from dvms.overlay.messages import Contact, Nodes, Ping, Pong, Store, Stored
from dvms.overlay.records import Identity, RecordError, Validator, ValidatorRegistry
from dvms.sim.overlay import OverlayScenario, OverlaySim

CFG = KademliaConfig(k=8)


def cluster(nodes=60, seed=3, **kw) -> OverlaySim:
    scn = OverlayScenario(
        nodes=nodes, seed=seed, latency="const:20", duration_s=60.0, lookups=0, kademlia=CFG, **kw
    )
    sim = OverlaySim(scn)
    sim.schedule()
    sim.engine.run_until(40.0)
    return sim


def run_lookup(sim: OverlaySim, node, target: int):
    done = []
    sim.engine.on_emit = lambda n, ev, now: done.append(ev) if n is node else None
    lid, effects = node.core.lookup(target, now=sim.engine.now)
    sim.engine.apply(node, effects)
    sim.engine.run_until(sim.engine.now + 70.0)
    (ev,) = [e for e in done if isinstance(e, LookupDone) and e.result.lookup_id == lid]
    return ev.result


def true_closest(sim: OverlaySim, target: int, k: int) -> list[int]:
    live = [n.node_id for n in sim.engine.nodes if n.alive]
    return sorted(live, key=lambda i: i ^ target)[:k]


def test_every_node_joins_and_lookups_are_exact():
    sim = cluster()
    assert len(sim.joined_at) == 60
    rng = random.Random(1)
    for _ in range(20):
        node = rng.choice(sim.engine.nodes)
        target = rng.getrandbits(160)
        res = run_lookup(sim, node, target)
        assert [c.node_id for c in res.contacts] == true_closest(sim, target, CFG.k)
        assert not res.timed_out and res.hops >= 1


def test_lookups_stay_exact_when_a_fifth_of_the_nodes_crash():
    sim = cluster(nodes=80)
    rng = random.Random(2)
    for node in rng.sample(sim.engine.nodes[1:], 16):
        sim.engine.crash(node)
    live = [n for n in sim.engine.nodes if n.alive]
    for _ in range(10):
        node = rng.choice(live)
        target = rng.getrandbits(160)
        res = run_lookup(sim, node, target)
        assert [c.node_id for c in res.contacts] == true_closest(sim, target, CFG.k)
    assert sum(n.core.stats["rpc_failed"] for n in live) > 0


def test_lookups_stay_exact_under_loss_thanks_to_retransmission():
    sim = cluster(nodes=60, loss=0.1)
    rng = random.Random(3)
    exact = 0
    for _ in range(10):
        node = rng.choice(sim.engine.nodes)
        target = rng.getrandbits(160)
        res = run_lookup(sim, node, target)
        exact += [c.node_id for c in res.contacts] == true_closest(sim, target, CFG.k)
    assert exact >= 9
    assert sum(n.core.stats["retransmit"] for n in sim.engine.nodes) > 0


def _validators() -> ValidatorRegistry:
    def check(rec):
        if not rec.value.startswith(b"host="):
            raise RecordError("value must be host=...")

    return ValidatorRegistry([Validator("vm/", check)])


def test_put_then_get_from_another_node_and_newer_seq_wins():
    sim = cluster(nodes=40)
    for n in sim.engine.nodes:
        n.core.store.validators = _validators()
    a, b = sim.engine.nodes[3], sim.engine.nodes[17]
    ident = Identity.from_seed(b"writer")
    events = []
    sim.engine.on_emit = lambda n, ev, now: events.append((n, ev))
    for seq, value in ((1, b"host=node1"), (2, b"host=node2")):
        rec = ident.sign_record("vm/ns/web1", value, seq=seq, ttl_s=3600.0)
        sim.engine.apply(a, a.core.put(rec, now=sim.engine.now))
        sim.engine.run_until(sim.engine.now + 30.0)
    puts = [ev for n, ev in events if isinstance(ev, PutDone)]
    assert [p.stored for p in puts] == [CFG.k, CFG.k]
    _lid, eff = b.core.get("vm/ns/web1", now=sim.engine.now)
    sim.engine.apply(b, eff)
    sim.engine.run_until(sim.engine.now + 30.0)
    got = [ev for n, ev in events if n is b and isinstance(ev, LookupDone)]
    assert got[-1].record is not None and got[-1].record.value == b"host=node2"


def test_a_validator_with_fewer_replicas_stores_on_the_closest_and_gets_find_it():
    sim = cluster(nodes=40)
    for n in sim.engine.nodes:
        n.core.store.validators = ValidatorRegistry(
            [Validator("vm/", replicas=3), Validator("all/")]
        )
    a, b = sim.engine.nodes[3], sim.engine.nodes[17]
    events = []
    sim.engine.on_emit = lambda n, ev, now: events.append((n, ev))
    writer = Identity.from_seed(b"w")

    def sent() -> int:
        """Datagrams the whole cluster sent so far, Vivaldi's probes left out: their
        number depends on the probe schedule, not on the put."""
        counts = sim.engine.messages
        return sum(counts.values()) - counts["Ping"] - counts["Pong"]

    def put(name: str) -> int:
        """Datagrams the whole cluster sent for one put of ``name``."""
        before = sent()
        rec = writer.sign_record(name, b"h", seq=1, ttl_s=3600.0)
        sim.engine.apply(a, a.core.put(rec, now=sim.engine.now))
        sim.engine.run_until(sim.engine.now + 30.0)
        return sent() - before

    narrow, wide = put("vm/ns/db1"), put("all/x")
    assert [ev.stored for n, ev in events if isinstance(ev, PutDone)] == [3, CFG.k]
    assert narrow < wide, (narrow, wide)
    key = int.from_bytes(__import__("hashlib").sha1(b"vm/ns/db1").digest())
    holders = {n.node_id for n in sim.engine.nodes if n.core.store.get(key, sim.engine.now)}
    assert holders == set(true_closest(sim, key, 3))
    _lid, eff = b.core.get("vm/ns/db1", now=sim.engine.now)
    sim.engine.apply(b, eff)
    sim.engine.run_until(sim.engine.now + 30.0)
    got = [ev for n, ev in events if n is b and isinstance(ev, LookupDone)]
    assert got[-1].record is not None and got[-1].record.name == "vm/ns/db1"


def test_invalid_records_are_refused_by_replicas_and_writers():
    core = OverlayCore(Contact(1, "a", 1), CFG, random.Random(0), validators=_validators())
    ident = Identity.from_seed(b"w")
    good = ident.sign_record("vm/x", b"host=h", seq=1, ttl_s=10.0)
    forged = replace(good, value=b"host=evil")
    with pytest.raises(RecordError, match="bad signature"):
        core.put(forged, now=0.0)
    with pytest.raises(RecordError, match="no validator"):
        core.put(ident.sign_record("other/x", b"v", seq=1, ttl_s=10.0), now=0.0)
    (reply,) = core.on_message(("b", 2), 2, 77, Store(forged), now=0.0)
    assert reply == Send(("b", 2), 77, Stored(False, ()))
    (reply,) = core.on_message(("b", 2), 2, 78, Store(good), now=0.0)
    assert reply.msg.ok is True
    assert core.store.get(int.from_bytes(__import__("hashlib").sha1(b"vm/x").digest()), 5.0)
    assert core.store.expire(11.0) == 1


def test_response_from_the_wrong_address_or_unknown_rid_is_ignored():
    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0))
    core.start([("seed", 9)], now=0.0)
    # The seed ping went out with some rid; a forged Pong from elsewhere must not match it.
    (rid,) = core.requests.ids()
    assert core.on_message(("evil", 6), 5, rid, Pong(()), now=0.1) == []
    assert core.on_message(("seed", 9), 5, rid + 1, Pong(()), now=0.1) == []
    assert core.stats["unexpected_response"] == 2
    assert not core.joined
    out = core.on_message(("seed", 9), 5, rid, Pong(()), now=0.2)
    assert any(isinstance(e, Send) and type(e.msg).__name__ == "FindNode" for e in out)
    assert 5 in core.table


def test_requests_are_answered_and_teach_the_table():
    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0))
    (reply,) = core.on_message(("p", 2), 42, 5, Ping(), now=1.0)
    assert isinstance(reply.msg, Pong) and reply.rid == 5 and reply.dst == ("p", 2)
    assert 42 in core.table
    from dvms.overlay.messages import FindNode

    (reply,) = core.on_message(("q", 3), 43, 6, FindNode(40), now=1.0)
    assert isinstance(reply.msg, Nodes)
    assert [c.node_id for c in reply.msg.contacts] == [42]  # never the requester itself


def test_a_superseded_coordinate_leaves_the_memo():
    """A node's coordinate moves with its RTT samples: the decode memo drops the one it
    replaces, so it holds about one coordinate per node, not every one a node had."""
    from dvms.overlay.core import _COORD_CACHE
    from dvms.vivaldi import Coordinate, VivaldiClient, VivaldiConfig

    viv = VivaldiConfig.serf()
    client = VivaldiClient(viv, random.Random(1))
    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0), vivaldi=client)
    before = core._coord_wire
    core.start([("seed", 9)], now=0.0)
    (rid,) = core.requests.ids()
    peer = Coordinate((0.02,) + (0.0,) * (viv.dimensionality - 1), 0.5, 0.0, viv.height_min)
    core.on_message(("seed", 9), 5, rid, Pong(tuple(peer.to_wire())), now=0.05)
    assert core._coord_wire != before
    assert core._coord_wire in _COORD_CACHE and before not in _COORD_CACHE


def test_every_rpc_purpose_has_an_entry_in_the_continuation_table():
    from dvms.overlay.core import Purpose

    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0))
    assert set(core._continuations) == set(Purpose)


def test_a_join_lookup_nobody_answered_is_retried_not_taken_for_joined():
    """The seed answers the ping, then every attempt of the join lookup's FindNode is
    lost: the node must not count itself joined (nobody knows it yet), and joins again."""
    from dvms.overlay.core import Joined
    from dvms.overlay.messages import FindNode

    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0))
    core.start([("seed", 9)], now=0.0)
    (rid,) = core.requests.ids()
    out = core.on_message(("seed", 9), 5, rid, Pong(()), now=0.1)
    assert [type(e.msg) for e in out if isinstance(e, Send)] == [FindNode]
    from dvms.overlay.core import Purpose

    emitted, now = [], 0.1
    while now < 0.1 + CFG.lookup_timeout_s and not core.stats["join_retry"]:
        now = core.next_deadline()  # and every datagram it sends is lost
        emitted += [e.event for e in core.on_timer(now=now) if not isinstance(e, Send)]
    assert core.stats["join_retry"] == 1
    assert not core.joined and not any(isinstance(e, Joined) for e in emitted)
    retry_at = now + CFG.join_retry_s
    while now < retry_at:
        now = core.next_deadline()
        core.on_timer(now=now)
    pending = [core.requests.get(rid) for rid in core.requests.ids()]
    seed_pings = [r for r in pending if r is not None and r.then.purpose == Purpose.SEED]
    assert seed_pings and seed_pings[0].addr == ("seed", 9)  # it joins again


def test_long_run_with_refresh_keeps_lookups_exact_and_refreshes_only_silent_buckets():
    """Nine refresh intervals after the joins, under loss: every lookup stays exact, and
    a node refreshes only a small share of its buckets per interval (traffic keeps the
    others fresh; the rule before c619da3 refreshed nearly all of them)."""
    kad = replace(KademliaConfig(), refresh_interval_s=60.0)
    scn = OverlayScenario(
        nodes=150,
        seed=5,
        latency="const:20",
        loss=0.05,
        duration_s=600.0,
        lookups=60,
        kademlia=kad,
    )
    sim = OverlaySim(scn)
    sim.schedule()
    settled = scn.join_window_s + 60.0
    sim.engine.run_until(settled)
    cores = [n.core for n in sim.engine.nodes]
    assert all(c.joined for c in cores)
    before = sum(c.stats["lookup_refresh"] for c in cores)
    sim.engine.run_until(scn.duration_s + kad.lookup_timeout_s)
    assert len(sim.results) == scn.lookups and all(exact for exact, _, _ in sim.results)
    later = sum(c.stats["lookup_refresh"] for c in cores) - before
    bucket_intervals = sum(len(c.table.buckets) for c in cores) * (600.0 - settled) / 60.0
    assert 0 < later < 0.25 * bucket_intervals
