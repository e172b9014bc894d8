"""Control-plane messages of the cluster keyring and of revocations (type codes
96-102; ``dvms.runtime.messages`` registers them with the node's)::

    KeysQuery()                       -> KeysReply(host, primary, keys, lacking, error)
    KeysChange(op, key_id, wrapped)   -> KeysReply                 install | use | remove
    RevokeNotice(revocation)          -> RevokeAck(host, ok, error)   dvms node revoke
    RevocationsQuery()                -> RevocationsReply(revocations)  on join

A key to install travels sealed (``WrappedKey``: ChaCha20-Poly1305 under a key derived
from each key of the sender's ring), never in the clear: the envelope authenticates
datagrams but does not hide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dvms.wire.keys import KEY_ID_BYTES, MAX_KEYS
from dvms.wire.schema import MaxLen

__all__ = [
    "KEY_MESSAGES",
    "KEY_REQUESTS",
    "KEY_RESPONSES",
    "KeysChange",
    "KeysQuery",
    "KeysReply",
    "RevocationsQuery",
    "RevocationsReply",
    "RevokeAck",
    "RevokeNotice",
    "WrappedKey",
]

KeyId = Annotated[bytes, MaxLen(KEY_ID_BYTES)]
KeyIds = Annotated[tuple[KeyId, ...], MaxLen(MAX_KEYS)]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    #: the key of the sender's ring this copy is sealed under
    key_id: KeyId
    nonce: Annotated[bytes, MaxLen(12)]
    #: the 32-byte key and its 16-byte authentication tag
    sealed: Annotated[bytes, MaxLen(48)]


@dataclass(frozen=True, slots=True)
class KeysQuery:
    pass


@dataclass(frozen=True, slots=True)
class KeysChange:
    #: "install", "use" or "remove"
    op: Annotated[str, MaxLen(16)]
    #: the key id the change is about
    key_id: KeyId
    #: install: the key, sealed under each key of the sender's ring
    wrapped: Annotated[tuple[WrappedKey, ...], MaxLen(MAX_KEYS)] = ()


@dataclass(frozen=True, slots=True)
class KeysReply:
    host: Annotated[str, MaxLen(128)]
    primary: KeyId
    #: every key id installed, the primary first
    keys: KeyIds
    #: key ids of datagrams this node received and could not check (it lacks them)
    lacking: KeyIds = ()
    #: why a change was refused here ("" if it was not)
    error: Annotated[str, MaxLen(256)] = ""


@dataclass(frozen=True, slots=True)
class RevokeNotice:
    #: an encoded revocation (``dvms/wire/revocation.py``), checked by the receiver
    revocation: Annotated[bytes, MaxLen(256)]


@dataclass(frozen=True, slots=True)
class RevokeAck:
    host: Annotated[str, MaxLen(128)]
    ok: bool
    error: Annotated[str, MaxLen(256)] = ""


@dataclass(frozen=True, slots=True)
class RevocationsQuery:
    pass


@dataclass(frozen=True, slots=True)
class RevocationsReply:
    revocations: Annotated[tuple[Annotated[bytes, MaxLen(256)], ...], MaxLen(256)]


KEY_MESSAGES: dict[int, type] = {
    96: KeysQuery,
    97: KeysChange,
    98: KeysReply,
    99: RevokeNotice,
    100: RevokeAck,
    101: RevocationsQuery,
    102: RevocationsReply,
}
KEY_REQUESTS = (KeysQuery, KeysChange, RevokeNotice, RevocationsQuery)
KEY_RESPONSES = (KeysReply, RevokeAck, RevocationsReply)
