"""Signed DHT records: node identities, signatures, validators, local storage.

A node's identity is an Ed25519 key pair; its node id is SHA-1 of the public key, so an id
cannot be claimed without the key (S/Kademlia, libp2p). A record names its publisher by
public key and is signed over (name, value, seq, ttl). Replicas check the signature
before storing, readers check it again after fetching.

What a record *means* is up to a ``Validator`` registered for the name's prefix (``ns/``,
``vm/``, ``vjob/`` ... in later layers): it may refuse a record (wrong shape, writer not
allowed) and decides which of two versions wins (default: higher ``seq``, then the larger
signature, so every replica picks the same one).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dvms.overlay.messages import Leave, Record

__all__ = [
    "Identity",
    "RecordError",
    "RecordStore",
    "Validator",
    "ValidatorRegistry",
    "key_of",
    "node_id_of",
    "verify_leave",
]


class RecordError(ValueError):
    """A record failed validation; the message says why."""


def key_of(name: str) -> int:
    """The 160-bit DHT key of a record name."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest(), "big")


def node_id_of(public_key: bytes) -> int:
    return int.from_bytes(hashlib.sha1(public_key).digest(), "big")


def _signed_bytes(name: str, value: bytes, seq: int, ttl_s: float) -> bytes:
    return cbor2.dumps(["dvms-record-v1", name, value, seq, ttl_s])


class Identity:
    """A node's key pair. ``from_seed`` makes simulations deterministic."""

    __slots__ = ("_private", "node_id", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes_raw()
        self.node_id = node_id_of(self.public)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    @classmethod
    def from_rng(cls, rng: random.Random) -> Identity:
        return cls.from_seed(rng.getrandbits(256).to_bytes(32, "big"))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Identity:
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def sign_leave(self, at: float) -> Leave:
        """This node's notice that it leaves the overlay at wall time ``at``."""
        return Leave(at, self.public, self._private.sign(_leave_bytes(at)))

    def sign_record(self, name: str, value: bytes, *, seq: int, ttl_s: float) -> Record:
        sig = self._private.sign(_signed_bytes(name, value, seq, ttl_s))
        return Record(name=name, value=value, publisher=self.public, seq=seq, ttl_s=ttl_s, sig=sig)


def _leave_bytes(at: float) -> bytes:
    return cbor2.dumps(["dvms-leave-v1", at])


def verify_leave(msg: Leave, sender: int) -> bool:
    """Whether ``msg`` was signed by the key of node ``sender``."""
    if len(msg.public) != 32 or len(msg.sig) != 64 or node_id_of(msg.public) != sender:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(msg.public).verify(msg.sig, _leave_bytes(msg.at))
    except InvalidSignature:
        return False
    return True


#: Records whose signature was found valid, oldest first (emptied when full). The same
#: record reaches a node several times in a few seconds (its own put is checked before
#: it goes out and again when stored here, then every replica answers a read with it):
#: an Ed25519 check is ~50x the cost of the lookup. Only a record equal in every field,
#: signature included, is taken from here, so the answer is the one a check would give.
_VERIFIED: dict[Record, None] = {}
_VERIFIED_MAX = 16_384


def verify_signature(rec: Record) -> None:
    if rec in _VERIFIED:
        return
    if len(rec.publisher) != 32 or len(rec.sig) != 64:
        raise RecordError(f"record {rec.name!r}: malformed publisher key or signature")
    try:
        Ed25519PublicKey.from_public_bytes(rec.publisher).verify(
            rec.sig, _signed_bytes(rec.name, rec.value, rec.seq, rec.ttl_s)
        )
    except InvalidSignature:
        raise RecordError(f"record {rec.name!r}: bad signature") from None
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[rec] = None


@dataclass(frozen=True, slots=True)
class Validator:
    """Rules for the records whose name starts with ``prefix``."""

    prefix: str
    #: Extra check of the value (raise RecordError to refuse); signature is checked first.
    check: Callable[[Record], None] | None = None
    #: How many of the nodes closest to a record's key store it, and how far its lookups
    #: go; None = the overlay's k. Fewer for records their writer keeps rewriting.
    replicas: int | None = None

    def validate(self, rec: Record) -> None:
        verify_signature(rec)
        if self.check is not None:
            self.check(rec)

    @staticmethod
    def select(a: Record, b: Record) -> Record:
        """The version every replica keeps: higher seq, then the larger signature."""
        return a if (a.seq, a.sig) >= (b.seq, b.sig) else b


class ValidatorRegistry:
    """Validators by name prefix (longest prefix wins); names with no validator are
    refused, so a DHT cannot be used as free storage for arbitrary data."""

    def __init__(self, validators: list[Validator] | None = None) -> None:
        self._by_prefix: dict[str, Validator] = {}
        #: Node ids whose records are refused (revoked nodes: ``revocation.py``).
        self.revoked: set[int] = set()
        for v in validators or []:
            self.register(v)

    def register(self, validator: Validator) -> None:
        self._by_prefix[validator.prefix] = validator

    def for_name(self, name: str) -> Validator:
        best: Validator | None = None
        for prefix, v in self._by_prefix.items():
            if name.startswith(prefix) and (best is None or len(prefix) > len(best.prefix)):
                best = v
        if best is None:
            raise RecordError(f"record {name!r}: no validator for this name")
        return best

    def validate(self, rec: Record) -> Validator:
        v = self.for_name(rec.name)
        v.validate(rec)
        if self.revoked and node_id_of(rec.publisher) in self.revoked:
            raise RecordError(f"record {rec.name!r}: its publisher is revoked")
        return v


class RecordStore:
    """Records this node keeps as a replica, each with its local expiry time."""

    def __init__(self, validators: ValidatorRegistry, *, max_records: int, max_ttl_s: float):
        self.validators = validators
        self.max_records = max_records
        self.max_ttl_s = max_ttl_s
        self._items: dict[int, tuple[Record, float]] = {}
        self.refused = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: int, now: float) -> Record | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._items[key]
            return None
        return item[0]

    def put(self, rec: Record, now: float) -> bool:
        """Validate and keep ``rec`` unless a winning version is already held."""
        try:
            validator = self.validators.validate(rec)
        except RecordError:
            self.refused += 1
            return False
        key = key_of(rec.name)
        held = self.get(key, now)
        if held is not None and validator.select(held, rec) is held and held != rec:
            return False
        if held is None and len(self._items) >= self.max_records:
            self.expire(now)
            if len(self._items) >= self.max_records:
                self.refused += 1
                return False
        self._items[key] = (rec, now + min(rec.ttl_s, self.max_ttl_s))
        return True

    def records(self, prefix: str, now: float) -> list[Record]:
        """Every live record held here whose name starts with ``prefix`` (for services
        that look after the records their node replicates, e.g. unfinished vjobs)."""
        return [
            rec for rec, exp in self._items.values() if exp > now and rec.name.startswith(prefix)
        ]

    def expire(self, now: float) -> int:
        dead = [k for k, (_, exp) in self._items.items() if exp <= now]
        for k in dead:
            del self._items[k]
        return len(dead)

    def next_expiry(self) -> float | None:
        return min((exp for _, exp in self._items.values()), default=None)
