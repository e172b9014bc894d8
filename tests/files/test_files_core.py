"""The sans-I/O part of file sharing: manifests and roots, bitmaps, provider records and
their table, eviction, and the swarm scheduler (against an in-memory set of peers)."""

from __future__ import annotations

import hashlib
import random

import pytest

from dvms.files import (
    Bitmap,
    FilesConfig,
    Manifest,
    ManifestError,
    ProviderTable,
    StoredFile,
    Swarm,
    choose_victims,
    provider_record,
)
from dvms.files.manifest import parse_root, qcow2_backing_name, validate_file_name
from dvms.files.providers import ProviderError, read_provider
from dvms.overlay.records import Identity


def _manifest(data: bytes, chunk: int) -> Manifest:
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return Manifest(len(data), chunk, tuple(hashlib.sha256(p).digest() for p in parts))


def test_manifest_roundtrip_and_root_check() -> None:
    m = _manifest(b"x" * 10 + b"y" * 5, 4)
    assert m.chunks == 4 and m.span(3) == (12, 3)
    again = Manifest.decode(m.encode(), m.root)
    assert again == m and again.root == m.root
    assert m.check_chunk(0, b"xxxx") and not m.check_chunk(0, b"xxxy")
    assert not m.check_chunk(3, b"yyyy")  # wrong length for the last chunk
    with pytest.raises(ManifestError, match="does not match its root"):
        Manifest.decode(m.encode(), bytes(32))
    other = Manifest(m.size, m.chunk, m.hashes, "qcow2")
    assert other.root != m.root  # the format is part of the content address


@pytest.mark.parametrize(
    ("size", "hashes", "error"),
    [(5, 1, "2 chunks"), (-1, 0, "size"), (4, 1, None)],
)
def test_manifest_checks_its_shape(size: int, hashes: int, error: str | None) -> None:
    if error is None:
        Manifest(size, 4, (bytes(32),) * hashes)
        return
    with pytest.raises(ManifestError, match=error):
        Manifest(size, 4, (bytes(32),) * hashes)


def test_empty_file_has_no_chunks() -> None:
    m = _manifest(b"", 4)
    assert m.chunks == 0 and Manifest.decode(m.encode(), m.root).size == 0


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("debian-12.qcow2", True),
        ("images/base", True),
        ("", False),
        ("-x", False),
        ("../etc", False),
        ("a/../b", False),
        ("a b", False),
        ("ab" * 32, False),  # 64 hex digits: a root
    ],
)
def test_file_names(name: str, ok: bool) -> None:
    if ok:
        assert validate_file_name(name) == name
    else:
        with pytest.raises(ValueError):
            validate_file_name(name)
    assert parse_root("ab" * 32) == bytes([0xAB]) * 32 and parse_root("xyz") is None


def test_qcow2_backing_name_is_read_from_the_header() -> None:
    name = b"base.qcow2"
    head = bytearray(512)
    head[:4] = b"QFI\xfb"
    head[8:16] = (100).to_bytes(8, "big")
    head[16:20] = len(name).to_bytes(4, "big")
    head[100 : 100 + len(name)] = name
    assert qcow2_backing_name(bytes(head)) == "base.qcow2"
    assert qcow2_backing_name(b"\0" * 512) is None


def test_bitmap() -> None:
    bm = Bitmap(10)
    assert bm.set(9) and not bm.set(9) and 9 in bm and 8 not in bm
    assert Bitmap(10, bm.to_bytes()).count == 1
    assert Bitmap(10, b"\xff\xff").count == 10  # stray high bits are not chunks
    assert Bitmap.full(10).complete and Bitmap(0).complete
    with pytest.raises(ValueError):
        Bitmap(10, b"\x00")


# ------------------------------------------------------------------------- providers


def test_provider_records_speak_only_for_their_signer() -> None:
    ident = Identity.from_seed(b"p1")
    root = bytes(range(32))
    rec = provider_record(ident, root, "10.0.0.1", 7500, complete=True, seq=1, ttl_s=60.0)
    p = read_provider(rec)
    assert (p.node_id, p.port, p.complete) == (ident.node_id, 7500, True)
    forged = type(rec)(rec.name, rec.value, Identity.from_seed(b"p2").public, 1, 60.0, rec.sig)
    with pytest.raises(ProviderError, match="signature"):
        read_provider(forged)


def test_provider_table_orders_withdraws_and_expires() -> None:
    ident, other = Identity.from_seed(b"a"), Identity.from_seed(b"b")
    root = bytes(32)
    table = ProviderTable(max_ttl_s=100.0, max_records=10)

    def rec(i: Identity, seq: int, ttl: float = 60.0) -> object:
        return provider_record(i, root, "h", 1, complete=True, seq=seq, ttl_s=ttl)

    assert table.put(rec(ident, 2), now=0.0)
    assert not table.put(rec(ident, 1), now=0.0)  # older than held
    assert table.put(rec(other, 1), now=0.0) and len(table.get(root, 1.0, 10)) == 2
    assert table.put(rec(ident, 3, ttl=0.0), now=1.0)  # withdrawn at once
    assert [read_provider(r).node_id for r in table.get(root, 1.0, 10)] == [other.node_id]
    assert table.get(root, 61.0, 10) == [] and table.expire(61.0) == 1 and len(table) == 0


