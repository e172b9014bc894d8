"""The per-namespace ``vm config``: one frozen record, and the table of its fields.

Each field has a name (minimega's, so ``vm config networks`` and its prefix ``vm config
net`` both work), a default (minimega's ``Clear`` values), a parser for ``vm config FIELD
VALUE...`` and a printer for ``vm config FIELD``. ``schedule`` and ``colocate`` need the
namespace to be checked (minimega's ``validSchedule``/``validColocate``); that is done by
the interpreter, which calls ``check_schedule``/``check_colocate`` here.

A config is snapshotted into every queued batch when ``vm launch`` runs (as minimega does), so
later ``vm config`` changes never touch queued VMs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from dvms.placement.hapolicy import (
    FENCES,
    MAX_BACKOFF_S,
    MODES,
    PRIORITIES,
    HaPolicy,
    HaPolicyError,
)
from dvms.placement.spec import VmSpec

__all__ = [
    "FIELDS",
    "CommandError",
    "NamespaceRecordError",
    "VmConfig",
    "check_colocate",
    "check_schedule",
    "config_dump",
    "field_names",
]


class CommandError(Exception):
    """A command was refused; ``str()`` is the text shown to the user (minimega's where
    minimega has one). Raised inside the interpreter, never out of ``execute``."""


class NamespaceRecordError(ValueError):
    """A replicated record failed validation in ``from_record``."""


_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class VmConfig:
    """minimega's ``vm config`` fields that matter to a distributed scheduler (the rest of
    minimega's KVM knobs are per-host driver details and are not modelled)."""

    # Deliberately not ``VmSpec``: these are minimega's names and the replicated record's
    # schema; ``spec`` derives the placement ``VmSpec`` from them.

    vcpus: int = 1
    memory: int = 2048
    networks: tuple[str, ...] = ()
    disks: tuple[str, ...] = ()
    schedule: str = ""
    coschedule: int = -1
    colocate: str = ""
    snapshot: bool = True
    uuid: str = ""
    kernel: str = ""
    initrd: str = ""
    append: tuple[str, ...] = ()
    cdrom: str = ""
    filesystem: str = ""
    backchannel: bool = True
    tags: tuple[tuple[str, str], ...] = ()
    #: High availability (``dvms.placement.hapolicy``, docs/ha.md): off or restart.
    ha: str = "off"
    ha_priority: str = "medium"
    ha_restart_attempts: int = 3
    ha_restart_backoff_s: float = 5.0
    ha_fence: str = "destroy"

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise NamespaceRecordError(f"vm config: {problems[0]}")

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tags":
                value = {k: v for k, v in value}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_record(cls, d: object) -> VmConfig:
        if not isinstance(d, Mapping):
            raise NamespaceRecordError("vm config: expected a map")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise NamespaceRecordError(f"vm config: unknown field {unknown[0]!r}")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            default = getattr(_DEFAULT, name)
            if name == "tags":
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise NamespaceRecordError("vm config: tags must map strings to strings")
                value = tuple(sorted(value.items()))
            elif isinstance(default, tuple):
                strings = isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)
                if not strings:
                    raise NamespaceRecordError(f"vm config: {name} must be a list of strings")
                value = tuple(value)
            elif type(value) is not type(default):
                raise NamespaceRecordError(f"vm config: {name} must be a {type(default).__name__}")
            kwargs[name] = value
        return cls(**kwargs)

    def spec(self, name: str, namespace: str) -> VmSpec:
        """The ``VmSpec`` a driver or the placement engine needs for one VM."""
        return VmSpec(
            name=name,
            namespace=namespace,
            vcpus=self.vcpus,
            memory_mib=self.memory,
            networks=self.networks,
            disk=self.disks[0] if self.disks else None,
            kernel=self.kernel or None,
            initrd=self.initrd or None,
            append=" ".join(self.append) or None,
            cdrom=self.cdrom or None,
            schedule=self.schedule or None,
            coschedule=self.coschedule,
            colocate=self.colocate or None,
            tags=self.tags,
            ha_policy=self.ha_policy() if self.ha == "restart" else None,
        )

    def ha_policy(self) -> HaPolicy:
        return HaPolicy(
            mode=self.ha,
            priority=self.ha_priority,
            restart_attempts=self.ha_restart_attempts,
            restart_backoff_s=float(self.ha_restart_backoff_s),
            fence=self.ha_fence,
        )


