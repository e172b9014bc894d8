"""Kademlia wire messages (frozen dataclasses; the codec is compiled from annotations).

Requests and their responses::

    Ping()                 -> Pong(coord)
    FindNode(target)       -> Nodes(contacts, coord)
    FindValue(key)         -> Value(records, contacts, coord)
    Store(record)          -> Stored(ok, coord)
    Leave(at, public, sig) -> Pong(coord)          (the sender stops; see ``Leave``)

Every response carries the responder's Vivaldi coordinate (``coord``, the wire form of
``dvms.vivaldi.Coordinate``; empty when the responder runs without coordinates), so RTT
samples ride on the overlay's own round trips. Ids and keys are 160-bit integers sent as
20 bytes. Type codes 1-31 belong to the overlay; other layers register their own range.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Annotated

from dvms.wire.envelope import MessageRegistry
from dvms.wire.schema import IdBytes, MaxLen, Range

__all__ = [
    "OVERLAY_MESSAGES",
    "Contact",
    "FindNode",
    "FindValue",
    "Leave",
    "Nodes",
    "Ping",
    "Pong",
    "Record",
    "Store",
    "Stored",
    "Value",
    "register_overlay_messages",
]

NodeId = Annotated[int, IdBytes(20)]
Coord = Annotated[tuple[float, ...], MaxLen(24)]
Host = Annotated[str, MaxLen(255)]
Port = Annotated[int, Range(0, 65535)]

#: Most contacts in one reply (k = 20 by default; the cap leaves room for k up to 40).
MAX_CONTACTS = 40


@dataclass(frozen=True, slots=True)
class Contact:
    node_id: NodeId
    host: Host
    port: Port

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"bad contact host {self.host!r}")


@dataclass(frozen=True, slots=True)
class Record:
    """A signed DHT record. ``key`` = SHA-1(name); the validator registered for the
    name's prefix decides whether it is acceptable and which of two versions wins."""

    name: Annotated[str, MaxLen(256)]
    value: Annotated[bytes, MaxLen(4096)]
    publisher: Annotated[bytes, MaxLen(32)]
    seq: Annotated[int, Range(0, 2**63 - 1)]
    ttl_s: Annotated[float, Range(0.0, 30 * 86400.0)]
    sig: Annotated[bytes, MaxLen(64)]


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    coord: Coord = ()


@dataclass(frozen=True, slots=True)
class FindNode:
    target: NodeId


@dataclass(frozen=True, slots=True)
class Nodes:
    contacts: Annotated[tuple[Contact, ...], MaxLen(MAX_CONTACTS)]
    coord: Coord = ()


@dataclass(frozen=True, slots=True)
class FindValue:
    key: NodeId


@dataclass(frozen=True, slots=True)
class Value:
    records: Annotated[tuple[Record, ...], MaxLen(4)]
    contacts: Annotated[tuple[Contact, ...], MaxLen(MAX_CONTACTS)]
    coord: Coord = ()


@dataclass(frozen=True, slots=True)
class Store:
    record: Record


@dataclass(frozen=True, slots=True)
class Stored:
    ok: bool
    coord: Coord = ()


@dataclass(frozen=True, slots=True)
class Leave:
    """The sender is stopping cleanly: receivers drop it from their routing tables and
    remember it as left (not failed) until they hear from it again. Signed by the
    sender's node key (``Identity.sign_leave`` in ``records.py``): ``public`` is its Ed25519
    key, whose SHA-1 is the sender's id, and ``sig`` signs ``at``, the sender's wall
    clock when it left (seconds since the epoch), so no other member can forge it."""

    at: Annotated[float, Range(0.0, 2.0**40)]
    public: Annotated[bytes, MaxLen(32)]
    sig: Annotated[bytes, MaxLen(64)]


#: Type codes of the overlay's messages.
OVERLAY_MESSAGES: dict[int, type] = {
    1: Ping,
    2: Pong,
    3: FindNode,
    4: Nodes,
    5: FindValue,
    6: Value,
    7: Store,
    8: Stored,
    9: Leave,
}

REQUESTS = (Ping, FindNode, FindValue, Store, Leave)
RESPONSES = (Pong, Nodes, Value, Stored)


def register_overlay_messages(registry: MessageRegistry) -> MessageRegistry:
    for code, cls in OVERLAY_MESSAGES.items():
        registry.register(code, cls)
    return registry


@functools.lru_cache(maxsize=65536)
def ip_group(host: str) -> str | None:
    """The diversity group of an address: /24 for public IPv4, /48 for public IPv6, None
    (no limit) for loopback, private, link-local and non-IP (simulated) hosts."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not ip.is_global:
        return None
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