# ------------------------------------------------------------------------- eviction


def test_eviction_is_lru_between_watermarks_and_spares_pins() -> None:
    files = [
        StoredFile(b"a", 30, last_used=1.0, pinned=True),
        StoredFile(b"b", 30, last_used=2.0, pinned=False),
        StoredFile(b"c", 30, last_used=3.0, pinned=False),
    ]
    assert choose_victims(files, 5, capacity=100, high=0.95, low=0.7) == ([], True)
    victims, fits = choose_victims(files, 20, capacity=100, high=0.95, low=0.8)
    assert victims == [b"b"] and fits  # 110 > 95: the oldest unpinned goes, 80 <= 80
    victims, fits = choose_victims(files, 20, capacity=100, high=0.95, low=0.7)
    assert victims == [b"b", b"c"] and fits  # 80 > 70: the next one goes too
    victims, fits = choose_victims(files, 40, capacity=100, high=0.95, low=0.5)
    assert victims == [b"b", b"c"] and fits
    victims, fits = choose_victims(files, 80, capacity=100, high=0.95, low=0.5)
    assert b"a" not in victims and not fits  # the pinned file stays, so it does not fit
    assert choose_victims(files, 10**12, capacity=0, high=0.9, low=0.8) == ([], True)


# ------------------------------------------------------------------------- swarm


def _swarm(n: int, **kw: object) -> Swarm:
    cfg = FilesConfig()
    args = dict(per_peer=cfg.per_peer_inflight, total=cfg.total_inflight, ban_after=3)
    args.update(kw)
    return Swarm(Bitmap(n), random.Random(1), **args)  # type: ignore[arg-type]


def _bits(n: int, held: list[int]) -> Bitmap:
    bm = Bitmap(n)
    for i in held:
        bm.set(i)
    return bm


def test_slots_nearest_first_bounded_per_peer_and_in_total() -> None:
    s = _swarm(100, per_peer=4, total=10)
    s.add_peer(1, 0.010, None)
    s.add_peer(2, 0.001, None)
    s.add_peer(3, None, None)
    s.add_peer(4, 0.005, _bits(100, []))  # holds nothing we need
    assert s.slots() == {2: 4, 1: 4, 3: 2}


def test_assign_takes_the_rarest_chunk_and_never_twice() -> None:
    s = _swarm(4)
    s.add_peer(1, 0.001, None)
    s.add_peer(2, 0.001, _bits(4, [0, 1, 2]))
    s.add_peer(3, 0.001, _bits(4, [0, 1]))
    assert s.assign(1) == 3  # only peer 1 holds chunk 3
    assert s.assign(2) == 2  # rarest of what peer 2 holds, and not in flight
    got = {s.assign(3), s.assign(3)}
    assert got == {0, 1} and s.assign(3) is None
    s.release(3, 0)
    assert s.assign(1) == 0


def test_a_peer_with_three_bad_chunks_is_banned_and_its_chunks_freed() -> None:
    s = _swarm(8, ban_after=3)
    s.add_peer(1, 0.001, None)
    s.add_peer(2, 0.002, None)
    chunks = [s.assign(1) for _ in range(4)]
    assert None not in chunks
    assert not s.on_chunk(1, chunks[0], ok=False)
    assert not s.on_chunk(1, chunks[1], ok=False)
    assert s.on_chunk(1, chunks[2], ok=False)  # banned now
    assert s.banned() == [1] and 1 not in s.slots() and s.assign(1) is None
    fetched = set()
    while (i := s.assign(2)) is not None:
        fetched.add(i)
        s.on_chunk(2, i, ok=True)
    assert s.done and chunks[3] in fetched and s.bad_chunks == 3 and s.verified == 8
    s.add_peer(1, 0.001, None)  # found again: still banned
    assert s.banned() == [1]


def test_single_source_uses_one_complete_provider_one_chunk_at_a_time() -> None:
    s = _swarm(8, per_peer=1, total=1, max_peers=1, complete_only=True)
    s.add_peer(1, 0.001, _bits(8, [0, 1, 2]))  # partial: not a source
    s.add_peer(2, 0.002, None)
    s.add_peer(3, 0.003, None)
    assert s.slots() == {2: 1}
    assert s.assign(2) is not None and s.assign(2) is None and s.assign(3) is None


def test_resumed_swarm_never_assigns_a_chunk_it_holds() -> None:
    have = _bits(16, list(range(0, 16, 2)))
    s = Swarm(have, random.Random(5), per_peer=4, total=16, ban_after=3)
    s.add_peer(1, 0.001, None)
    got = []
    while (i := s.assign(1)) is not None or s.inflight:
        if i is None:
            break
        got.append(i)
        s.on_chunk(1, i, ok=True)
    assert sorted(got) == list(range(1, 16, 2)) and s.done


def test_drop_peer_returns_its_chunks() -> None:
    s = _swarm(4)
    s.add_peer(1, 0.001, None)
    s.add_peer(2, 0.002, _bits(4, [0, 1, 2, 3]))
    taken = [s.assign(1), s.assign(1)]
    s.drop_peer(1)
    assert 1 not in s.peers and s.inflight == 0
    assert {s.assign(2) for _ in range(4)} >= set(taken)
