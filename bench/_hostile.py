"""A hostile peer that holds the cluster key: builds signed datagrams of every message
type, valid or wrong in chosen ways. Shared by ``bench/fuzz.py`` and the flood tests
(tests/hardening/test_flood.py).

Bodies are built from the message schemas themselves (``dvms.wire.schema``
annotations), so a message added to a registry is fuzzed without a change here, and
signed through the daemon's own ``WireCodec`` (a registry that passes a ready body
through), so the envelope is exactly what a daemon sends.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import random
import types
import typing
from dataclasses import dataclass
from typing import Any

import cbor2

from dvms.overlay.messages import register_overlay_messages
from dvms.partition.messages import register_partition_messages
from dvms.runtime.messages import register_node_messages
from dvms.wire.envelope import ID_BYTES, WIRE_VERSION, MessageRegistry, WireCodec, WireConfig
from dvms.wire.schema import DEFAULT_MAX_ITEMS, DEFAULT_MAX_LEN, IdBytes, MaxLen, Range

__all__ = ["Hostile", "Raw", "daemon_registry"]


def daemon_registry(registry: MessageRegistry | None = None) -> MessageRegistry:
    """Every message type a daemon accepts, with its code (registered in ``registry``)."""
    return register_node_messages(
        register_partition_messages(register_overlay_messages(registry or MessageRegistry()))
    )


@dataclass(frozen=True, slots=True)
class Raw:
    """A body sent as it is, under type ``code``."""

    code: int
    body: Any


class _RawRegistry(MessageRegistry):
    def encode(self, msg: Any) -> tuple[int, list[Any]]:
        if isinstance(msg, Raw):
            return msg.code, msg.body
        return super().encode(msg)


@functools.cache
def _hints(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


@functools.cache
def _parts(tp: Any) -> tuple[Any, tuple[Any, ...], Any, tuple[Any, ...]]:
    """(bare type, its ``Annotated`` metadata, its origin, its args), memoised."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        tp, *rest = typing.get_args(tp)
        meta = tuple(rest)
    return tp, meta, typing.get_origin(tp), typing.get_args(tp)


