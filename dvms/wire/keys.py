"""Cluster keys: 32 random bytes, stored hex-encoded in a file only its owner can read,
and the keyring a node authenticates its datagrams with.

Every peer datagram is authenticated with HMAC-SHA256 under one key of the sender's
keyring and names that key by its *key id* (``key_id``: the first 4 bytes of a SHA-256
of the key; it says nothing about the key itself). A node accepts a datagram signed
with any key of its ring and signs with its primary key (see envelope.py for the one
exception: a peer that names another primary it holds). Operators change keys on a
live cluster by installing a new key everywhere, making it the primary, then removing
the old one (``dvms keys``).

Key file format: one hex key per line, the primary first (a file of one line, as
``dvms keygen`` writes, is a ring of one key).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "KEY_BYTES",
    "KEY_ID_BYTES",
    "MAX_KEYS",
    "KeyFileError",
    "Keyring",
    "KeyringError",
    "format_key_id",
    "generate_key",
    "key_id",
    "load_key",
    "load_keyring",
    "parse_key_id",
    "write_key",
    "write_keyring",
    "write_private",
]

#: Length of a cluster key in bytes (HMAC-SHA256 block-size friendly, 256 bits).
KEY_BYTES = 32
#: Length of a key id in bytes (shown as 8 hex digits).
KEY_ID_BYTES = 4
#: Most keys one ring holds (a rotation needs two; the rest is slack for mistakes).
MAX_KEYS = 8
_ID_DOMAIN = b"dvms cluster key id\0"


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed; the message says which."""


class KeyringError(ValueError):
    """A keyring change refused (unknown key, removing the primary, ...); one line."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> bytes:
    """The short public name of ``key``: 4 bytes of SHA-256 over a fixed prefix and the
    key (a one-way function of a 256-bit random key: it reveals nothing usable)."""
    return hashlib.sha256(_ID_DOMAIN + key).digest()[:KEY_ID_BYTES]


def format_key_id(kid: bytes) -> str:
    return kid.hex()


def parse_key_id(text: str) -> bytes:
    """``text``: 8 hex digits. Raises KeyringError naming the problem."""
    try:
        kid = bytes.fromhex(text.strip())
    except ValueError:
        kid = b""
    if len(kid) != KEY_ID_BYTES:
        raise KeyringError(f"{text!r} is not a key id (8 hex digits, as `dvms keys list` shows)")
    return kid


class Keyring:
    """Several cluster keys, one of them primary. Pure data: no file, no clock."""

    def __init__(self, keys: Iterable[bytes], primary: bytes | None = None) -> None:
        self._keys: dict[bytes, bytes] = {}
        for k in keys:
            self._check(k)
            self._keys.setdefault(key_id(k), k)
        if not self._keys:
            raise KeyringError("a keyring needs at least one key")
        if len(self._keys) > MAX_KEYS:
            raise KeyringError(f"a keyring holds at most {MAX_KEYS} keys")
        first = next(iter(self._keys))
        self._primary = key_id(primary) if primary is not None else first
        if self._primary not in self._keys:
            raise KeyringError("the primary key is not in the ring")

    @staticmethod
    def _check(key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyringError(f"a cluster key is {KEY_BYTES} bytes, got {len(key)}")
        if key_id(key) == bytes(KEY_ID_BYTES):  # the envelope's key hints use this id
            raise KeyringError("this key's id is reserved: generate another key")

    @property
    def primary_id(self) -> bytes:
        return self._primary

    @property
    def primary(self) -> bytes:
        return self._keys[self._primary]

    def ids(self) -> list[bytes]:
        """Key ids, the primary first, then in installation order."""
        return [self._primary, *(k for k in self._keys if k != self._primary)]

    def get(self, kid: bytes) -> bytes | None:
        return self._keys.get(kid)

    def ordered_keys(self) -> list[bytes]:
        return [self._keys[k] for k in self.ids()]

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    # -- changes (each raises KeyringError and changes nothing, or changes the ring) --

    def install(self, key: bytes) -> bool:
        """Add ``key`` (not primary); False if it was installed already."""
        self._check(key)
        kid = key_id(key)
        if kid in self._keys:
            return False
        if len(self._keys) >= MAX_KEYS:
            raise KeyringError(
                f"the keyring is full ({MAX_KEYS} keys): remove one first (dvms keys remove)"
            )
        self._keys[kid] = key
        return True

    def use(self, kid: bytes) -> bool:
        """Make the installed key ``kid`` the primary; False if it was already."""
        if kid not in self._keys:
            raise KeyringError(f"key {format_key_id(kid)} is not installed here")
        changed = kid != self._primary
        self._primary = kid
        return changed

    def remove(self, kid: bytes) -> bool:
        """Remove key ``kid``; False if it was not installed. The primary is refused."""
        if kid == self._primary:
            raise KeyringError(
                f"key {format_key_id(kid)} is the primary key: make another key primary "
                "first (dvms keys use)"
            )
        return self._keys.pop(kid, None) is not None

    def to_text(self) -> str:
        return "".join(k.hex() + "\n" for k in self.ordered_keys())

    @classmethod
    def from_text(cls, text: str, *, where: str = "key file") -> Keyring:
        keys: list[bytes] = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                key = bytes.fromhex(line)
            except ValueError:
                raise KeyFileError(f"{where} line {n} is not hex-encoded") from None
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"{where} line {n} holds {len(key)} bytes, expected {KEY_BYTES}")
            keys.append(key)
        if not keys:
            raise KeyFileError(f"{where} holds 0 bytes, expected a {KEY_BYTES}-byte key")
        try:
            return cls(keys)
        except KeyringError as exc:
            raise KeyFileError(f"{where}: {exc}") from None


def write_private(p: Path, text: str) -> None:
    """Write ``text`` to ``p`` with mode 0600, atomically (a temporary file renamed)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(tmp, p)


def write_key(path: str | os.PathLike[str], key: bytes, *, force: bool = False) -> Path:
    """Write ``key`` hex-encoded to ``path`` with mode 0600. Refuses to overwrite unless
    ``force``: silently replacing a cluster key would cut a node off its cluster."""
    p = Path(path)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"a cluster key is {KEY_BYTES} bytes, got {len(key)}")
    if p.exists() and not force:
        raise KeyFileError(f"{p} already exists (use --force to replace it)")
    write_private(p, key.hex() + "\n")
    return p


def write_keyring(path: str | os.PathLike[str], ring: Keyring) -> Path:
    """Write ``ring`` to ``path`` (0600, atomically), the primary first."""
    p = Path(path)
    write_private(p, ring.to_text())
    return p


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        raise KeyFileError(
            f"cluster key file {p} does not exist (create one with `dvms keygen`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read cluster key file {p}: {exc.strerror}") from exc


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """The keyring in ``path`` (one key per line, the primary first)."""
    p = Path(path)
    return Keyring.from_text(_read(p), where=f"cluster key file {p}")


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The primary key of the key file ``path``."""
    return load_keyring(path).primary
