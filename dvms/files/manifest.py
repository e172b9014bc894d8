"""Content addressing: a file is described by its manifest, and the SHA-256 of the
manifest's canonical encoding is the file's *root*.

::

    manifest = {v: 1, size, chunk: chunk size, hashes: SHA-256 of each chunk (concatenated),
                format: "raw" | "qcow2" | ..., backing: root of its backing file or null}
    root     = SHA-256(canonical CBOR of the manifest)

A fetcher that knows a root accepts a manifest only if it hashes to that root, and a
chunk only if it hashes to the manifest's entry, so no peer can slip in other bytes.
Chunks are ``chunk`` bytes except the last (``size`` may be 0: no chunks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = [
    "HASH_BYTES",
    "Manifest",
    "ManifestError",
    "chunk_count",
    "parse_root",
    "validate_file_name",
]

HASH_BYTES = 32
MANIFEST_VERSION = 1
#: Formats a manifest may name (what ``qemu-img`` would call them; "raw" for any file).
FORMATS = ("raw", "qcow2", "iso", "kernel", "initrd")


class ManifestError(ValueError):
    """A manifest is malformed or does not match its root; the message says why."""


def chunk_count(size: int, chunk: int) -> int:
    return (size + chunk - 1) // chunk


def parse_root(text: str) -> bytes | None:
    """A root written as 64 hex digits, else None."""
    if len(text) != 2 * HASH_BYTES:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    chunk: int
    #: SHA-256 of each chunk, in order.
    hashes: tuple[bytes, ...]
    format: str = "raw"
    #: Root of the qcow2 backing file, if any.
    backing: bytes | None = None

    def __post_init__(self) -> None:
        if self.size < 0 or self.chunk < 1:
            raise ManifestError("manifest: size must be >= 0 and chunk >= 1")
        if len(self.hashes) != chunk_count(self.size, self.chunk):
            raise ManifestError(
                f"manifest: {len(self.hashes)} chunk hashes for "
                f"{chunk_count(self.size, self.chunk)} chunks"
            )
        if any(len(h) != HASH_BYTES for h in self.hashes):
            raise ManifestError("manifest: a chunk hash is not 32 bytes")
        if self.format not in FORMATS:
            raise ManifestError(f"manifest: unknown format {self.format!r}")
        if self.backing is not None and len(self.backing) != HASH_BYTES:
            raise ManifestError("manifest: backing root is not 32 bytes")

    @property
    def chunks(self) -> int:
        return len(self.hashes)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index`` in the file."""
        if not 0 <= index < self.chunks:
            raise IndexError(f"chunk {index} of {self.chunks}")
        offset = index * self.chunk
        return offset, min(self.chunk, self.size - offset)

    def check_chunk(self, index: int, data: bytes) -> bool:
        """True if ``data`` is chunk ``index``: its length and its hash."""
        return (
            len(data) == self.span(index)[1]
            and hashlib.sha256(data).digest() == (self.hashes[index])
        )

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": MANIFEST_VERSION,
            "size": self.size,
            "chunk": self.chunk,
            "hashes": b"".join(self.hashes),
            "format": self.format,
            "backing": self.backing,
        }
        return cbor2.dumps(body, canonical=True)

    @property
    def root(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes, root: bytes | None = None) -> Manifest:
        """The manifest in ``data``; with ``root``, only if ``data`` hashes to it."""
        if root is not None and hashlib.sha256(data).digest() != root:
            raise ManifestError("manifest does not match its root")
        try:
            body = cbor2.loads(data)
        except Exception as exc:
            raise ManifestError(f"manifest: not CBOR ({exc})") from None
        if not isinstance(body, dict) or body.get("v") != MANIFEST_VERSION:
            raise ManifestError("manifest: not a version 1 manifest")
        size, chunk, hashes = body.get("size"), body.get("chunk"), body.get("hashes")
        fmt, backing = body.get("format"), body.get("backing")
        if not (isinstance(size, int) and isinstance(chunk, int) and isinstance(hashes, bytes)):
            raise ManifestError("manifest: size, chunk and hashes have wrong types")
        if len(hashes) % HASH_BYTES or not isinstance(fmt, str):
            raise ManifestError("manifest: malformed hashes or format")
        if backing is not None and not isinstance(backing, bytes):
            raise ManifestError("manifest: malformed backing root")
        split = tuple(hashes[i : i + HASH_BYTES] for i in range(0, len(hashes), HASH_BYTES))
        return cls(size, chunk, split, fmt, backing)


def detect_format(head: bytes) -> str:
    """The format of a file from its first bytes: qcow2 by its magic, else raw."""
    return "qcow2" if head[:4] == b"QFI\xfb" else "raw"


def qcow2_backing_name(head: bytes) -> str | None:
    """The backing file name a qcow2 header names (``head``: its first 64 KiB), if any."""
    if len(head) < 20 or head[:4] != b"QFI\xfb":
        return None
    offset = int.from_bytes(head[8:16], "big")
    size = int.from_bytes(head[16:20], "big")
    if offset == 0 or size == 0 or offset + size > len(head):
        return None
    return head[offset : offset + size].decode(errors="replace")


#: Longest file name accepted.
MAX_FILE_NAME = 128
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./")


def validate_file_name(name: str) -> str:
    """A file name (``file add --name``, ``file:NAME``): 1 to 128 characters from
    ``A-Z a-z 0-9 - _ . /``, not starting with ``-``, ``.`` or ``/``, no ``..`` part,
    and not 64 hex digits (that is a root). Raises ``ValueError`` naming the problem."""
    if not name or len(name) > MAX_FILE_NAME:
        raise ValueError(f"file name {name!r}: must be 1 to {MAX_FILE_NAME} characters")
    bad = next((c for c in name if c not in _NAME_CHARS), None)
    if bad is not None:
        raise ValueError(f"file name {name!r}: character {bad!r} not allowed")
    if name[0] in "-./" or ".." in name.split("/"):
        raise ValueError(f"file name {name!r}: must not start with - . / or hold a .. part")
    if parse_root(name) is not None:
        raise ValueError(f"file name {name!r}: 64 hex digits are a root, not a name")
    return name
