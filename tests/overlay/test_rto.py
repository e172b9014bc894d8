"""The overlay core's retransmission timeout against a peer whose answers are slow.

One core talks to a fake peer that answers every request after a delay we choose (or
never, for a lost attempt). Each attempt has its own request id, so every answer is an
RTT sample of the attempt it answers, retransmitted RPCs included."""

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.effects import Send
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import (
    Contact,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    Value,
)

#: The profile `dvms cluster up` runs: timeout floor 20 ms, first timeout 0.5 s.
CFG = KademliaConfig.local()
PEER = Contact(0xB0B << 140, "peer", 7400)


def reply_to(msg: object) -> object:
    if isinstance(msg, Ping):
        return Pong()
    if isinstance(msg, FindNode):
        return Nodes(())
    if isinstance(msg, FindValue):
        return Value((), ())
    assert isinstance(msg, Store)
    return Stored(True)


class SlowPeer:
    """Drives ``core`` against PEER, which answers each request ``delay`` seconds after
    it was sent; records when each retransmission and each RPC failure happened."""

    def __init__(self, core: OverlayCore) -> None:
        self.core = core
        self.delay = 0.001
        self.now = 0.0
        self.answers: list[tuple[float, int, object]] = []
        self.retransmits: list[float] = []
        self.failures: list[float] = []
        self.answered_at: list[float] = []

    def take(self, effects: list) -> None:
        for e in effects:
            if isinstance(e, Send) and e.dst == PEER.addr and not isinstance(e.msg, Pong):
                heapq.heappush(self.answers, (self.now + self.delay, e.rid, reply_to(e.msg)))

    def run_until(self, end: float) -> None:
        core = self.core
        while True:
            due = core.next_deadline()
            t_answer = self.answers[0][0] if self.answers else None
            if t_answer is not None and (due is None or t_answer <= due):
                if t_answer > end:
                    break
                self.now, rid, msg = heapq.heappop(self.answers)
                before = core.stats["unexpected_response"]
                self.take(core.on_message(PEER.addr, PEER.node_id, rid, msg, now=self.now))
                if core.stats["unexpected_response"] == before:
                    self.answered_at.append(self.now)
            elif due is not None and due <= end:
                self.now = due
                retx, failed = core.stats["retransmit"], core.stats["rpc_failed"]
                self.take(core.on_timer(now=due))
                self.retransmits += [due] * (core.stats["retransmit"] - retx)
                self.failures += [due] * (core.stats["rpc_failed"] - failed)
            else:
                break
        self.now = end


def joined_core() -> tuple[OverlayCore, SlowPeer]:
    core = OverlayCore(Contact(1 << 150, "me", 7400), CFG, random.Random(4))
    peer = SlowPeer(core)
    peer.take(core.start([PEER.addr], now=0.0))
    return core, peer


def test_a_peer_that_became_slow_is_retransmitted_to_only_until_the_timeout_adapts():
    core, peer = joined_core()
    peer.run_until(10.0)  # fast answers (1 ms): the timeout sits at its floor
    e = core.table.get(PEER.node_id)
    assert e is not None and e.srtt is not None and e.srtt < 0.005
    assert core.table.rto(PEER.node_id) == CFG.rto_min_s
    assert not peer.retransmits and not peer.failures
    peer.delay = 0.150  # the peer is now busy: 150 ms per answer, 7.5 floors
    start = peer.now
    for i in range(30):  # lookups beside the periodic probes
        peer.take(core.lookup(core.rng.getrandbits(160), now=peer.now)[1])
        peer.run_until(start + i + 1.0)
    first_slow = min(t for t in peer.answered_at if t > start)
    # The first RPC after the change is sent up to 4 times (20, 30, 45 ms timeouts: the
    # answer to its first attempt comes at 150 ms, before the last one runs out) ...
    assert 1 <= len(peer.retransmits) <= CFG.rpc_attempts - 1
    # ... and its answer is a 150 ms sample: no RPC is retransmitted after it.
    assert all(t < first_slow for t in peer.retransmits)
    assert not peer.failures
    assert e.srtt is not None and abs(e.srtt - 0.150) < 0.005
    rto = core.table.rto(PEER.node_id)
    assert rto is not None and 0.150 < rto < 0.2


