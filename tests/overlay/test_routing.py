"""Routing-table invariants: bucket ranges, split rule, LRU order, staleness, diversity."""

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact
from dvms.overlay.routing import RoutingTable

BITS = 160
CFG = KademliaConfig(k=4, replacement_cache=3)


def contact(node_id: int, host: str | None = None) -> Contact:
    return Contact(node_id, host or f"h{node_id % 10_000}", 7000)


def check_invariants(t: RoutingTable) -> None:
    assert 1 <= len(t.buckets) <= BITS
    seen = set()
    last = len(t.buckets) - 1
    for i, b in enumerate(t.buckets):
        assert len(b.entries) <= t.config.k
        assert len(b.replacements) <= t.config.replacement_cache
        for node_id, e in b.entries.items():
            assert e.contact.node_id == node_id
            cpl = t.cpl(node_id)
            assert cpl == i if i < last else cpl >= i, (i, cpl)
            assert node_id != t.own_id
            seen.add(node_id)
        for node_id in b.replacements:
            assert node_id not in b.entries
    assert seen == set(t.index)
    assert sorted(e.contact.node_id for e in t._entries) == sorted(t.index)
    assert all(t._entries[e.slot] is e for e in t.index.values())
    # Only the last bucket may be non-full when a deeper one exists? No: but every bucket
    # before the last was created by splitting, so the table never has two "last" buckets.
    assert all(t.bucket_index(e) == min(t.cpl(e), last) for e in t.index)


