"""The lookup state machine on its own: whom to ask, when to stop, what to return."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.overlay.lookup import Lookup
from dvms.overlay.messages import Contact


def c(i: int) -> Contact:
    return Contact(i, f"h{i}", 1)


def make(seeds, k=3, alpha=2, target=0):
    return Lookup(
        1, "node", target, k=k, alpha=alpha, own=c(1000), seeds=seeds, started=0.0, deadline=60.0
    )


def test_asks_the_closest_first_alpha_at_a_time():
    lk = make([c(5), c(1), c(9), c(3)])
    assert [x.node_id for x in lk.next_queries()] == [1, 3]
    assert lk.next_queries() == []  # alpha slots full


def test_ends_only_when_the_k_closest_answered_and_returns_them():
    lk = make([c(5), c(1), c(9), c(3)])
    lk.next_queries()
    lk.answered(1, (c(2),))  # learns a closer node
    assert [x.node_id for x in lk.next_queries()] == [2]
    lk.answered(3, ())
    assert not lk.finished()
    lk.answered(2, ())
    assert lk.finished()
    res = lk.result(5.0)
    assert [x.node_id for x in res.contacts] == [1, 2, 3]
    assert res.hops == 1  # node 1 was already known (depth 1)


def test_failed_nodes_drop_out_and_the_next_moves_up():
    lk = make([c(1), c(2), c(3), c(4)])
    lk.next_queries()
    lk.failed(1)
    lk.answered(2, ())
    assert [x.node_id for x in lk.next_queries()] == [3, 4]
    lk.answered(3, ())
    lk.answered(4, ())
    assert lk.finished()
    assert [x.node_id for x in lk.result(1.0).contacts] == [2, 3, 4]


def test_a_stalled_node_frees_its_slot_but_is_still_awaited():
    lk = make([c(1), c(2), c(3), c(4)], alpha=1)
    assert [x.node_id for x in lk.next_queries()] == [1]
    lk.stalled(1)
    assert [x.node_id for x in lk.next_queries()] == [2]
    lk.answered(2, ())
    lk.next_queries()
    lk.answered(3, ())
    assert not lk.finished()  # node 1 may still answer: it is among the k closest
    lk.failed(1)
    assert not lk.finished()  # now node 4 moved into the k closest
    assert [x.node_id for x in lk.next_queries()] == [4]
    lk.answered(4, ())
    assert lk.finished() and lk.in_flight == 0 and not lk.slow
    # A late answer from a slow node is counted once.
    lk2 = make([c(1), c(2)], alpha=1, k=2)
    lk2.next_queries()
    lk2.stalled(1)
    lk2.next_queries()
    lk2.answered(1, ())
    lk2.answered(2, ())
    assert lk2.in_flight == 0 and lk2.finished()


def test_our_own_node_is_part_of_the_result_when_close():
    lk = Lookup(1, "node", 0, k=2, alpha=1, own=c(1), seeds=[c(5)], started=0.0, deadline=9.0)
    lk.next_queries()
    lk.answered(5, ())
    assert [x.node_id for x in lk.result(1.0).contacts] == [1, 5]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000), k=st.integers(1, 8), alpha=st.integers(1, 4))
def test_random_replies_end_with_the_k_closest_that_answered(seed, k, alpha):
    """Replies add their contacts in batches: whatever the order of answers, failures and
    duplicates, candidates stay sorted by distance and the result is the k closest of
    those that answered (brute force)."""
    rng = random.Random(seed)
    target = rng.getrandbits(16)
    universe = rng.sample(range(1, 1 << 16), 60)
    dead = set(rng.sample(universe, 15))
    lk = Lookup(
        1,
        "node",
        target,
        k=k,
        alpha=alpha,
        own=c(0),
        seeds=[c(i) for i in universe[:3]],
        started=0.0,
        deadline=60.0,
    )
    waiting: list[int] = []
    answered = {0}
    while not lk.finished():
        waiting += [x.node_id for x in lk.next_queries()]
        assert waiting, "an unfinished lookup with nothing in flight is stuck"
        node_id = waiting.pop(rng.randrange(len(waiting)))
        if node_id in dead:
            lk.failed(node_id)
        else:
            answered.add(node_id)
            lk.answered(node_id, tuple(c(i) for i in rng.sample(universe, rng.randrange(6))))
        assert lk.order == sorted(i ^ target for i in lk.cands)
    expected = sorted(answered, key=lambda i: i ^ target)[:k]
    assert [x.node_id for x in lk.result(1.0).contacts] == expected


def test_a_failed_node_worth_retrying_is_asked_once_more_then_given_up():
    lk = make([c(1), c(2), c(3)], k=2, alpha=2)
    assert [x.node_id for x in lk.next_queries()] == [1, 2]
    lk.failed(1, retry=True)  # lost every attempt, but was alive: ask again
    assert [x.node_id for x in lk.next_queries()] == [1]
    lk.answered(2, ())
    assert not lk.finished()
    lk.failed(1, retry=True)  # a second failure is final, retry or not
    assert [x.node_id for x in lk.next_queries()] == [3]
    lk.answered(3, ())
    assert lk.finished()
    assert [x.node_id for x in lk.result(1.0).contacts] == [2, 3]


def test_a_retried_node_that_answers_is_in_the_result():
    lk = make([c(1), c(2), c(3)], k=2, alpha=2)
    lk.next_queries()
    lk.failed(1, retry=True)
    lk.answered(2, ())
    assert [x.node_id for x in lk.next_queries()] == [1]
    lk.answered(1, ())
    assert lk.finished()
    assert [x.node_id for x in lk.result(1.0).contacts] == [1, 2]