def next_attempt(core: OverlayCore, before: float = float("inf")) -> tuple[float, Send] | None:
    """Run the core's timers due before ``before`` (a probe of an empty table sends
    nothing) until it sends again, the seed ping's next attempt: (when, the Send)."""
    while (due := core.next_deadline()) is not None and due < before:
        sends = [e for e in core.on_timer(now=due) if isinstance(e, Send)]
        if sends:
            (send,) = sends
            return due, send
    return None


def test_a_late_answer_to_the_first_attempt_is_measured_from_the_first_attempt():
    core = OverlayCore(Contact(1 << 150, "me", 7400), CFG, random.Random(4))
    (ping1,) = [e for e in core.start([PEER.addr], now=0.0) if isinstance(e, Send)]
    nxt = next_attempt(core)
    assert nxt is not None
    t2, ping2 = nxt
    assert t2 == CFG.rpc_timeout_s  # a peer never measured: the first timeout
    assert ping2.rid != ping1.rid
    # attempt 1 answered 0.6 s after it was sent, 0.1 s after attempt 2 went out
    core.on_message(PEER.addr, PEER.node_id, ping1.rid, Pong(), now=0.6)
    e = core.table.get(PEER.node_id)
    assert e is not None and e.srtt == 0.6 and e.rttvar == 0.3
    # attempt 2's answer comes later: the RPC is done, no second sample
    core.on_message(PEER.addr, PEER.node_id, ping2.rid, Pong(), now=0.7)
    assert e.srtt == 0.6 and core.stats["unexpected_response"] == 1


def test_an_answer_to_the_latest_attempt_is_measured_from_the_latest_attempt():
    core = OverlayCore(Contact(1 << 150, "me", 7400), CFG, random.Random(4))
    core.start([PEER.addr], now=0.0)
    nxt = next_attempt(core)
    assert nxt is not None
    t2, ping2 = nxt
    core.on_message(PEER.addr, PEER.node_id, ping2.rid, Pong(), now=t2 + 0.01)
    e = core.table.get(PEER.node_id)
    assert e is not None and e.srtt is not None and abs(e.srtt - 0.01) < 1e-9


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.floats(0.0005, 5.0, allow_nan=False)),
        min_size=CFG.rpc_attempts,
        max_size=CFG.rpc_attempts,
    )
)
def test_the_sample_is_the_round_trip_of_the_attempt_answered_first(delays):
    """Each attempt of a seed ping is lost (None) or answered after its delay; the
    sample (the new contact's srtt) is the round trip of the first answer to arrive,
    from its own attempt's send time, whatever answers come after it."""
    core = OverlayCore(Contact(1 << 150, "me", 7400), CFG, random.Random(4))
    sends = [e for e in core.start([PEER.addr], now=0.0) if isinstance(e, Send)]
    times = [0.0]
    answers: list[tuple[float, int, float]] = []  # (arrives, rid, round trip)
    for attempt, delay in enumerate(delays):
        if delay is not None:
            answers.append((times[attempt] + delay, sends[attempt].rid, delay))
        if attempt + 1 == len(delays):
            break
        nxt = next_attempt(core, before=min(answers)[0] if answers else float("inf"))
        if nxt is None:
            break  # answered before the next attempt would go out
        times.append(nxt[0])
        sends.append(nxt[1])
    answers.sort()
    for arrives, rid, _ in answers:
        core.on_message(PEER.addr, PEER.node_id, rid, Pong(), now=arrives)
    e = core.table.get(PEER.node_id)
    if not answers:
        assert e is None
        return
    assert e is not None and e.srtt is not None
    assert abs(e.srtt - answers[0][2]) < 1e-9
    assert core.stats["unexpected_response"] == len(answers) - 1
