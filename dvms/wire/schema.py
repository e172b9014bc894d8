"""Declarative wire schemas for peer messages.

A message is a frozen dataclass whose fields are annotated with the types below; at
registration the codec compiles one encoder and one validating decoder per class from the
annotations, so adding a message means writing its dataclass and nothing else.

Supported field types (anything else is a programming error, raised at registration):

- ``int``, ``float``, ``bool``, ``str``, ``bytes``
- an ``IntEnum`` (sent as its int; decoded to the member, any other value refused)
- ``Annotated[int, Range(lo, hi)]``, ``Annotated[str | bytes | tuple, MaxLen(n)]``
- ``Annotated[int, IdBytes(n)]``: an unsigned integer sent as exactly ``n`` big-endian bytes
  (node ids and keys: compact, and CBOR bignums are avoided)
- ``tuple[T, ...]`` (sent as a CBOR array), ``T | None``
- another registered *record* dataclass (sent as a CBOR array of its fields)

Peer input is untrusted: the decoder checks every type, length and range and raises
``SchemaError`` with the path of the offending field. It never raises anything else for
bad input.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = ["IdBytes", "MaxLen", "Range", "SchemaError", "compile_record", "encoded_size"]


class SchemaError(ValueError):
    """A decoded value does not match its schema (a peer error, never our bug)."""


@dataclass(frozen=True, slots=True)
class Range:
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class MaxLen:
    n: int


@dataclass(frozen=True, slots=True)
class IdBytes:
    n: int


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]

#: Strings and byte strings without an explicit MaxLen are capped here (bytes).
DEFAULT_MAX_LEN = 4096
#: Arrays without an explicit MaxLen are capped here (items).
DEFAULT_MAX_ITEMS = 256


def _fail(path: str, what: str) -> typing.NoReturn:
    raise SchemaError(f"{path}: {what}")


def _scalar(kind: type, meta: list[Any]) -> tuple[Encoder, Decoder]:
    rng = next((m for m in meta if isinstance(m, Range)), None)
    maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_LEN)
    idb = next((m.n for m in meta if isinstance(m, IdBytes)), None)
    if kind is int and idb is not None:
        return _id_codec(idb)
    if isinstance(kind, type) and issubclass(kind, enum.IntEnum):
        return _int_enum_codec(kind)
    if kind is bool:

        def dec_bool(v: Any, path: str) -> bool:
            if type(v) is not bool:
                _fail(path, "expected a boolean")
            return v

        return _identity, dec_bool
    if kind is int:
        lo, hi = (rng.lo, rng.hi) if rng else (-(2**63), 2**64 - 1)

        def dec_int(v: Any, path: str) -> int:
            if type(v) is not int:
                _fail(path, "expected an integer")
            if not lo <= v <= hi:
                _fail(path, f"integer {v} outside [{lo}, {hi}]")
            return v

        return _identity, dec_int
    if kind is float:
        lo, hi = (rng.lo, rng.hi) if rng else (-math.inf, math.inf)

        def dec_float(v: Any, path: str) -> float:
            if type(v) not in (float, int) or type(v) is bool:
                _fail(path, "expected a number")
            f = float(v)
            if not math.isfinite(f) or not lo <= f <= hi:
                _fail(path, f"number {v!r} not finite or outside [{lo}, {hi}]")
            return f

        return _identity, dec_float
    if kind in (str, bytes):

        def dec_bytes(v: Any, path: str) -> Any:
            if type(v) is not kind:
                _fail(path, f"expected {kind.__name__}")
            if len(v) > maxlen:
                _fail(path, f"length {len(v)} exceeds {maxlen}")
            return v

        return _identity, dec_bytes
    raise TypeError(f"unsupported wire type {kind!r}")


def _identity(v: Any) -> Any:
    return v


def _int_enum_codec(kind: type[enum.IntEnum]) -> tuple[Encoder, Decoder]:
    members = {int(m): m for m in kind}

    def dec_enum(v: Any, path: str) -> enum.IntEnum:
        if type(v) is not int:
            _fail(path, "expected an integer")
        member = members.get(v)
        if member is None:
            _fail(path, f"{v} is not a {kind.__name__}")
        return member

    return int, dec_enum


def _id_codec(n: int) -> tuple[Encoder, Decoder]:
    limit = 1 << (8 * n)

    def enc(v: int) -> bytes:
        return v.to_bytes(n, "big")

    def dec(v: Any, path: str) -> int:
        if type(v) is not bytes or len(v) != n:
            _fail(path, f"expected {n} bytes")
        x = int.from_bytes(v, "big")
        assert x < limit
        return x

    return enc, dec


def _tuple_codec(item: Any, meta: list[Any]) -> tuple[Encoder, Decoder]:
    maxn = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_ITEMS)
    ienc, idec = _compile_type(item)
    plain = ienc is _identity

    def enc(v: tuple[Any, ...]) -> list[Any]:
        return list(v) if plain else [ienc(x) for x in v]

    def dec(v: Any, path: str) -> tuple[Any, ...]:
        if type(v) is not list:
            _fail(path, "expected an array")
        if len(v) > maxn:
            _fail(path, f"{len(v)} items exceed {maxn}")
        return tuple(idec(x, f"{path}[{i}]") for i, x in enumerate(v))

    return enc, dec


def _optional_codec(inner: Any) -> tuple[Encoder, Decoder]:
    ienc, idec = _compile_type(inner)

    def enc(v: Any) -> Any:
        return None if v is None else ienc(v)

    def dec(v: Any, path: str) -> Any:
        return None if v is None else idec(v, path)

    return enc, dec


def _compile_type(tp: Any) -> tuple[Encoder, Decoder]:
    meta: list[Any] = []
    if typing.get_origin(tp) is typing.Annotated:
        tp, *meta = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `T | None` unions are supported, got {tp!r}")
        return _optional_codec(args[0] if not meta else typing.Annotated[args[0], *meta])
    if origin is tuple:
        params = typing.get_args(tp)
        if len(params) != 2 or params[1] is not Ellipsis:
            raise TypeError(f"only tuple[T, ...] is supported, got {tp!r}")
        return _tuple_codec(params[0], meta)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return compile_record(tp)
    return _scalar(tp, meta)


_RECORDS: dict[type, tuple[Encoder, Decoder]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """The field annotations of ``cls``, evaluated. A class compiled by mypyc (the
    optional build of ``dvms.accel``) keeps only erased runtime types (``tuple``, no
    ``Annotated`` limits), so its annotations are read back from its module's source
    (which the build's digest ties to the compiled code) and evaluated in the module's
    namespace, exactly as for the interpreted class."""
    if not hasattr(cls, "__mypyc_attrs__"):
        return typing.get_type_hints(cls, include_extras=True)
    from dvms.accel import source_annotations

    written = source_annotations(cls)
    proxy = types.new_class(
        cls.__name__,
        exec_body=lambda ns: ns.update(__annotations__=written, __module__=cls.__module__),
    )
    return typing.get_type_hints(proxy, include_extras=True)


def compile_record(cls: type) -> tuple[Encoder, Decoder]:
    """Return (encode, decode) for a dataclass: it travels as an array of its fields."""
    if cls in _RECORDS:
        return _RECORDS[cls]
    hints = _type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    codecs = [_compile_type(hints[name]) for name in fields]
    encs = [c[0] for c in codecs]
    decs = [c[1] for c in codecs]
    n = len(fields)
    name = cls.__name__

    def enc(obj: Any) -> list[Any]:
        return [e(getattr(obj, f)) for e, f in zip(encs, fields, strict=True)]

    def dec(v: Any, path: str = "") -> Any:
        here = f"{path}.{name}" if path else name
        if type(v) is not list or len(v) != n:
            _fail(here, f"expected an array of {n} fields")
        vals = [d(x, f"{here}.{f}") for d, x, f in zip(decs, v, fields, strict=True)]
        try:
            return cls(*vals)
        except (ValueError, TypeError) as exc:  # __post_init__ checks of the class
            _fail(here, str(exc))

    _RECORDS[cls] = (enc, dec)
    return enc, dec


def encoded_size(record: Any) -> int:
    """Bytes of a dataclass record's CBOR body on the wire (without an envelope)."""
    return len(cbor2.dumps(compile_record(type(record))[0](record)))
