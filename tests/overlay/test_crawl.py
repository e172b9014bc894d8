"""The crawl (every node of the overlay, for cluster-wide views) on the discrete-event
engine: complete from any node although no routing table holds everyone (k = 4), nodes
that crashed named as failed, bounded parallelism, the deadline; and the table reading
rule on its own."""

import random

from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import CrawlDone
from dvms.overlay.crawl import Crawl, id_at_depth
from dvms.overlay.messages import Contact
from dvms.sim.overlay import OverlayScenario, OverlaySim

CFG = KademliaConfig(k=4, crawl_parallelism=8)


def cluster(nodes: int, seed: int = 5, cfg: KademliaConfig = CFG) -> OverlaySim:
    scn = OverlayScenario(
        nodes=nodes, seed=seed, latency="const:20", duration_s=60.0, lookups=0, kademlia=cfg
    )
    sim = OverlaySim(scn)
    sim.schedule()
    sim.engine.run_until(40.0)
    return sim


def run_crawl(sim: OverlaySim, node, *, limit: float = 100.0):
    done = []
    peak = [0]

    def on_emit(n, ev, now):
        if n is node and isinstance(ev, CrawlDone):
            done.append(ev.result)

    sim.engine.on_emit = on_emit
    cid, effects = node.core.crawl(now=sim.engine.now)
    sim.engine.apply(node, effects)
    end = sim.engine.now + limit
    while not done and sim.engine.now < end:
        sim.engine.run_until(sim.engine.now + 0.01)
        cr = node.core._crawls.get(cid)
        if cr is not None:
            peak[0] = max(peak[0], cr.in_flight)
    (res,) = done
    return res, peak[0]


def test_a_crawl_finds_every_node_though_no_table_holds_them_all():
    sim = cluster(300)
    nodes = sim.engine.nodes
    assert max(len(n.core.table) for n in nodes) < len(nodes) // 3
    for node in random.Random(1).sample(nodes, 3):
        res, peak = run_crawl(sim, node)
        assert {c.node_id for c in res.answered} == {n.node_id for n in nodes}
        assert res.answered[0] == node.core.contact
        assert not res.failed and not res.unfinished and not res.timed_out
        assert 0 < peak <= CFG.crawl_parallelism
        # about log2(N / k) + 1 requests per node, not one per bucket of the id space
        assert res.rpcs < 300 * 12
        assert len(res.coords) == len(nodes) - 1


def test_crashed_nodes_still_in_tables_are_named_failed():
    sim = cluster(120)
    rng = random.Random(2)
    dead = rng.sample(sim.engine.nodes[1:], 10)
    for n in dead:
        sim.engine.crash(n)
    live = [n for n in sim.engine.nodes if n.alive]
    res, _ = run_crawl(sim, live[0])
    assert {c.node_id for c in res.answered} == {n.node_id for n in live}
    # every failed node is a dead one; dead nodes some table still names are among them
    assert {c.node_id for c in res.failed} <= {n.node_id for n in dead}
    assert res.failed


def test_the_deadline_ends_a_crawl_and_names_what_was_not_read():
    sim = cluster(200, cfg=KademliaConfig(k=4, crawl_parallelism=1, crawl_timeout_s=0.5))
    res, peak = run_crawl(sim, sim.engine.nodes[0])
    assert res.timed_out and peak == 1
    assert res.unfinished
    assert len(res.answered) + len(res.unfinished) + len(res.failed) <= 200


def test_id_at_depth_shares_exactly_that_many_leading_bits():
    rng = random.Random(3)
    for _ in range(200):
        node = rng.getrandbits(160)
        depth = rng.randrange(160)
        target = id_at_depth(node, depth, 160, rng)
        assert 160 - (node ^ target).bit_length() == depth


def _contact(i: int) -> Contact:
    return Contact(i, "10.0.0.1", 1000 + (i % 60000))


def test_a_node_is_read_until_an_answer_holds_fewer_than_k_deep_contacts():
    own = _contact(0)
    peer = _contact(0b1000 << 156)  # differs from us in the first bit
    cr = Crawl(
        1, own=own, seeds=[peer], k=2, bits=160, parallelism=4,
        rng=random.Random(4), started=0.0, deadline=10.0,
    )  # fmt: skip
    ((c, target),) = cr.next_queries()
    assert c == peer and 160 - (target ^ peer.node_id).bit_length() == 0
    # two contacts at depth >= 0: maybe more there, ask the next bucket
    cr.answered(peer.node_id, (_contact(1), _contact(2)), ())
    queries = cr.next_queries()
    assert (peer, 1) in [(c, 160 - (t ^ peer.node_id).bit_length()) for c, t in queries]
    for c, _ in queries:
        if c != peer:
            cr.answered(c.node_id, (), ())
    # one contact at depth >= 1 (the other is shallower): the table is read
    cr.answered(peer.node_id, (_contact(0b1100 << 156), _contact(3)), ())
    for c, _ in cr.next_queries():
        cr.answered(c.node_id, (), ())
    assert cr.finished()
    res = cr.result(1.0)
    assert len(res.answered) == 6 and not res.failed  # us, the peer and 4 it named


def test_a_node_that_answered_before_is_asked_again_once_then_failed():
    cr = Crawl(
        1, own=_contact(0), seeds=[_contact(1 << 159)], k=1, bits=160, parallelism=4,
        rng=random.Random(5), started=0.0, deadline=10.0,
    )  # fmt: skip
    ((c, _),) = cr.next_queries()
    cr.answered(c.node_id, (_contact(3 << 158),), ())
    asked = cr.next_queries()
    for d, _ in asked:
        cr.failed(d.node_id)
    # the one that had answered is asked once more; the other failed for good
    again = cr.next_queries()
    assert [d for d, _ in again] == [c]
    cr.failed(c.node_id)
    assert cr.finished()
    res = cr.result(2.0)
    assert [x.node_id for x in res.failed] == [3 << 158]
    assert c in res.answered
