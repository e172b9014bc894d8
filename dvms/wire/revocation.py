"""Revoking one node: a record signed by an operator key that every node honours.

An operator key is an Ed25519 key pair (``dvms keygen --operator``); its public half is
in every node's configuration (``operator_keys``), its private half stays with the
operator. ``dvms node revoke NODE-ID`` signs a ``Revocation`` of that node id; a node
that holds it (checked against its configured operator keys) drops the revoked node's
datagrams (counted as ``revoked``), ignores the DHT records it published, and takes it
out of its routing table, so no partition recruits it.

Encoding (CBOR): ``["dvms-revoke-v1", node_id (20 bytes), issued (s since the epoch),
operator public key (32 bytes), signature (64 bytes)]``; the signature covers the
first three items. Revocations are also kept in the DHT under ``revoked/<node id hex>``
(``dvms/runtime/services/revocations.py``), published by the node that received the
command. Pure: no clock, no I/O (``generate_operator_key`` draws from the OS).
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "REVOKED_PREFIX",
    "Revocation",
    "RevocationError",
    "decode_revocation",
    "generate_operator_key",
    "operator_public_key",
    "sign_revocation",
]

REVOKED_PREFIX = "revoked/"
_TAG = "dvms-revoke-v1"
_ID_BYTES = 20


class RevocationError(ValueError):
    """A revocation is malformed or not signed by a configured operator key."""


@dataclass(frozen=True, slots=True)
class Revocation:
    node_id: int
    #: when the operator signed it, seconds since the epoch (shown, not enforced)
    issued: float
    operator: bytes
    sig: bytes

    def encode(self) -> bytes:
        node = self.node_id.to_bytes(_ID_BYTES, "big")
        return cbor2.dumps([_TAG, node, self.issued, self.operator, self.sig])

    def verify(self, operator_keys: frozenset[bytes]) -> None:
        """Raise RevocationError unless an operator key of ``operator_keys`` signed it."""
        if self.operator not in operator_keys:
            raise RevocationError(
                f"revocation of {self.node_id:040x} is signed by operator key "
                f"{self.operator.hex()[:16]}..., which this node's operator_keys do not list"
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.operator).verify(
                self.sig, _signed(self.node_id, self.issued)
            )
        except (InvalidSignature, ValueError):
            raise RevocationError(f"revocation of {self.node_id:040x}: bad signature") from None


def _signed(node_id: int, issued: float) -> bytes:
    return cbor2.dumps([_TAG, node_id.to_bytes(_ID_BYTES, "big"), issued])


def sign_revocation(private_key: bytes, node_id: int, issued: float) -> Revocation:
    """A revocation of ``node_id`` signed with the operator's private key (32 bytes)."""
    if not 0 <= node_id < 1 << (8 * _ID_BYTES):
        raise RevocationError(f"node id {node_id:x} is not a 160-bit id")
    key = Ed25519PrivateKey.from_private_bytes(private_key)
    sig = key.sign(_signed(node_id, issued))
    return Revocation(node_id, issued, key.public_key().public_bytes_raw(), sig)


def decode_revocation(data: bytes) -> Revocation:
    """Parse (not verify) an encoded revocation; RevocationError if malformed."""
    try:
        item = cbor2.loads(data)
    except Exception:  # cbor2 raises several types on garbage
        raise RevocationError("revocation: not CBOR") from None
    if type(item) is not list or len(item) != 5 or item[0] != _TAG:
        raise RevocationError("revocation: not a dvms revocation")
    _, node, issued, operator, sig = item
    if type(node) is not bytes or len(node) != _ID_BYTES or type(issued) is not float:
        raise RevocationError("revocation: malformed node id or time")
    if type(operator) is not bytes or len(operator) != 32:
        raise RevocationError("revocation: malformed operator key")
    if type(sig) is not bytes or len(sig) != 64:
        raise RevocationError("revocation: malformed signature")
    return Revocation(int.from_bytes(node, "big"), issued, operator, sig)


def generate_operator_key() -> tuple[bytes, bytes]:
    """A new operator key pair: (private key, public key), 32 bytes each."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def operator_public_key(private_key: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()
