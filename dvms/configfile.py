"""Configuration files: TOML tables -> frozen dataclasses, checked against the annotations.

One loader serves every configuration file of dvms (the node TOML, simulator scenarios).
A table becomes an instance of a dataclass; each key is converted and checked by the
annotation of the field of the same name:

    bool, int, float, str       the TOML scalar (an integer is a valid float; no bools
                                where numbers are expected)
    Literal["a", "b"]           one of the listed strings
    X | None                    an X (TOML has no null: leave the key out for None)
    tuple[X, ...]               an array of X
    a dataclass                 a sub-table, converted the same way (recursively)
    Mapping[str, Any]           any table, kept as it is

Keys left out keep the value of ``base`` (a profile), else the field's default. Fields
whose metadata is ``NOT_IN_FILE`` are not read from files. Errors are ``ConfigError``s
of one line naming the file, the table and the key::

    node.toml: [partition] unknown key 'leese_s' (known: action_timeout_s, ...)
    node.toml: [partition] lease_s: expected a number, got 'long'
    node.toml: [partition] keepalive_s must be shorter than lease_s   (__post_init__)
    scenario.toml: scheduler.partition_lease_s: now [scheduler.partition] lease_s

The last form is for keys that moved (``moved``, by dotted path). This module is kernel:
it imports nothing from dvms.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["NOT_IN_FILE", "ConfigError", "as_table", "load_table", "read_toml"]

T = TypeVar("T")

#: Field metadata of a field that files cannot set (it is filled in by the program).
NOT_IN_FILE: Mapping[str, Any] = types.MappingProxyType({"dvms.configfile.not_in_file": True})


class ConfigError(ValueError):
    """A configuration problem, in one line naming the file, the table and the key."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML file ``path``; a missing or malformed file is a ``ConfigError``."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_table(
    cls: type[T],
    table: Mapping[str, Any],
    *,
    source: str = "",
    base: T | None = None,
    moved: Mapping[str, str] | None = None,
    error: type[ConfigError] = ConfigError,
) -> T:
    """``table`` as a ``cls``: keys given replace ``base``'s values (or the defaults).

    ``source`` (a file name, "command line") leads every error message; ``moved`` maps
    the dotted path of a key that is no longer read to where it went; errors are raised
    as ``error`` (a ``ConfigError`` subclass of the caller's)."""
    try:
        return _build(cls, table, "", base, moved or {})
    except ConfigError as exc:
        kind = type(exc) if isinstance(exc, error) else error
        raise kind(f"{source}: {exc}" if source else str(exc)) from None


def _where(path: str) -> str:
    return f"[{path}] " if path else ""


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _build(
    cls: type[T], table: Mapping[str, Any], path: str, base: Any, moved: Mapping[str, str]
) -> T:
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")  # our bug, not the user's
    hints = typing.get_type_hints(cls)
    readable = [f for f in fields(cls) if not f.metadata.get("dvms.configfile.not_in_file")]
    names = {f.name for f in readable}
    for key in table:
        if key in names:
            continue
        dotted = f"{path}.{key}" if path else key
        if dotted in moved:
            raise ConfigError(f"{dotted}: now {moved[dotted]}")
        known = ", ".join(sorted(names))
        raise ConfigError(f"{_where(path)}unknown key {key!r} (known: {known})")
    kwargs: dict[str, Any] = {}
    for f in readable:
        if f.name not in table:
            if base is None and f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{_where(path)}{f.name}: missing")
            continue
        current = getattr(base, f.name) if base is not None else _default(f)
        sub = f"{path}.{f.name}" if path else f.name
        kwargs[f.name] = _convert(hints[f.name], table[f.name], path, f.name, sub, current, moved)
    try:
        if base is not None:
            return replace(base, **kwargs)
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # a component's own validation (__post_init__)
        raise ConfigError(f"{_where(path)}{exc}") from None


_SCALARS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number"}


def _convert(
    tp: Any, value: Any, path: str, key: str, sub: str, current: Any, moved: Mapping[str, str]
) -> Any:
    """``value`` (at ``[path] key``, the sub-table path ``sub``) as a ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{sub}: unsupported union {tp!r}")  # our bug
        return _convert(args[0], value, path, key, sub, current, moved)
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path)}{key}: expected a table, got {value!r}")
        return _build(tp, value, sub, current if is_dataclass(current) else None, moved)  # type: ignore[arg-type]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            names = ", ".join(str(a) for a in allowed)
            raise ConfigError(f"{_where(path)}{key}: expected one of {names}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{_where(path)}{key}: expected an array, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(
            _convert(inner, v, path, f"{key}[{i}]", f"{sub}[{i}]", None, moved)
            for i, v in enumerate(value)
        )
    if origin is Mapping or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path)}{key}: expected a table, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        ok = isinstance(value, bool) if tp is bool else not isinstance(value, bool)
        ok = ok and isinstance(value, int | float if tp is float else tp)
        if not ok:
            raise ConfigError(f"{_where(path)}{key}: expected {_SCALARS[tp]}, got {value!r}")
        return float(value) if tp is float else value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(path)}{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{sub}: unsupported field type {tp!r}")  # our bug, not the user's


def as_table(obj: Any) -> dict[str, Any]:
    """The TOML table ``load_table`` reads back as ``obj`` (a dataclass instance): every
    file-settable field, sub-tables for dataclass fields, arrays for tuples; None values
    are left out (TOML has no null)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if f.metadata.get("dvms.configfile.not_in_file"):
            continue
        value = _plain(getattr(obj, f.name))
        if value is not None:
            out[f.name] = value
    return out


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return as_table(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value
