"""A clean stop (signed Leave) and the per-type RPC counts of the overlay core: cores
joined by a hand pump, every datagram delivered (or lost) explicitly."""

import random

from dvms.effects import Emit, Send
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import LeaveDone, OverlayCore, PeerLeft
from dvms.overlay.messages import Contact, FindNode, Leave, Ping, Pong
from dvms.overlay.records import Identity
from dvms.overlay.rpcstats import LATENCY_BOUNDS_S

CFG = KademliaConfig(k=8)


class Net:
    """Cores by address; ``deliver`` carries every Send to its core, answers too."""

    def __init__(self, n: int) -> None:
        self.ids = [Identity.from_seed(b"leave-%d" % i) for i in range(n)]
        self.cores = [
            OverlayCore(Contact(ident.node_id, f"n{i}", 7400), CFG, random.Random(i))
            for i, ident in enumerate(self.ids)
        ]
        self.by_addr = {c.contact.addr: c for c in self.cores}
        self.emitted: list[tuple[OverlayCore, object]] = []

    def deliver(self, src: OverlayCore, effects: list, now: float) -> None:
        queue = [(src, e) for e in effects]
        while queue:
            frm, eff = queue.pop(0)
            if isinstance(eff, Emit):
                self.emitted.append((frm, eff.event))
                continue
            dst = self.by_addr.get(eff.dst)
            if dst is None:
                continue  # lost: nobody there
            out = dst.on_message(frm.contact.addr, frm.node_id, eff.rid, eff.msg, now=now)
            queue += [(dst, e) for e in out]

    def join_all(self) -> None:
        for i, core in enumerate(self.cores):
            seeds = [self.cores[0].contact.addr] if i else []
            self.deliver(core, core.start(seeds, now=0.0), now=0.001)


def test_rpcs_are_counted_by_type_and_result_with_their_latency():
    net = Net(3)
    net.join_all()
    a, b = net.cores[0], net.cores[1]
    by = dict(b.rpc_stats.kinds())
    assert by["ping"].ok >= 1  # the seed ping
    assert by["find_node"].ok >= 1  # the join lookup
    assert sum(by["ping"].buckets) == by["ping"].ok  # every answer has a latency
    # an answer of the wrong type is an error
    _, out = a.lookup(123, now=1.0)
    (send,) = [e for e in out if isinstance(e, Send) and isinstance(e.msg, FindNode)][:1]
    peer = net.by_addr[send.dst]
    a.on_message(send.dst, peer.node_id, send.rid, Pong(), now=1.25)
    k = dict(a.rpc_stats.kinds())["find_node"]
    assert k.error == 1
    assert k.sum_s >= 0.25
    hist = a.rpc_stats.histogram(k)
    assert hist[-1] == ("+Inf", float(k.ok + k.error))
    assert [b for b, _ in hist[:-1]] == [repr(x) for x in LATENCY_BOUNDS_S]
    # a silent peer: every attempt times out
    c = OverlayCore(Contact(99, "lonely", 1), CFG, random.Random(5))
    c.start([("nobody", 1)], now=0.0)
    now = 0.0
    while not dict(c.rpc_stats.kinds())["ping"].timeout:
        now = c.next_deadline()
        c.on_timer(now=now)
    ping = dict(c.rpc_stats.kinds())["ping"]
    assert (ping.ok, ping.error, ping.timeout) == (0, 0, 1)
    assert ping.retransmits == CFG.rpc_attempts - 1


def test_a_clean_stop_is_told_to_every_peer_who_marks_it_left():
    net = Net(4)
    net.join_all()
    leaver, ident = net.cores[2], net.ids[2]
    peers = [c for c in net.cores if leaver.node_id in c.table]
    told = len(leaver.table)
    assert peers and told
    out = leaver.leave(ident.sign_leave(1_700_000_000.0), now=5.0)
    assert {e.dst for e in out if isinstance(e, Send) and isinstance(e.msg, Leave)} == {
        c.addr for c in leaver.table.contacts()
    }
    net.deliver(leaver, out, now=5.01)
    for c in peers:  # 4 nodes: everyone knows everyone
        assert leaver.node_id not in c.table and leaver.node_id in c.left
    assert len(peers) == told == 3
    left_events = [ev for _, ev in net.emitted if isinstance(ev, PeerLeft)]
    assert {ev.contact.node_id for ev in left_events} == {leaver.node_id}
    (done,) = [ev for core, ev in net.emitted if isinstance(ev, LeaveDone)]
    assert done == LeaveDone(told, told)
    assert dict(leaver.rpc_stats.kinds())["leave"].ok == told
    # a leaving node answers nothing more and starts nothing
    assert leaver.on_message(("n0", 7400), net.cores[0].node_id, 1, Ping(), now=6.0) == []
    assert leaver.on_timer(now=10_000.0) == []
    # hearing from it again makes it a live peer again
    other = net.cores[0]
    other.on_message(leaver.contact.addr, leaver.node_id, 77, Ping(), now=7.0)
    assert leaver.node_id in other.table and leaver.node_id not in other.left


def test_a_leave_not_signed_by_the_senders_key_is_refused():
    net = Net(3)
    net.join_all()
    victim, liar, receiver = net.cores[1], net.ids[2], net.cores[0]
    assert victim.node_id in receiver.table
    forged = liar.sign_leave(1.0)  # signed, but by another node's key
    out = receiver.on_message(victim.contact.addr, victim.node_id, 5, forged, now=1.0)
    assert out == []
    assert receiver.stats["bad_leave"] == 1
    assert victim.node_id in receiver.table and victim.node_id not in receiver.left
    tampered = Leave(2.0, net.ids[1].public, net.ids[1].sign_leave(1.0).sig)
    assert receiver.on_message(victim.contact.addr, victim.node_id, 6, tampered, now=1.0) == []
    assert receiver.stats["bad_leave"] == 2


def test_a_node_alone_leaves_at_once_and_left_memory_is_bounded():
    core = OverlayCore(Contact(1, "me", 1), CFG, random.Random(0))
    out = core.leave(Identity.from_seed(b"x").sign_leave(1.0), now=0.0)
    assert [e.event for e in out if isinstance(e, Emit)] == [LeaveDone(0, 0)]
    small = KademliaConfig(k=8, left_memory=2)
    r = OverlayCore(Contact(1, "r", 1), small, random.Random(0))
    for i in range(4):
        ident = Identity.from_seed(b"m%d" % i)
        r.on_message((f"m{i}", 1), ident.node_id, i, ident.sign_leave(1.0), now=float(i))
    assert len(r.left) == 2 and r.stats["peer_left"] == 4


def test_a_record_checked_once_is_not_checked_again_and_a_forgery_still_fails(monkeypatch):
    import dataclasses

    import pytest

    from dvms.overlay import records
    from dvms.overlay.records import RecordError, verify_signature

    ident = Identity.from_seed(b"memo")
    rec = ident.sign_record("vm/x/y", b"v", seq=1, ttl_s=60.0)
    monkeypatch.setattr(records, "_VERIFIED", {})
    calls = []
    real = records.Ed25519PublicKey.from_public_bytes

    def counting(data: bytes):
        calls.append(data)
        return real(data)

    monkeypatch.setattr(records.Ed25519PublicKey, "from_public_bytes", counting)
    verify_signature(rec)
    verify_signature(dataclasses.replace(rec))  # an equal copy, as a reply decodes it
    assert len(calls) == 1
    for _ in range(2):  # a refusal is not remembered
        with pytest.raises(RecordError, match="bad signature"):
            verify_signature(dataclasses.replace(rec, value=b"w"))
    assert len(calls) == 3