class Hostile:
    """Datagrams signed with ``key``, as from node ``sender`` (random by default)."""

    def __init__(self, key: bytes, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random(1)
        self.registry = daemon_registry(_RawRegistry())
        #: type code -> message class
        self.codes: dict[int, type] = {
            code: cls for code, (cls, _, _) in self.registry._by_code.items()
        }
        self.codec = WireCodec(key, self.registry, WireConfig(max_datagram=1 << 24))
        self.clock = 0.0

    # -- bodies from the schemas -------------------------------------------------------

    def value(self, tp: Any, depth: int = 0) -> Any:
        """A valid wire value of annotated type ``tp``."""
        rng = self.rng
        tp, meta, origin, targs = _parts(tp)
        if origin in (typing.Union, types.UnionType):
            inner = next(a for a in targs if a is not type(None))
            if rng.random() < 0.3:
                return None
            return self.value(typing.Annotated[inner, *meta] if meta else inner, depth)
        if origin is tuple:
            item = targs[0]
            n = rng.randint(0, 2 if depth < 2 else 0)
            return [self.value(item, depth + 1) for _ in range(n)]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return [self.value(t, depth + 1) for _, t in _hints(tp)]
        rng_meta = next((m for m in meta if isinstance(m, Range)), None)
        idb = next((m.n for m in meta if isinstance(m, IdBytes)), None)
        if tp is int and idb is not None:
            return rng.getrandbits(8 * idb).to_bytes(idb, "big")
        if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
            return int(rng.choice(list(tp)))
        if tp is bool:
            return rng.random() < 0.5
        if tp is int:
            lo, hi = (int(rng_meta.lo), int(rng_meta.hi)) if rng_meta else (0, 2**32)
            return rng.randint(lo, min(hi, lo + 1000))
        if tp is float:
            lo = rng_meta.lo if rng_meta else 0.0
            return float(lo) + rng.random()
        if tp is str:
            return rng.choice(["a", "vm1", "node2", "ns", "x-1"])
        if tp is bytes:
            return rng.randbytes(rng.randint(0, 32))
        raise TypeError(f"no value for {tp!r}")

    def body(self, cls: type) -> list[Any]:
        return [self.value(t) for _, t in _hints(cls)]

    def wrong(self, tp: Any) -> Any:
        """A value of the wrong type, or out of its limits, for annotated type ``tp``."""
        rng = self.rng
        tp, meta, _, _ = _parts(tp)
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), None)
        choices: list[Any] = [
            None,
            True,
            -1,
            2**70,
            -(2**70),
            1.5,
            float("nan"),
            float("inf"),
            "x",
            b"x",
            [],
            [1, "a", None],
            {"k": 1},
            cbor2.CBORTag(99, 1),
        ]
        if typing.get_origin(tp) is tuple:
            choices.append([0] * ((maxlen or DEFAULT_MAX_ITEMS) + 1))
        if tp in (str, bytes):
            n = (maxlen or DEFAULT_MAX_LEN) + 1
            choices.append("y" * n if tp is str else b"y" * n)
        return rng.choice(choices)

    def mutated_body(self, cls: type) -> list[Any]:
        """A body with one field (possibly nested) of the wrong type or size."""
        rng = self.rng
        hints = _hints(cls)
        body = self.body(cls)
        if not hints:
            return [self.wrong(int)]
        i = rng.randrange(len(hints))
        tp = hints[i][1]
        bare = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp
        if isinstance(bare, type) and dataclasses.is_dataclass(bare) and rng.random() < 0.5:
            body[i] = self.mutated_body(bare)
        else:
            body[i] = self.wrong(tp)
        if rng.random() < 0.1:  # the wrong number of fields
            body = body[:-1] if body and rng.random() < 0.5 else [*body, 0]
        return body

    # -- datagrams ---------------------------------------------------------------------

    def sign(
        self, msg: Any, *, now: float, sender: int | None = None, rid: int | None = None
    ) -> bytes:
        """``msg`` (a message, or a ``Raw`` body) in a signed envelope stamped ``now``;
        a fresh rid each time (no replay), a random sender unless given."""
        rng = self.rng
        self.clock = max(self.clock + 1e-6, now)  # distinct stamps: never a replay
        return self.codec.encode(
            msg,
            sender=rng.getrandbits(8 * ID_BYTES) if sender is None else sender,
            rid=rng.getrandbits(64) if rid is None else rid,
            now=self.clock,
        )

    def envelope(self, fields: list[Any]) -> bytes:
        """Arbitrary envelope ``fields`` (version, type, sender, rid, ts, body), signed
        with the primary key: the version goes in the header byte (a value that is no
        byte becomes 0), the rest is the CBOR payload (a non-list is the payload)."""
        if isinstance(fields, list) and fields:
            version, rest = fields[0], fields[1:]
        else:
            version, rest = WIRE_VERSION, fields
        byte = version if isinstance(version, int) and 0 <= version <= 255 else 0
        payload = cbor2.dumps(rest, default=lambda enc, v: enc.encode(repr(v)))
        return self.signed(bytes([byte]), payload)

    def signed(self, version: bytes, payload: bytes) -> bytes:
        """``payload`` behind a version-``version`` header, tagged with the primary key."""
        ring = self.codec.keys
        kid = ring.primary_id
        key = ring.get(kid)
        assert key is not None
        header = version + kid + kid
        return header + self.codec._tag(key, header, payload) + payload

    def valid_fields(self, now: float) -> list[Any]:
        code = self.rng.choice(list(self.codes))
        return [
            WIRE_VERSION,
            code,
            self.rng.randbytes(ID_BYTES),
            self.rng.getrandbits(64),
            now,
            self.body(self.codes[code]),
        ]
