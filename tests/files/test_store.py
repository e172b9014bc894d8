"""The file store on disk: adding, preallocated partial files with their bitmap,
eviction between the watermarks that never removes a pinned file."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from dvms.files import FilesConfig, Manifest
from dvms.runtime.services.files_store import Store, StoreError

CHUNK = 64 * 1024


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _file(tmp: Path, name: str, size: int) -> Path:
    path = tmp / name
    path.write_bytes(os.urandom(size))
    return path


def _store(tmp: Path, **kw: object) -> Store:
    args: dict[str, object] = {"chunk_bytes": CHUNK, "reserve_bytes": 0, **kw}
    cfg = replace(FilesConfig(), **args)  # type: ignore[arg-type]
    return Store(tmp / "state", cfg, Clock())


def test_add_is_content_addressed_and_copied_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    src = _file(tmp_path, "a", 3 * CHUNK + 5)
    m = store.add(src, CHUNK, "img")
    assert m.chunks == 4 and store.complete(m.root)
    assert store.path(m.root).read_bytes() == src.read_bytes()
    assert store.add(src, CHUNK).root == m.root and store.names() == {"img": m.root.hex()}
    assert store.read_chunk(m.root, 3) == src.read_bytes()[3 * CHUNK :]


def test_partial_file_is_preallocated_and_resumes_from_its_bitmap(tmp_path: Path) -> None:
    src = _file(tmp_path, "a", 4 * CHUNK)
    data = src.read_bytes()
    m = _store(tmp_path / "other").add(src, CHUNK)
    store = _store(tmp_path)
    p = store.begin(m)
    assert (store.partial / m.root.hex()).stat().st_size == m.size
    store.write_chunk(p, 2, data[2 * CHUNK : 3 * CHUNK])
    store.close(p)
    assert store.read_chunk(m.root, 2) is not None and store.read_chunk(m.root, 1) is None
    again = _store(tmp_path).begin(m)  # a restarted daemon
    assert again.resumed == 1 and 2 in again.have
    for i in (0, 1, 3):
        store.write_chunk(again, i, data[i * CHUNK : (i + 1) * CHUNK])
    assert store.finish(again).read_bytes() == data
    assert store.complete(m.root) and store.partial_roots() == []


def test_eviction_never_removes_a_pinned_file(tmp_path: Path) -> None:
    store = _store(tmp_path, capacity_bytes=10 * CHUNK, high_watermark=0.9, low_watermark=0.5)
    pinned = store.add(_file(tmp_path, "p", 3 * CHUNK), CHUNK)
    store.pin(pinned.root, "ns/vm1")
    old = store.add(_file(tmp_path, "o", 3 * CHUNK), CHUNK)
    newer = store.add(_file(tmp_path, "n", 2 * CHUNK), CHUNK)
    latest = store.add(_file(tmp_path, "l", 3 * CHUNK), CHUNK)  # 11 > 9: evict to <= 5
    assert store.complete(pinned.root) and store.complete(latest.root)
    assert not store.complete(old.root) and not store.complete(newer.root)
    with pytest.raises(StoreError, match="file store full"):
        store.add(_file(tmp_path, "big", 8 * CHUNK), CHUNK)  # 3 pinned + 8 > 10
    assert store.complete(pinned.root)


def test_no_disk_space_is_an_error_before_anything_is_written(tmp_path: Path) -> None:
    store = _store(tmp_path, reserve_bytes=2**62)
    src = _file(tmp_path, "a", CHUNK)
    with pytest.raises(StoreError, match="not enough disk space"):
        store.add(src, CHUNK)
    m = Manifest.decode(_store(tmp_path / "o").add(src, CHUNK).encode())
    with pytest.raises(StoreError, match="not enough disk space"):
        store.begin(m)
    assert list(store.objects.iterdir()) == [] and list(store.partial.iterdir()) == []


def qcow2_with_backing(path: Path, backing: str, size: int = 4 * CHUNK) -> Path:
    """A file with a qcow2 header naming ``backing`` (only the header is qcow2-like; the
    store reads no further)."""
    head = bytearray(os.urandom(size))
    head[:4] = b"QFI\xfb"
    head[8:16] = (512).to_bytes(8, "big")
    head[16:20] = len(backing).to_bytes(4, "big")
    head[512 : 512 + len(backing)] = backing.encode()
    path.write_bytes(bytes(head))
    return path


def test_a_qcow2_file_brings_its_backing_files(tmp_path: Path) -> None:
    base = _file(tmp_path, "base.raw", 2 * CHUNK)
    mid = qcow2_with_backing(tmp_path / "mid.qcow2", "base.raw")
    top = qcow2_with_backing(tmp_path / "top.qcow2", "mid.qcow2")
    store = _store(tmp_path)
    m = store.add(top, CHUNK, "top")
    assert m.format == "qcow2" and m.backing is not None
    mid_m = store.manifest(m.backing)
    assert mid_m is not None and mid_m.backing is not None
    assert store.path(mid_m.backing).read_bytes() == base.read_bytes()
    # qemu finds each backing file beside its overlay, by the name in the header
    assert (store.objects / "mid.qcow2").resolve() == store.path(m.backing).resolve()
    assert (store.objects / "base.raw").read_bytes() == base.read_bytes()
    assert mid.exists()
    with pytest.raises(StoreError, match=r"backing file gone\.raw is not found"):
        store.add(qcow2_with_backing(tmp_path / "orphan.qcow2", "gone.raw"), CHUNK)


def test_the_held_summary_is_bounded_and_largest_first() -> None:
    """What a member tells its partition leaders it holds (image locality): the files
    with the most bytes held first, partial ones by their chunks, at most ``most``."""
    from dvms.runtime.services.files import held_images

    def entry(root: int, size: int, chunks: int, held: int) -> dict:
        return {"root": f"{root:064x}", "size": size, "chunks": chunks,
                "chunks_held": held, "complete": held == chunks}  # fmt: skip

    entries = [entry(1, 100, 10, 10), entry(2, 1000, 10, 5), entry(3, 50, 5, 0),
               entry(4, 400, 4, 4)]  # fmt: skip
    got = held_images(entries, 2)
    assert [(i.root[-1], i.held, i.size) for i in got] == [(2, 500, 1000), (4, 400, 400)]
    assert len(held_images(entries, 8)) == 3  # nothing held: not reported


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_complete_files_are_readable_by_the_hypervisors_user(tmp_path: Path) -> None:
    """QEMU runs as its own user and opens the kernel, initrd and disks a VM names in
    the store. With the state dir and the store private (0700) and files 0600, every
    `file:` image failed on a real host: "could not open kernel file ...: Permission
    denied". Complete files are 0644 under directories others may pass, not list; files
    being fetched stay private."""
    src = _file(tmp_path, "a", 2 * CHUNK)
    m = _store(tmp_path / "other").add(src, CHUNK)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)  # as the daemon makes it
    store = _store(tmp_path)
    for d in (state, store.dir, store.objects):
        assert _mode(d) & 0o011 == 0o011 and _mode(d) & 0o044 == 0, (d, oct(_mode(d)))
    assert _mode(store.partial) == 0o700
    added = store.add(_file(tmp_path, "b", CHUNK), CHUNK, "b")
    assert _mode(store.path(added.root)) == 0o644
    p = store.begin(m)
    assert _mode(store.partial / m.root.hex()) == 0o600
    data = src.read_bytes()
    for i in range(2):
        store.write_chunk(p, i, data[i * CHUNK : (i + 1) * CHUNK])
    assert _mode(store.finish(p)) == 0o644
    # a store written before: its complete files are opened up at the next start
    os.chmod(store.path(m.root), 0o600)
    _store(tmp_path)
    assert _mode(store.path(m.root)) == 0o644