def _problems(cfg: VmConfig) -> list[str]:
    out = []
    for name in ("vcpus", "memory", "coschedule"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{name} must be an integer")
    if not out:
        if cfg.vcpus < 1:
            out.append("vcpus must be at least 1")
        if cfg.memory < 1:
            out.append("memory must be at least 1 (MB)")
        if cfg.coschedule < -1:
            out.append("coschedule must be -1 (no limit) or >= 0")
    if cfg.schedule and cfg.colocate:
        out.append("cannot specify schedule and colocate in the same config")
    if not out:
        try:
            cfg.ha_policy()
        except HaPolicyError as exc:
            out.append(str(exc))
    return out


_DEFAULT = VmConfig()

# ------------------------------------------------------------------ parse / print


class _BadValue(ValueError):
    """A ``vm config`` value of the wrong form; the message says what was expected."""


def _uint(value: str) -> int:
    if not re.fullmatch(r"\+?[0-9]+", value):
        raise _BadValue("a whole number (0 or more)")
    return int(value)


def _int(value: str) -> int:
    if not _INT.fullmatch(value):
        raise _BadValue("a whole number")
    return int(value)


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise _BadValue("true or false")
    return value == "true"


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def conv(value: str) -> str:
        if value not in allowed:
            raise _BadValue("one of " + ", ".join(allowed))
        return value

    return conv


def _seconds(value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise _BadValue("a number of seconds") from None
    if not 0 <= out <= MAX_BACKOFF_S:
        raise _BadValue(f"seconds from 0 to {MAX_BACKOFF_S:g}")
    return out


def _one(args: Sequence[str], name: str) -> str:
    if len(args) != 1:
        raise CommandError(f"vm config {name} takes one value, got {len(args)}")
    return args[0]


@dataclass(frozen=True, slots=True)
class Field:
    """One ``vm config`` field: how to parse ``vm config NAME ARGS`` and print it."""

    name: str
    parse: Callable[[Sequence[str]], Any]
    show: Callable[[Any], str]


def _scalar(name: str, conv: Callable[[str], Any], show: Callable[[Any], str] = str) -> Field:
    def parse(args: Sequence[str]) -> Any:
        value = _one(args, name)
        try:
            return conv(value)
        except _BadValue as exc:
            raise CommandError(f"vm config {name}: expected {exc}, got `{value}`") from None

    return Field(name, parse, show)


def _words(name: str) -> Field:
    return Field(name, tuple, lambda v: "[" + " ".join(v) + "]")


def _show_bool(value: bool) -> str:
    return "true" if value else "false"


def _parse_tags(args: Sequence[str]) -> Any:
    raise AssertionError("tags are handled by the interpreter")  # pragma: no cover


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        _scalar("vcpus", _uint),
        _scalar("memory", _uint),
        _words("networks"),
        _words("disks"),
        _scalar("schedule", str),
        _scalar("coschedule", _int),
        _scalar("colocate", str),
        _scalar("snapshot", _bool, _show_bool),
        _scalar("uuid", str),
        _scalar("kernel", str),
        _scalar("initrd", str),
        _words("append"),
        _scalar("cdrom", str),
        _scalar("filesystem", str),
        _scalar("backchannel", _bool, _show_bool),
        Field("tags", _parse_tags, lambda v: "".join(f"{k} -> {x}\n" for k, x in v)),
        _scalar("ha", _choice(MODES)),
        _scalar("ha_priority", _choice(PRIORITIES)),
        _scalar("ha_restart_attempts", _uint),
        _scalar("ha_restart_backoff_s", _seconds),
        _scalar("ha_fence", _choice(FENCES)),
    )
}


def field_names() -> tuple[str, ...]:
    return tuple(FIELDS)


def check_schedule(cfg: VmConfig, host: str, namespace_hosts: frozenset[str]) -> None:
    """minimega's ``validSchedule`` (the caller has already resolved ``localhost``)."""
    if cfg.colocate and host:
        raise CommandError("cannot specify schedule and colocate in the same config")
    if host not in namespace_hosts:
        raise CommandError(f"host is not in namespace: {host}")


def check_colocate(cfg: VmConfig, target: str) -> None:
    """minimega's ``validColocate``."""
    if cfg.schedule and target:
        raise CommandError("cannot specify colocate and schedule in the same config")


def set_field(cfg: VmConfig, name: str, value: Any) -> VmConfig:
    try:
        return replace(cfg, **{name: value})
    except NamespaceRecordError as err:
        raise CommandError(str(err).removeprefix("vm config: ")) from None


def clear_field(cfg: VmConfig, name: str | None) -> VmConfig:
    """``clear vm config [FIELD]``: back to minimega's defaults."""
    if name is None:
        return _DEFAULT
    return replace(cfg, **{name: getattr(_DEFAULT, name)})


def config_dump(cfg: VmConfig) -> str:
    """``vm config`` with no argument, laid out like minimega's tabwriter dump."""
    rows = [
        ("Memory:", str(cfg.memory)),
        ("VCPUs:", str(cfg.vcpus)),
        ("Networks:", FIELDS["networks"].show(cfg.networks)),
        ("Snapshot:", _show_bool(cfg.snapshot)),
        ("UUID:", cfg.uuid),
        ("Schedule host:", cfg.schedule),
        ("Coschedule limit:", str(cfg.coschedule)),
        ("Colocate:", cfg.colocate),
        ("Backchannel:", _show_bool(cfg.backchannel)),
        ("Tags:", "{" + ",".join(f'"{k}":"{v}"' for k, v in cfg.tags) + "}"),
        ("Disks:", FIELDS["disks"].show(cfg.disks)),
        ("CDROM Path:", cfg.cdrom),
        ("Kernel Path:", cfg.kernel),
        ("Initrd Path:", cfg.initrd),
        ("Kernel Append:", " ".join(cfg.append)),
        ("Filesystem Path:", cfg.filesystem),
    ]
    if cfg.ha != "off":
        rows.append(("HA:", f"{cfg.ha} priority={cfg.ha_priority} fence={cfg.ha_fence}"))
    width = max(len(label) for label, _ in rows) + 1
    lines = ["VM configuration:"] + [f"{label:<{width}}{value}".rstrip() for label, value in rows]
    return "\n".join(lines) + "\n"
