"""The one envelope every peer datagram travels in.

Layout of a datagram (bytes), version 2::

    +---------+------------+-------------+------------+-------------------------------------+
    | version | key id: 4  | primary: 4  | tag: 32    | payload: CBOR [type, sender, rid,   |
    | 1 byte  |            |             |            |                ts, body]            |
    +---------+------------+-------------+------------+-------------------------------------+

- ``version`` (1 byte): ``WIRE_VERSION``; anything else is dropped as ``bad_version``
  (a version 1 datagram began with its tag, so it is refused here too).
- ``key id``: which key of the sender's keyring signed the datagram (``keys.key_id``,
  never the key). A key id the receiver does not hold is dropped as ``unknown_key``
  and remembered per source address (``unknown_keys``) so the node can say which key
  it lacks.
- ``primary``: the key id of the sender's primary key. A node signs with its own
  primary key, except towards a peer whose primary it holds too: then with the peer's
  (so a node that missed a change of primary keeps hearing its peers as long as it holds
  any key still installed).
- A *key hint* is the header alone, key id ``NO_KEY`` (0x00000000, which no key
  has) and the sender's primary: what a node answers (rate-limited by its runner) to a
  datagram signed with a key it lacks, so the sender can say which key *it* lacks. It is
  not authenticated (it cannot be: the two share no key); it only ever feeds a log line
  and ``unknown_keys``, and it is smaller than what triggers it.
- ``tag`` = HMAC-SHA256(key, version || key id || primary || payload). Checked before
  the payload is parsed, in constant time, so unauthenticated input is never parsed.
- ``type`` (int): message type code from the ``MessageRegistry``.
- ``sender`` (20 bytes): the sender's node id.
- ``rid`` (uint64): request id. A request carries a fresh random rid; its response echoes it.
- ``ts`` (float, seconds): the sender's clock when sending. Receivers drop datagrams whose
  ``ts`` is further than ``replay_window_s`` from their own clock (``stale``), and remember
  (sender, type, rid, ts) for twice that window to drop exact replays (``replayed``), in a
  memory of at most ``replay_entries`` (``replay.py``: full, the oldest is forgotten and
  datagrams as old are dropped, ``replay_horizon``). Nodes of a cluster therefore need
  clocks within ``replay_window_s`` of each other (NTP is plenty). A stale datagram is
  authentic (its tag checked): ``last_stale`` keeps its sender and ``ts`` for the node
  to estimate that peer's clock offset and name it.
- ``body``: the message's fields as a CBOR array (see schema.py), validated per type.
- A sender in ``revoked`` (an operator revoked it: ``dvms/overlay/revocation.py``) is
  dropped as ``revoked``, whatever it sends.

Every failure is counted per reason in ``WireCodec.drops`` and the datagram is dropped;
``decode`` never raises for peer input.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import cbor2

from dvms.wire.keys import KEY_ID_BYTES, Keyring
from dvms.wire.replay import ReplayMemory
from dvms.wire.schema import SchemaError, compile_record

__all__ = [
    "DROP_REASONS",
    "HEADER_BYTES",
    "ID_BYTES",
    "NO_KEY",
    "TAG_BYTES",
    "WIRE_VERSION",
    "Decoded",
    "MessageRegistry",
    "StaleDatagram",
    "WireCodec",
    "WireConfig",
]

WIRE_VERSION = 2
TAG_BYTES = 32
#: version, signing key id, sender's primary key id: what precedes the tag.
HEADER_BYTES = 1 + 2 * KEY_ID_BYTES
ID_BYTES = 20
_RID_MAX = 2**64 - 1
_VERSION_BYTE = bytes([WIRE_VERSION])
#: The key id of a key hint (``Keyring`` refuses a key with this id).
NO_KEY = bytes(KEY_ID_BYTES)
#: Source addresses whose primary key id (or unknown key id) a codec remembers.
_PEER_MEMORY = 4096

#: Every reason a datagram can be dropped for, in the order they are checked.
DROP_REASONS = (
    "oversized",
    "key_hint",
    "truncated",
    "bad_version",
    "unknown_key",
    "bad_mac",
    "malformed",
    "unknown_type",
    "schema",
    "revoked",
    "stale",
    "replay_horizon",
    "replayed",
)


@dataclass(frozen=True, slots=True)
class WireConfig:
    """Wire limits. Defaults suit UDP on any LAN or WAN path (no IP fragmentation
    surprises beyond what 8 KiB implies; our largest message, a full NODES reply of 20
    contacts, is under 1.5 KiB)."""

    #: Largest datagram sent or accepted, bytes. Larger input is dropped unparsed.
    max_datagram: int = 8192
    #: Accepted clock difference between sender and receiver, seconds; also the replay
    #: memory (kept for twice this long).
    replay_window_s: float = 60.0
    #: Most datagrams the replay memory holds (``replay.py``; the daemon's:
    #: ``[limits] replay_entries``).
    replay_entries: int = 262144


class MessageRegistry:
    """Type code <-> message class, with compiled codecs. One registry per cluster
    protocol; every layer registers its messages with distinct codes."""

    def __init__(self) -> None:
        self._by_code: dict[int, tuple[type, Any, Any]] = {}
        self._by_cls: dict[type, tuple[int, Any]] = {}

    def register(self, code: int, cls: type) -> type:
        if code in self._by_code:
            raise ValueError(f"message code {code} already used by {self._by_code[code][0]}")
        enc, dec = compile_record(cls)
        self._by_code[code] = (cls, enc, dec)
        self._by_cls[cls] = (code, enc)
        return cls

    def encode(self, msg: Any) -> tuple[int, list[Any]]:
        code, enc = self._by_cls[type(msg)]
        return code, enc(msg)

    def decode(self, code: int, body: Any) -> Any:
        entry = self._by_code.get(code)
        if entry is None:
            raise KeyError(code)
        return entry[2](body, "")

    def __contains__(self, cls: type) -> bool:
        return cls in self._by_cls

    def classes(self) -> list[type]:
        return [entry[0] for entry in self._by_code.values()]


@dataclass(frozen=True, slots=True)
class Decoded:
    sender: int
    rid: int
    ts: float
    msg: Any


@dataclass(frozen=True, slots=True)
class StaleDatagram:
    """An authentic datagram dropped as ``stale``: who sent it, and its timestamp."""

    sender: int
    rid: int
    ts: float
    #: the receiver's clock when it arrived (the ``now`` of ``decode``)
    received: float


class WireCodec:
    """Encode and authenticate outgoing messages; check and decode incoming datagrams.

    ``keys``: a ``Keyring`` (shared with whoever changes it: the codec reads it at
    every datagram), or one key (a ring of one)."""

    def __init__(
        self,
        keys: bytes | Keyring,
        registry: MessageRegistry,
        config: WireConfig | None = None,
    ) -> None:
        if isinstance(keys, bytes):
            if len(keys) < 16:
                raise ValueError("cluster key too short")
            keys = Keyring([keys]) if len(keys) == 32 else _short_ring(keys)
        self.keys = keys
        self.registry = registry
        self.config = config or WireConfig()
        self.drops: Counter[str] = Counter()
        self.accepted = 0
        #: Why the last datagram ``decode`` refused was dropped.
        self.last_drop = ""
        #: Senders whose datagrams are dropped as ``revoked`` (authentic or not).
        self.revoked: set[int] = set()
        #: The last datagram dropped as ``stale`` (authentic: its tag was checked).
        self.last_stale: StaleDatagram | None = None
        #: Source address -> key id of the last datagram signed with a key we lack.
        self.unknown_keys: OrderedDict[Any, bytes] = OrderedDict()
        #: Source address -> the primary key id its last authentic datagram named.
        self._peer_primary: OrderedDict[Any, bytes] = OrderedDict()
        #: Replay memory: (sender, type, rid, ts) of the datagrams accepted recently.
        self.replay = ReplayMemory(2 * self.config.replay_window_s, self.config.replay_entries)

    @staticmethod
    def _tag(key: bytes, header: bytes, payload: bytes) -> bytes:
        return hmac.new(key, header + payload, hashlib.sha256).digest()

    def signing_key(self, dst: Any = None) -> bytes:
        """The key id a datagram to ``dst`` is signed with: ``dst``'s primary if this
        node holds it, else this node's primary."""
        ring = self.keys
        peer = self._peer_primary.get(dst) if dst is not None else None
        if peer is not None and peer in ring:
            return peer
        return ring.primary_id

    def encode(self, msg: Any, *, sender: int, rid: int, now: float, dst: Any = None) -> bytes:
        code, body = self.registry.encode(msg)
        payload = cbor2.dumps([code, sender.to_bytes(ID_BYTES, "big"), rid, float(now), body])
        ring = self.keys
        kid = self.signing_key(dst)
        key = ring.get(kid)
        assert key is not None
        header = _VERSION_BYTE + kid + ring.primary_id
        data = header + self._tag(key, header, payload) + payload
        if len(data) > self.config.max_datagram:
            raise ValueError(
                f"{type(msg).__name__} encodes to {len(data)} bytes, over the "
                f"{self.config.max_datagram}-byte datagram limit"
            )
        return data

    def key_hint(self) -> bytes:
        """The datagram telling a peer that signed with a key we lack our primary's id."""
        return _VERSION_BYTE + NO_KEY + self.keys.primary_id

    def decode(self, data: bytes, *, now: float, src: Any = None) -> Decoded | None:
        """Return the decoded message, or None after counting why it was dropped.
        ``src``: the source address (to remember which keys that peer uses)."""
        got = self._parse(data, now, src)
        if isinstance(got, str):
            self.drops[got] += 1
            self.last_drop = got
            return None
        self.accepted += 1
        return got

    def _parse(self, data: bytes, now: float, src: Any) -> Decoded | str:
        """The decoded message, or why the datagram is dropped."""
        reason = self._check_frame(data, src)
        if reason:
            return reason
        try:
            frame = cbor2.loads(data[HEADER_BYTES + TAG_BYTES :])
        except Exception:  # cbor2 raises several types on garbage; all mean the same
            return "malformed"
        if type(frame) is not list or len(frame) != 5:
            return "malformed"
        code, sender, rid, ts, body = frame
        if type(sender) is not bytes or len(sender) != ID_BYTES:
            return "malformed"
        if type(rid) is not int or not 0 <= rid <= _RID_MAX or type(ts) is not float:
            return "malformed"
        if type(code) is not int:
            return "malformed"
        try:
            msg = self.registry.decode(code, body)
        except KeyError:
            return "unknown_type"
        except SchemaError:
            return "schema"
        sender_id = int.from_bytes(sender, "big")
        if sender_id in self.revoked:
            return "revoked"
        if not abs(now - ts) <= self.config.replay_window_s:
            self.last_stale = StaleDatagram(sender_id, rid, ts, now)
            return "stale"
        # ts is part of the key: one-way messages (keep-alives, Dissolve) all carry rid 0,
        # and keying on (sender, type, rid) alone dropped every one after the first as a
        # "replay" for two windows; an exact replay repeats ts too and is still caught.
        replay = self.replay.check(sender, code, rid, ts, now)
        if replay is not None:
            return replay
        return Decoded(sender_id, rid, ts, msg)

    def _check_frame(self, data: bytes, src: Any) -> str | None:
        if len(data) > self.config.max_datagram:
            return "oversized"
        if (
            len(data) == HEADER_BYTES
            and data[0] == WIRE_VERSION
            and data[1 : 1 + KEY_ID_BYTES] == NO_KEY
        ):
            theirs = data[1 + KEY_ID_BYTES :]
            if src is not None and theirs not in self.keys:
                _bounded_put(self.unknown_keys, src, theirs)
            return "key_hint"
        if len(data) <= HEADER_BYTES + TAG_BYTES:
            return "truncated"
        if data[0] != WIRE_VERSION:
            return "bad_version"
        kid = data[1 : 1 + KEY_ID_BYTES]
        key = self.keys.get(kid)
        if key is None:
            if src is not None:
                _bounded_put(self.unknown_keys, src, kid)
            return "unknown_key"
        header = data[:HEADER_BYTES]
        tag = data[HEADER_BYTES : HEADER_BYTES + TAG_BYTES]
        if not hmac.compare_digest(tag, self._tag(key, header, data[HEADER_BYTES + TAG_BYTES :])):
            return "bad_mac"
        if src is not None:
            _bounded_put(self._peer_primary, src, header[1 + KEY_ID_BYTES :])
            self.unknown_keys.pop(src, None)
        return None


def _bounded_put(memory: OrderedDict[Any, bytes], src: Any, kid: bytes) -> None:
    """Remember ``kid`` for ``src``, forgetting the least recently heard address when
    ``_PEER_MEMORY`` are held (state per unknown sender stays bounded)."""
    if memory.get(src) == kid:
        memory.move_to_end(src)
        return
    memory[src] = kid
    memory.move_to_end(src)
    if len(memory) > _PEER_MEMORY:
        memory.popitem(last=False)


def _short_ring(key: bytes) -> Keyring:
    """A key of 16-31 or more than 32 bytes (tests, simulations that pass any secret):
    stretched to 32 bytes with SHA-256, so the ring holds a proper key."""
    return Keyring([hashlib.sha256(key).digest()])