ops = st.lists(
    st.tuples(st.sampled_from(["seen", "fail", "remove"]), st.integers(0, 2**BITS - 1)),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(own=st.integers(0, 2**BITS - 1), ops=ops, seed=st.integers(0, 1000))
def test_invariants_under_random_inserts_and_failures(own, ops, seed):
    t = RoutingTable(own, CFG)
    rng = random.Random(seed)
    known: list[int] = []
    now = 0.0
    for op, node_id in ops:
        now += 1.0
        # Half the time act on an id near our own, so deep buckets and splits get exercised.
        if rng.random() < 0.5:
            node_id = own ^ rng.getrandbits(rng.randrange(1, 24))
        if node_id == own:
            continue
        if op == "seen":
            t.seen(contact(node_id), now)
            known.append(node_id)
        elif op == "fail" and known:
            t.failed(rng.choice(known), now)
        elif known:
            t.remove(rng.choice(known))
        check_invariants(t)


@settings(max_examples=60, deadline=None)
@given(
    own=st.integers(0, 2**BITS - 1),
    ids=st.lists(st.integers(0, 2**BITS - 1), max_size=200, unique=True),
    target=st.integers(0, 2**BITS - 1),
    n=st.integers(1, 30),
)
def test_closest_matches_brute_force(own, ids, target, n):
    t = RoutingTable(own, KademliaConfig(k=8))
    for i, node_id in enumerate(ids):
        t.seen(contact(node_id), float(i))
    expected = sorted(t.index, key=lambda i: i ^ target)[:n]
    assert [c.node_id for c in t.closest(target, n)] == expected


def test_only_the_bucket_holding_our_id_splits():
    own = 0
    t = RoutingTable(own, CFG)
    # Five far contacts (cpl 0): the first bucket splits once, then bucket 0 is full and
    # never splits again, however many far contacts arrive.
    for i in range(1, 40):
        t.seen(contact((1 << 159) | i), float(i))
    assert len(t.buckets[0].entries) == 4
    assert len(t.buckets) == 2
    assert len(t.buckets[0].replacements) == 3
    # Close contacts unfold the table one bucket at a time.
    for bit in range(10):
        t.seen(contact(1 << bit), 100.0 + bit)
    check_invariants(t)
    assert len(t.buckets) > 2


def test_crafted_adjacent_ids_cannot_bloat_the_table():
    """The PyPI package splits by the members' shared prefix: k+1 adjacent ids gave it
    160 buckets. Here they all land in bucket 0 (far from us) and nothing splits."""
    own = 0
    t = RoutingTable(own, replace(CFG, k=2))
    base = 0b1011 << 156
    for i in range(3):
        t.seen(contact(base | i), float(i))
    assert len(t.buckets) == 2


def test_lru_order_and_ping_before_evict():
    cfg = replace(CFG, evict_ping_after_s=10.0)
    t = RoutingTable(0, cfg)
    far = [(1 << 159) | i for i in range(1, 6)]
    for i, node_id in enumerate(far[:4]):
        t.seen(contact(node_id), float(i))
    # Touch the first one again: it moves to the tail.
    t.seen(contact(far[0]), 5.0)
    assert list(t.buckets[0].entries) == [far[1], far[2], far[3], far[0]]
    # Bucket full, head heard from recently: the newcomer waits, nobody is pinged.
    assert t.seen(contact(far[4]), 6.0) is None
    assert far[4] in t.buckets[0].replacements
    # Later, the head has been silent long enough: the caller is asked to ping it.
    ping = t.seen(contact(far[4]), 20.0)
    assert ping is not None and ping.node_id == far[1]
    # Only one outstanding eviction ping per bucket.
    assert t.seen(contact(far[4]), 21.0) is None
    # The head answers: it stays, moves to the tail.
    t.seen(contact(far[1]), 22.0)
    assert list(t.buckets[0].entries)[-1] == far[1]
    assert far[4] not in t.index


def test_contact_dropped_only_after_several_consecutive_failures():
    t = RoutingTable(0, CFG)  # stale after 3, drop after 5
    far = [(1 << 159) | i for i in range(1, 7)]
    for i, node_id in enumerate(far[:4]):
        t.seen(contact(node_id), float(i))
    victim = far[0]
    t.failed(victim, 10.0)
    t.failed(victim, 11.0)
    t.seen(contact(victim), 12.0)  # an answer resets the count
    for i in range(4):
        t.failed(victim, 13.0 + i)
    assert victim in t.index  # 4 failures, no replacement: still kept
    t.failed(victim, 20.0)
    assert victim not in t.index  # 5th: dropped even without a replacement


def test_stale_contact_replaced_by_newest_replacement():
    t = RoutingTable(0, replace(CFG, evict_ping_after_s=1e9))
    far = [(1 << 159) | i for i in range(1, 8)]
    for i, node_id in enumerate(far[:4]):
        t.seen(contact(node_id), float(i))
    t.seen(contact(far[4]), 5.0)
    t.seen(contact(far[5]), 6.0)
    for i in range(3):
        t.failed(far[2], 7.0 + i)
    assert far[2] not in t.index
    assert far[5] in t.index  # the most recently seen replacement is promoted
    assert far[4] in t.buckets[0].replacements
    # A newcomer arriving while a stale contact exists replaces it at once.
    for i in range(3):
        t.failed(far[1], 20.0 + i)
    assert far[1] not in t.index  # replaced by far[4]
    assert far[4] in t.index


def test_ip_diversity_limits_public_addresses_only():
    t = RoutingTable(0, KademliaConfig(k=20))
    far = [(1 << 159) | i for i in range(1, 10)]
    for i, node_id in enumerate(far):
        t.seen(contact(node_id, f"8.8.8.{i + 1}"), float(i))
    assert sum(1 for e in t.index.values() if e.contact.host.startswith("8.8.8.")) == 2
    assert t.rejected_by_group == 7
    t2 = RoutingTable(0, KademliaConfig(k=20))
    for i, node_id in enumerate(far):
        t2.seen(contact(node_id, f"10.0.0.{i + 1}"), float(i))
        t2.seen(contact(node_id + 100, "127.0.0.1"), float(i))
    assert len(t2) == 18  # private and loopback addresses are exempt


@given(own=st.integers(0, 2**BITS - 1), seed=st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_random_id_in_bucket_lands_in_that_bucket(own, seed):
    t = RoutingTable(own, CFG)
    rng = random.Random(seed)
    for i in range(60):
        t.seen(contact(own ^ rng.getrandbits(rng.randrange(1, 160))), float(i))
    for index in range(len(t.buckets)):
        target = t.random_id_in_bucket(index, rng)
        if target != own:
            assert t.bucket_index(target) == index


def test_replies_leave_out_contacts_whose_last_rpc_failed():
    t = RoutingTable(0, KademliaConfig(k=20))
    ids = [(1 << 159) | i for i in range(1, 9)]
    for i, node_id in enumerate(ids):
        t.seen(contact(node_id), float(i))
    t.failed(ids[0], 10.0)
    assert ids[0] in [c.node_id for c in t.closest(ids[0], 8)]
    healthy = [c.node_id for c in t.closest(ids[0], 8, healthy=True)]
    assert ids[0] not in healthy and len(healthy) == 7


@settings(max_examples=80, deadline=None)
@given(
    own=st.integers(0, 2**BITS - 1),
    spans=st.lists(st.integers(1, BITS), min_size=1, max_size=120),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
)
def test_closest_over_deep_tables_with_exclude_and_failures(own, spans, seed, n):
    """closest() visits bucket groups instead of sorting everything: check it against
    brute force on tables with many buckets (ids near our own), targets near and far,
    an excluded asker and contacts whose last RPC failed (left out with healthy=True)."""
    rng = random.Random(seed)
    t = RoutingTable(own, KademliaConfig(k=4))
    for i, span in enumerate(spans):
        node_id = own ^ rng.getrandbits(span) or 1
        t.seen(contact(node_id), float(i))
    for node_id in rng.sample(sorted(t.index), len(t.index) // 3):
        t.failed(node_id, 1000.0)
    for _ in range(8):
        target = own ^ rng.getrandbits(rng.randrange(1, BITS + 1))
        exclude = rng.choice([None, target, *t.index]) if t.index else None
        for healthy in (False, True):
            pool = [i for i in t.index if i != exclude and not (healthy and t.index[i].failures)]
            expected = sorted(pool, key=lambda i, tg=target: i ^ tg)[:n]
            got = t.closest(target, n, exclude=exclude, healthy=healthy)
            assert [c.node_id for c in got] == expected


def _bucket_table(now: float = 0.0) -> RoutingTable:
    """A table whose buckets 0..3 each hold one contact, all heard at ``now``."""
    cfg = replace(CFG, refresh_interval_s=600.0, refresh_max_cpl=3)
    own = 0
    t = RoutingTable(own, cfg, now=now)
    for cpl in range(8):  # two contacts per cpl: the last bucket splits down to cpl 7
        t.seen(contact(1 << (BITS - 1 - cpl)), now)
        t.seen(contact(1 << (BITS - 1 - cpl) | 1), now)
    assert len(t.buckets) > 4
    return t


def test_refresh_asks_only_for_buckets_nobody_talked_to():
    t = _bucket_table()
    assert t.stale_buckets(599.0) == []
    # After the interval every bucket up to refresh_max_cpl is due...
    assert t.stale_buckets(601.0) == [0, 1, 2, 3]
    # ...except one whose contact was heard from (BEP 5 "last changed")...
    t.heard(t.get(1 << (BITS - 2)), 500.0)
    assert t.stale_buckets(1000.0) == [0, 2, 3]
    # ...or that a lookup of ours went through (the paper's rule).
    t.touch(1 << (BITS - 3) | 5, 700.0)
    assert t.stale_buckets(1000.0) == [0, 3]
    # A contact added to a bucket freshens it too.
    t.seen(contact(1 << (BITS - 1) | 7), 900.0)
    assert (1 << (BITS - 1) | 7) in t
    assert t.stale_buckets(1000.0) == [3]


def test_an_empty_bucket_is_always_due_once_the_interval_passed():
    t = RoutingTable(0, replace(CFG, refresh_interval_s=600.0))
    t.seen(contact(1 << (BITS - 1)), 0.0)
    assert t.stale_buckets(10.0) == []  # created now: fresh
    t.remove(1 << (BITS - 1))
    assert t.stale_buckets(601.0) == [0]


def test_random_entry_is_uniform_over_the_table_after_removals():
    t = RoutingTable(0, replace(CFG, k=20))
    rng = random.Random(4)
    ids = [rng.getrandbits(BITS) | 1 for _ in range(60)]
    for i in ids:
        t.seen(contact(i), 0.0)
    for i in list(t.index)[::3]:
        t.remove(i)
    check_invariants(t)
    counts = {i: 0 for i in t.index}
    draws = 400 * len(counts)
    for _ in range(draws):
        counts[t.random_entry(rng).contact.node_id] += 1
    assert min(counts.values()) > 300 and max(counts.values()) < 500
    assert RoutingTable(0, CFG).random_entry(rng) is None
