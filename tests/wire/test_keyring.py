"""The keyring and the envelope's choice of key: rotation as the codecs see it."""

import pytest

from dvms.overlay.messages import Ping, register_overlay_messages
from dvms.wire.envelope import MessageRegistry, WireCodec
from dvms.wire.keys import (
    MAX_KEYS,
    KeyFileError,
    Keyring,
    KeyringError,
    key_id,
    load_keyring,
    parse_key_id,
    write_key,
    write_keyring,
)

K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))
A, B = ("10.0.0.1", 7400), ("10.0.0.2", 7400)


def codec(ring: Keyring) -> WireCodec:
    return WireCodec(ring, register_overlay_messages(MessageRegistry()))


def test_key_ids_are_short_stable_and_not_the_key():
    assert len(key_id(K1)) == 4 and key_id(K1) == key_id(bytes(K1))
    assert key_id(K1) != key_id(K2)
    assert key_id(K1) not in K1
    assert parse_key_id(key_id(K1).hex()) == key_id(K1)
    with pytest.raises(KeyringError, match="not a key id"):
        parse_key_id("xyz")


def test_install_use_remove():
    ring = Keyring([K1])
    assert ring.install(K2) and not ring.install(K2)
    assert ring.primary == K1 and ring.ids() == [key_id(K1), key_id(K2)]
    assert ring.use(key_id(K2)) and ring.primary == K2
    assert ring.ids()[0] == key_id(K2)
    assert ring.remove(key_id(K1)) and not ring.remove(key_id(K1))
    assert ring.ordered_keys() == [K2]


def test_refusals_change_nothing():
    ring = Keyring([K1, K2])
    with pytest.raises(KeyringError, match=f"key {key_id(K1).hex()} is the primary key"):
        ring.remove(key_id(K1))
    with pytest.raises(KeyringError, match=f"key {key_id(K3).hex()} is not installed"):
        ring.use(key_id(K3))
    with pytest.raises(KeyringError, match="32 bytes"):
        ring.install(b"short")
    assert ring.ordered_keys() == [K1, K2]
    full = Keyring([bytes([i]) * 32 for i in range(1, MAX_KEYS + 1)])
    with pytest.raises(KeyringError, match="full"):
        full.install(bytes([99]) * 32)


def test_the_file_keeps_the_ring_and_its_primary(tmp_path):
    ring = Keyring([K1, K2, K3])
    ring.use(key_id(K3))
    path = write_keyring(tmp_path / "ring", ring)
    assert (path.stat().st_mode & 0o777) == 0o600
    back = load_keyring(path)
    assert back.primary == K3 and back.ordered_keys() == [K3, K1, K2]
    # a file written by `dvms keygen` is a ring of one
    one = write_key(tmp_path / "one.key", K1)
    assert load_keyring(one).ordered_keys() == [K1]
    (tmp_path / "bad").write_text(K1.hex() + "\nzz\n")
    with pytest.raises(KeyFileError, match="line 2 is not hex"):
        load_keyring(tmp_path / "bad")


def test_any_installed_key_is_accepted_and_the_primary_signs():
    old, both = codec(Keyring([K1])), codec(Keyring([K2, K1], primary=K2))
    data = both.encode(Ping(), sender=1, rid=1, now=0.0)
    assert data[1:5] == key_id(K2)
    # a node holding only K1 cannot check a K2 datagram: it names the key it lacks
    assert old.decode(data, now=0.0, src=B) is None
    assert old.drops["unknown_key"] == 1 and old.unknown_keys[B] == key_id(K2)
    # K1 datagrams are accepted by the node holding both
    assert both.decode(old.encode(Ping(), sender=2, rid=2, now=0.0), now=0.0, src=A) is not None


def test_a_node_told_by_a_key_hint_knows_which_key_it_lacks():
    old, new = codec(Keyring([K1])), codec(Keyring([K2]))
    assert new.decode(old.encode(Ping(), sender=2, rid=2, now=0.0), now=0.0, src=A) is None
    assert new.last_drop == "unknown_key" and new.unknown_keys[A] == key_id(K1)
    assert old.decode(new.key_hint(), now=0.0, src=B) is None
    assert old.last_drop == "key_hint" and old.unknown_keys[B] == key_id(K2)


def test_a_peer_that_missed_the_new_primary_is_answered_with_its_own():
    """A node offline while K2 became primary (it holds K1 only) still hears its peers:
    they sign to it with its primary, which they still hold."""
    old, new = codec(Keyring([K1])), codec(Keyring([K2, K1], primary=K2))
    assert new.decode(old.encode(Ping(), sender=2, rid=2, now=0.0), now=0.0, src=A)
    reply = new.encode(Ping(), sender=1, rid=3, now=0.0, dst=A)
    assert reply[1:5] == key_id(K1)
    assert old.decode(reply, now=0.0, src=B) is not None
    # to anyone else, and once the old key is removed, the primary signs
    assert new.encode(Ping(), sender=1, rid=4, now=0.0, dst=B)[1:5] == key_id(K2)
    new.keys.remove(key_id(K1))
    assert new.encode(Ping(), sender=1, rid=5, now=0.0, dst=A)[1:5] == key_id(K2)
    assert old.decode(new.encode(Ping(), sender=1, rid=6, now=0.0, dst=A), now=0.0) is None


def test_a_stale_datagram_is_kept_for_the_clock_estimate():
    tx, rx = codec(Keyring([K1])), codec(Keyring([K1]))
    assert rx.decode(tx.encode(Ping(), sender=9, rid=4, now=190.0), now=100.0) is None
    assert rx.drops["stale"] == 1
    stale = rx.last_stale
    assert stale is not None and (stale.sender, stale.ts, stale.received) == (9, 190.0, 100.0)
