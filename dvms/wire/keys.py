"""Cluster keys: 32 random bytes, stored hex-encoded in a file only its owner can read.

Every peer datagram is authenticated with HMAC-SHA256 under this key (see envelope.py).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["KEY_BYTES", "KeyFileError", "generate_key", "load_key", "write_key"]

#: Length of a cluster key in bytes (HMAC-SHA256 block-size friendly, 256 bits).
KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed; the message says which."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key(path: str | os.PathLike[str], key: bytes, *, force: bool = False) -> Path:
    """Write ``key`` hex-encoded to ``path`` with mode 0600. Refuses to overwrite unless
    ``force``: silently replacing a cluster key would cut a node off its cluster."""
    p = Path(path)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"a cluster key is {KEY_BYTES} bytes, got {len(key)}")
    if p.exists() and not force:
        raise KeyFileError(f"{p} already exists (use --force to replace it)")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
    return p


def load_key(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        text = p.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(
            f"cluster key file {p} does not exist (create one with `dvms keygen`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read cluster key file {p}: {exc.strerror}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"cluster key file {p} is not hex-encoded") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"cluster key file {p} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key
