"""The file store of one node, under its state dir, addressed by root::

    files/objects/<root>        a complete file (renamed here once every chunk is in)
    files/objects/<root>.mf     its manifest
    files/partial/<root>        a file being fetched: preallocated to its full size,
                                chunks written at their offsets (no second copy)
    files/partial/<root>.bits   which chunks are in (``dvms.files.Bitmap``), written after
                                each chunk's data, so a restarted daemon resumes
    files/partial/<root>.mf     its manifest
    files/index.json            names this node knows, pins, last use of each root
    files/objects/NAME -> ROOT  a qcow2 file's backing file, by the name in its header

Space is checked before anything is written: the store's capacity (evicting unpinned
files least-recently-used between the watermarks) and the disk's free space; the data
file is then preallocated (``posix_fallocate``), so a full disk is an error at the start,
never a silently short file. Blocking calls: the service runs them in a worker thread.

Who reads the files: QEMU runs as its own user (``libvirt-qemu`` on Debian) and opens the
kernel, initrd, cdrom and disks a VM names. A complete file is therefore readable by all
(``OBJECT_MODE``), and the state dir, ``files`` and ``objects`` let others through without
letting them list (``TRAVERSE``): a file is reached only by its root, 64 hex digits.
Files being fetched stay private (``partial``, 0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvms.files import Bitmap, FilesConfig, Manifest, ManifestError, StoredFile, choose_victims
from dvms.files.manifest import detect_format, parse_root, qcow2_backing_name

__all__ = ["Partial", "Store", "StoreError"]

COPY_BLOCK = 1024 * 1024
#: Bytes of a file read to find its format and a qcow2 backing file name.
HEADER_BYTES = 64 * 1024
#: Backing files followed from one qcow2 file (qemu's own limit is far higher; a chain
#: this long is a mistake).
MAX_BACKING_DEPTH = 16


class StoreError(Exception):
    """The store cannot do what was asked (no space, no such file); says why."""


@dataclass(slots=True)
class Partial:
    manifest: Manifest
    root: bytes
    fd: int
    bits_fd: int
    have: Bitmap
    #: chunks already held when this transfer (re)started here
    resumed: int


#: Mode of a complete file (QEMU's user reads it).
OBJECT_MODE = 0o644
#: Bits added to the directories above the complete files: others may pass, not list.
TRAVERSE = 0o011


def _let_through(d: Path) -> None:
    with contextlib.suppress(OSError):  # not ours to change: the operator's choice
        mode = d.stat().st_mode & 0o7777
        if mode & TRAVERSE != TRAVERSE:
            os.chmod(d, mode | TRAVERSE)


class Store:
    def __init__(self, state_dir: Path, config: FilesConfig, clock: Any) -> None:
        """``clock()``: seconds, for least-recently-used order (wall clock: survives
        restarts)."""
        self.config = config
        self.clock = clock
        self.dir = state_dir / "files"
        self.objects = self.dir / "objects"
        self.partial = self.dir / "partial"
        for d in (self.dir, self.objects, self.partial):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (state_dir, self.dir, self.objects):
            _let_through(d)
        for f in self.objects.iterdir():  # files completed by an earlier version
            if not f.is_symlink() and f.is_file() and f.stat().st_mode & 0o777 != OBJECT_MODE:
                with contextlib.suppress(OSError):
                    os.chmod(f, OBJECT_MODE)
        self._lock = threading.Lock()
        self._index: dict[str, Any] = self._load_index()

    # -- index ---------------------------------------------------------------------------

    def _load_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / "index.json").read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        for key in ("names", "pins", "used"):
            if not isinstance(data.get(key), dict):
                data[key] = {}
        return data

    def _save_index(self) -> None:
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(self._index, sort_keys=True))
        os.replace(tmp, self.dir / "index.json")

    def names(self) -> dict[str, str]:
        with self._lock:
            return dict(self._index["names"])

    def set_name(self, name: str, root: bytes) -> None:
        with self._lock:
            self._index["names"][name] = root.hex()
            self._save_index()

    def touch(self, root: bytes) -> None:
        with self._lock:
            self._index["used"][root.hex()] = self.clock()
            self._save_index()

    def pin(self, root: bytes, holder: str) -> None:
        with self._lock:
            holders = set(self._index["pins"].get(root.hex(), []))
            holders.add(holder)
            self._index["pins"][root.hex()] = sorted(holders)
            self._save_index()

    def unpin(self, root: bytes, holder: str) -> None:
        with self._lock:
            holders = set(self._index["pins"].get(root.hex(), [])) - {holder}
            if holders:
                self._index["pins"][root.hex()] = sorted(holders)
            else:
                self._index["pins"].pop(root.hex(), None)
            self._save_index()

    def pins(self, root: bytes) -> list[str]:
        with self._lock:
            return list(self._index["pins"].get(root.hex(), []))

    # -- reading -------------------------------------------------------------------------

    def path(self, root: bytes) -> Path:
        return self.objects / root.hex()

    def complete(self, root: bytes) -> bool:
        return self.path(root).exists() and (self.objects / f"{root.hex()}.mf").exists()

    def manifest(self, root: bytes) -> Manifest | None:
        for d in (self.objects, self.partial):
            try:
                return Manifest.decode((d / f"{root.hex()}.mf").read_bytes(), root)
            except (OSError, ManifestError):
                continue
        return None

    def manifest_bytes(self, root: bytes) -> bytes | None:
        m = self.manifest(root)
        return m.encode() if m is not None else None

    def bitmap(self, root: bytes) -> Bitmap | None:
        """The chunks held of ``root``: all of a complete file, the persisted bitmap of a
        partial one, None if neither."""
        m = self.manifest(root)
        if m is None:
            return None
        if self.complete(root):
            return Bitmap.full(m.chunks)
        try:
            return Bitmap(m.chunks, (self.partial / f"{root.hex()}.bits").read_bytes())
        except (OSError, ValueError):
            return None

    def read_chunk(self, root: bytes, index: int) -> bytes | None:
        """Chunk ``index`` of ``root`` if held (complete or partial), else None."""
        m = self.manifest(root)
        if m is None or not 0 <= index < m.chunks:
            return None
        offset, length = m.span(index)
        if self.complete(root):
            path = self.path(root)
        else:
            have = self.bitmap(root)
            if have is None or index not in have:
                return None
            path = self.partial / root.hex()
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """Every file held, complete or partial: root, size, chunks held, pins."""
        out = []
        with self._lock:
            pins, used = dict(self._index["pins"]), dict(self._index["used"])
        for d, complete in ((self.objects, True), (self.partial, False)):
            for mf in sorted(d.glob("*.mf")):
                root = bytes.fromhex(mf.stem)
                m = self.manifest(root)
                have = self.bitmap(root)
                if m is None or have is None or (complete and not self.complete(root)):
                    continue
                out.append(
                    {
                        "root": root.hex(),
                        "size": m.size,
                        "format": m.format,
                        "complete": complete,
                        "chunks": m.chunks,
                        "chunks_held": have.count,
                        "pinned": pins.get(root.hex(), []),
                        "last_used": used.get(root.hex(), 0.0),
                        "path": str(self.path(root)) if complete else "",
                    }
                )
        return out

    def partial_roots(self) -> list[bytes]:
        return [bytes.fromhex(mf.stem) for mf in sorted(self.partial.glob("*.mf"))]

    # -- space ---------------------------------------------------------------------------

    def _make_room(self, size: int, path: Path) -> None:
        """Evict what the watermarks say, then check the capacity and the disk."""
        cfg = self.config
        files = [
            StoredFile(
                bytes.fromhex(e["root"]),
                e["size"],
                float(e["last_used"]),
                bool(e["pinned"]),
                e["complete"],
            )
            for e in self.entries()
        ]
        victims, fits = choose_victims(
            files,
            size,
            capacity=cfg.capacity_bytes,
            high=cfg.high_watermark,
            low=cfg.low_watermark,
        )
        for root in victims:
            self.delete(root)
        if not fits:
            pinned = sum(f.size for f in files if f.pinned or not f.complete)
            raise StoreError(
                f"file store full: {size} bytes do not fit in its capacity of "
                f"{cfg.capacity_bytes} bytes ({pinned} bytes pinned or being fetched)"
            )
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        if free < size + cfg.reserve_bytes:
            raise StoreError(
                f"not enough disk space in {path}: {size} bytes needed plus "
                f"{cfg.reserve_bytes} reserved, {free} free"
            )

    def _preallocate(self, fd: int, size: int, path: Path) -> None:
        if size <= 0:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise StoreError(
                f"cannot reserve {size} bytes in {path.parent}: {exc.strerror or exc}"
            ) from None

    # -- adding a local file ---------------------------------------------------------------

    def add(self, src: Path, chunk: int, name: str = "", *, depth: int = 0) -> Manifest:
        """Hash ``src`` into a manifest and copy it into the store (once: a root already
        held is not copied again). A qcow2 file's backing file (named in its header,
        relative to its directory) is added first, and its root goes in the manifest."""
        try:
            size = src.stat().st_size
            with open(src, "rb") as f:
                head = f.read(HEADER_BYTES)
                f.seek(0)
                hashes = []
                while block := f.read(chunk):
                    hashes.append(hashlib.sha256(block).digest())
        except OSError as exc:
            raise StoreError(f"cannot read {src}: {exc.strerror or exc}") from None
        fmt = detect_format(head)
        backing = None
        bname = qcow2_backing_name(head) if fmt == "qcow2" else None
        if bname:
            if depth >= MAX_BACKING_DEPTH:
                raise StoreError(f"{src}: more than {MAX_BACKING_DEPTH} backing files deep")
            bpath = Path(bname) if os.path.isabs(bname) else src.parent / bname
            if not bpath.is_file():
                raise StoreError(f"{src}: its backing file {bname} is not found ({bpath})")
            backing = self.add(bpath, chunk, depth=depth + 1).root
        m = Manifest(size, chunk, tuple(hashes), fmt, backing)
        root = m.root
        if not self.complete(root):
            self._copy_in(src, m)
        self.link_backing(root)
        if name:
            self.set_name(name, root)
        self.touch(root)
        return m

    def _copy_in(self, src: Path, m: Manifest) -> None:
        root, size = m.root, m.size
        self._make_room(size, self.objects)
        tmp = self.objects / f"{root.hex()}.tmp"
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                self._preallocate(fout.fileno(), size, tmp)
                shutil.copyfileobj(fin, fout, COPY_BLOCK)
                fout.flush()
                os.fsync(fout.fileno())
            if tmp.stat().st_size != size:
                raise StoreError(f"{src} changed while it was added")
            self._verify(tmp, m)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot copy {src} into the store: {exc}") from None
        except StoreError:
            tmp.unlink(missing_ok=True)
            raise
        (self.objects / f"{root.hex()}.mf").write_bytes(m.encode())
        os.chmod(tmp, OBJECT_MODE)
        os.replace(tmp, self.path(root))

    def link_backing(self, root: bytes) -> str:
        """Make the backing file a complete qcow2 file names findable where qemu looks
        (beside it, under the name in its header): a symlink to the backing root. Only
        for a plain relative name; returns it ("" if none was made)."""
        m = self.manifest(root)
        if m is None or m.backing is None or not self.complete(root):
            return ""
        with open(self.path(root), "rb") as f:
            bname = qcow2_backing_name(f.read(HEADER_BYTES)) or ""
        plain = bname and "/" not in bname and not bname.startswith(".")
        if not plain or bname.endswith((".mf", ".tmp")) or parse_root(bname) is not None:
            return ""
        link = self.objects / bname
        with contextlib.suppress(FileExistsError):
            os.symlink(m.backing.hex(), link)
        return bname

    def _verify(self, path: Path, m: Manifest) -> None:
        with open(path, "rb") as f:
            for i in range(m.chunks):
                if not m.check_chunk(i, f.read(m.chunk)):
                    raise StoreError(f"{path}: chunk {i} changed while it was added")

    # -- fetching --------------------------------------------------------------------------

    def begin(self, m: Manifest) -> Partial:
        """Open (or resume) the partial file of ``m``: space checked and preallocated
        first."""
        root = m.root
        data = self.partial / root.hex()
        bits = self.partial / f"{root.hex()}.bits"
        have = None
        if (self.partial / f"{root.hex()}.mf").exists():
            have = self.bitmap(root)
        if have is None or not data.exists() or data.stat().st_size != m.size:
            self._make_room(m.size, self.partial)
            self._drop_partial(root)
            have = Bitmap(m.chunks)
            fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                self._preallocate(fd, m.size, data)
            except StoreError:
                os.close(fd)
                data.unlink(missing_ok=True)
                raise
            bits.write_bytes(have.to_bytes())
            (self.partial / f"{root.hex()}.mf").write_bytes(m.encode())
        else:
            fd = os.open(data, os.O_RDWR)
        bits_fd = os.open(bits, os.O_RDWR)
        return Partial(m, root, fd, bits_fd, have, have.count)

    def write_chunk(self, p: Partial, index: int, data: bytes) -> None:
        """Write a verified chunk at its offset, then mark it in the bitmap."""
        offset, _ = p.manifest.span(index)
        os.pwrite(p.fd, data, offset)
        if self.config.sync_chunks:
            os.fdatasync(p.fd)
        p.have.set(index)
        at, value = p.have.byte_of(index)
        os.pwrite(p.bits_fd, bytes([value]), at)

    def finish(self, p: Partial) -> Path:
        """Every chunk is in: the file moves into place."""
        assert p.have.complete
        os.fsync(p.fd)
        self.close(p)
        hexroot = p.root.hex()
        os.replace(self.partial / f"{hexroot}.mf", self.objects / f"{hexroot}.mf")
        os.chmod(self.partial / hexroot, OBJECT_MODE)
        os.replace(self.partial / hexroot, self.path(p.root))
        (self.partial / f"{hexroot}.bits").unlink(missing_ok=True)
        self.touch(p.root)
        return self.path(p.root)

    def close(self, p: Partial) -> None:
        """Close ``p``'s files, once (a second close of a reused fd number would close
        another file of the daemon)."""
        fds, p.fd, p.bits_fd = (p.fd, p.bits_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _drop_partial(self, root: bytes) -> None:
        for suffix in ("", ".bits", ".mf"):
            (self.partial / f"{root.hex()}{suffix}").unlink(missing_ok=True)

    def delete(self, root: bytes) -> bool:
        """Remove ``root`` (complete and partial copies); True if there was one."""
        found = False
        for path in (
            self.path(root),
            self.objects / f"{root.hex()}.mf",
            *(self.partial / f"{root.hex()}{s}" for s in ("", ".bits", ".mf")),
        ):
            if path.exists():
                found = True
                path.unlink(missing_ok=True)
        with self._lock:
            self._index["used"].pop(root.hex(), None)
            self._save_index()
        return found
