"""The one envelope every peer datagram travels in.

Layout of a datagram (bytes)::

    +----------------------+--------------------------------------------------------+
    | tag: 32 bytes        | payload: CBOR [version, type, sender, rid, ts, body]   |
    +----------------------+--------------------------------------------------------+

- ``tag`` = HMAC-SHA256(cluster key, payload). Checked first, in constant time, so
  unauthenticated input is never parsed.
- ``version`` (int): ``WIRE_VERSION``; anything else is dropped as ``bad_version``.
- ``type`` (int): message type code from the ``MessageRegistry``.
- ``sender`` (20 bytes): the sender's node id.
- ``rid`` (uint64): request id. A request carries a fresh random rid; its response echoes it.
- ``ts`` (float, seconds): the sender's clock when sending. Receivers drop datagrams whose
  ``ts`` is further than ``replay_window_s`` from their own clock (``stale``), and remember
  (sender, type, rid, ts) for twice that window to drop exact replays (``replayed``), in a
  memory of at most ``replay_entries`` (``replay.py``: full, the oldest is forgotten and
  datagrams as old are dropped, ``replay_horizon``). Nodes of a cluster therefore need
  clocks within ``replay_window_s`` of each other (NTP is plenty).
- ``body``: the message's fields as a CBOR array (see schema.py), validated per type.

Every failure is counted per reason in ``WireCodec.drops`` and the datagram is dropped;
``decode`` never raises for peer input.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from dataclasses import dataclass
from typing import Any

import cbor2

from dvms.wire.replay import ReplayMemory
from dvms.wire.schema import SchemaError, compile_record

__all__ = [
    "DROP_REASONS",
    "ID_BYTES",
    "TAG_BYTES",
    "WIRE_VERSION",
    "Decoded",
    "MessageRegistry",
    "WireCodec",
    "WireConfig",
]

WIRE_VERSION = 1
TAG_BYTES = 32
ID_BYTES = 20
_RID_MAX = 2**64 - 1

#: Every reason a datagram can be dropped for, in the order they are checked.
DROP_REASONS = (
    "oversized",
    "truncated",
    "bad_mac",
    "malformed",
    "bad_version",
    "unknown_type",
    "schema",
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


class WireCodec:
    """Encode and authenticate outgoing messages; check and decode incoming datagrams."""

    def __init__(
        self, key: bytes, registry: MessageRegistry, config: WireConfig | None = None
    ) -> None:
        if len(key) < 16:
            raise ValueError("cluster key too short")
        self._key = key
        self.registry = registry
        self.config = config or WireConfig()
        self.drops: Counter[str] = Counter()
        self.accepted = 0
        #: Replay memory: (sender, type, rid, ts) of the datagrams accepted recently.
        self.replay = ReplayMemory(2 * self.config.replay_window_s, self.config.replay_entries)

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def encode(self, msg: Any, *, sender: int, rid: int, now: float) -> bytes:
        code, body = self.registry.encode(msg)
        payload = cbor2.dumps(
            [WIRE_VERSION, code, sender.to_bytes(ID_BYTES, "big"), rid, float(now), body]
        )
        data = self._tag(payload) + payload
        if len(data) > self.config.max_datagram:
            raise ValueError(
                f"{type(msg).__name__} encodes to {len(data)} bytes, over the "
                f"{self.config.max_datagram}-byte datagram limit"
            )
        return data

    def decode(self, data: bytes, *, now: float) -> Decoded | None:
        """Return the decoded message, or None after counting why it was dropped."""
        got = self._parse(data, now)
        if isinstance(got, str):
            self.drops[got] += 1
            return None
        self.accepted += 1
        return got

    def _parse(self, data: bytes, now: float) -> Decoded | str:
        """The decoded message, or why the datagram is dropped."""
        reason = self._check_frame(data)
        if reason:
            return reason
        try:
            frame = cbor2.loads(data[TAG_BYTES:])
        except Exception:  # cbor2 raises several types on garbage; all mean the same
            return "malformed"
        if type(frame) is not list or len(frame) != 6:
            return "malformed"
        version, code, sender, rid, ts, body = frame
        if version != WIRE_VERSION:
            return "bad_version"
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
        if not abs(now - ts) <= self.config.replay_window_s:
            return "stale"
        # ts is part of the key: one-way messages (keep-alives, Dissolve) all carry rid 0,
        # and keying on (sender, type, rid) alone dropped every one after the first as a
        # "replay" for two windows; an exact replay repeats ts too and is still caught.
        replay = self.replay.check(sender, code, rid, ts, now)
        if replay is not None:
            return replay
        sender_id = int.from_bytes(sender, "big")
        return Decoded(sender_id, rid, ts, msg)

    def _check_frame(self, data: bytes) -> str | None:
        if len(data) > self.config.max_datagram:
            return "oversized"
        if len(data) <= TAG_BYTES:
            return "truncated"
        if not hmac.compare_digest(data[:TAG_BYTES], self._tag(data[TAG_BYTES:])):
            return "bad_mac"
        return None
