"""The authenticated CBOR envelope: round trips, every drop reason, and fuzzing."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.overlay.messages import (
    Contact,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Record,
    Store,
    Stored,
    Value,
    register_overlay_messages,
)
from dvms.wire.envelope import (
    DROP_REASONS,
    HEADER_BYTES,
    TAG_BYTES,
    WIRE_VERSION,
    MessageRegistry,
    WireCodec,
    WireConfig,
)
from dvms.wire.keys import key_id

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SENDER = 0xABCDEF << 100


def codec(key: bytes = KEY, **cfg) -> WireCodec:
    return WireCodec(key, register_overlay_messages(MessageRegistry()), WireConfig(**cfg))


def signed(payload_obj, version: int = WIRE_VERSION) -> bytes:
    """A datagram with a valid MAC around an arbitrary CBOR payload."""
    payload = cbor2.dumps(payload_obj)
    header = bytes([version]) + key_id(KEY) * 2
    return header + WireCodec._tag(KEY, header, payload) + payload


RECORD = Record(name="vm/ns/a", value=b"x", publisher=b"p" * 32, seq=3, ttl_s=60.0, sig=b"s" * 64)
CONTACTS = tuple(Contact(i << 140, f"10.0.0.{i}", 7000 + i) for i in range(20))
EXAMPLES = [
    Ping(),
    Pong((0.1,) * 11),
    FindNode(2**160 - 1),
    Nodes(CONTACTS, (0.0,) * 11),
    FindValue(12345),
    Value((RECORD,), CONTACTS[:3], ()),
    Store(RECORD),
    Stored(True, ()),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg):
    tx, rx = codec(), codec()
    data = tx.encode(msg, sender=SENDER, rid=2**64 - 1, now=100.0)
    got = rx.decode(data, now=100.5)
    assert got is not None, rx.drops
    assert (got.sender, got.rid, got.ts, got.msg) == (SENDER, 2**64 - 1, 100.0, msg)


def test_full_nodes_reply_fits_comfortably():
    data = codec().encode(Nodes(CONTACTS, (1.0,) * 11), sender=SENDER, rid=1, now=0.0)
    assert len(data) < 1500


def test_each_drop_reason_is_counted_and_nothing_raises():
    rx = codec(max_datagram=512)
    good = codec().encode(Ping(), sender=SENDER, rid=7, now=10.0)
    cases = {
        "oversized": b"\0" * 513,
        "truncated": good[: HEADER_BYTES + TAG_BYTES],
        "key_hint": codec(OTHER_KEY).key_hint(),
        "bad_version": signed([1, b"\0" * 20, 1, 10.0, []], version=WIRE_VERSION + 1),
        "unknown_key": codec(OTHER_KEY).encode(Ping(), sender=SENDER, rid=7, now=10.0),
        "bad_mac": good[:HEADER_BYTES] + bytes(TAG_BYTES) + good[HEADER_BYTES + TAG_BYTES :],
        "malformed": signed({"not": "a list"}),
        "unknown_type": signed([999, b"\0" * 20, 1, 10.0, []]),
        "schema": signed([3, b"\0" * 20, 1, 10.0, [b"short"]]),
        "stale": codec().encode(Ping(), sender=SENDER, rid=8, now=10.0 - 1000),
        "revoked": codec().encode(Ping(), sender=SENDER + 1, rid=9, now=10.0),
    }
    rx.revoked.add(SENDER + 1)
    for reason, data in cases.items():
        assert rx.decode(data, now=10.0) is None, reason
        assert rx.drops[reason] == 1, (reason, rx.drops)
    assert rx.decode(good, now=10.0) is not None
    assert rx.decode(good, now=10.5) is None
    assert rx.drops["replayed"] == 1
    small = codec(replay_entries=1)  # a full replay memory forgets; its horizon holds
    assert small.decode(good, now=10.0) is not None
    assert small.decode(codec().encode(Ping(), sender=SENDER, rid=9, now=10.1), now=10.2)
    assert small.decode(good, now=10.3) is None
    rx.drops.update(small.drops)
    assert set(rx.drops) == set(DROP_REASONS)


def test_the_replay_memory_is_bounded_under_a_flood_and_still_catches_replays():
    rx = codec(replay_entries=1000)
    tx = codec()
    sent = []
    for i in range(5000):  # 5,000 distinct datagrams in 5 s: the memory keeps 1,000
        now = 10.0 + i / 1000
        data = tx.encode(Ping(), sender=SENDER, rid=i + 1, now=now)
        sent.append(data)
        assert rx.decode(data, now=now) is not None
        assert len(rx.replay) <= 1000
    assert rx.replay.evicted == 4000
    now = 15.0
    for data in sent[::97]:  # every replay still dropped, remembered or past the horizon
        assert rx.decode(data, now=now) is None
    assert rx.drops["replayed"] + rx.drops["replay_horizon"] == len(sent[::97])
    assert rx.drops["replay_horizon"] > 0 and rx.drops["replayed"] > 0
    # honest traffic stamped now passes; a flood stamped in the future cannot move the
    # horizon past the arrival times
    for i in range(3000):
        late = tx.encode(Ping(), sender=SENDER, rid=10**6 + i, now=now + 50.0)
        assert rx.decode(late, now=now) is not None
    assert rx.replay.horizon <= now
    fresh = tx.encode(Ping(), sender=SENDER, rid=7, now=now + 0.001)
    assert rx.decode(fresh, now=now + 0.002) is not None


def test_one_way_messages_with_rid_0_are_not_replays_of_each_other():
    """Keep-alives and Dissolve are sent with rid 0: each new one must get through, an
    exact copy of one must not."""
    rx = codec()
    first = codec().encode(Ping(), sender=SENDER, rid=0, now=10.0)
    second = codec().encode(Ping(), sender=SENDER, rid=0, now=10.25)
    assert rx.decode(first, now=10.0) is not None
    assert rx.decode(second, now=10.3) is not None
    assert rx.decode(first, now=10.4) is None
    assert rx.drops["replayed"] == 1


def test_flipping_any_bit_is_detected():
    data = bytearray(codec().encode(FindNode(42), sender=SENDER, rid=5, now=1.0))
    for i in range(0, len(data), 3):
        bad = bytearray(data)
        bad[i] ^= 0x01
        rx = codec()
        assert rx.decode(bytes(bad), now=1.0) is None
        # the version byte and the signing key id name what to check the tag with
        expected = "bad_version" if i == 0 else "unknown_key" if i < 5 else "bad_mac"
        assert rx.drops[expected] == 1, (i, rx.drops)


def test_replay_memory_is_bounded_by_the_window():
    rx = codec(replay_window_s=5.0)
    for i in range(100):
        data = codec().encode(Ping(), sender=SENDER, rid=i, now=float(i))
        assert rx.decode(data, now=float(i)) is not None
    assert len(rx.replay) <= 12


def test_oversized_outgoing_message_is_refused():
    big = Record(name="a", value=b"v" * 4096, publisher=b"p" * 32, seq=0, ttl_s=1.0, sig=b"s")
    with pytest.raises(ValueError, match="datagram limit"):
        codec(max_datagram=1024).encode(Store(big), sender=1, rid=1, now=0.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(data):
    rx = codec()
    assert rx.decode(data, now=0.0) is None
    assert sum(rx.drops.values()) == 1


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.binary(max_size=30)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    code=st.integers(0, 12),
    sender=st.binary(min_size=0, max_size=24),
    rid=st.integers(-5, 2**65),
    body=cbor_values,
)
def test_fuzz_authenticated_garbage_never_raises(code, sender, rid, body):
    """Even a cluster member sending nonsense cannot crash the receive path."""
    rx = codec()
    out = rx.decode(signed([code, sender, rid, 0.0, body]), now=0.0)
    assert (out is None) == (sum(rx.drops.values()) == 1)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 200), flip=st.integers(0, 10_000))
def test_fuzz_truncated_and_forged_valid_datagrams(cut, flip):
    data = codec().encode(Nodes(CONTACTS[:5], (0.5,) * 11), sender=SENDER, rid=9, now=0.0)
    rx = codec()
    truncated = data[: max(0, len(data) - 1 - cut)]
    assert rx.decode(truncated, now=0.0) is None
    forged = bytearray(data)
    forged[flip % len(data)] ^= 0x40
    assert rx.decode(bytes(forged), now=0.0) is None
    assert sum(rx.drops.values()) == 2
