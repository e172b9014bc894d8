"""Namespace state: plain frozen records, each with ``to_record()`` / ``from_record()``.

What minimega keeps on its head node lives here, so the daemon can
replicate it as DHT records (one record per namespace, ``Namespace.to_record()``):

    State ── Namespace* ── hosts, load, queueing, config (current ``vm config``)
                         ├─ queue: Batch* (names + type + config snapshot)
                         ├─ assignment: AssignEntry* (dry-run result, or None)
                         ├─ stats: ScheduleStat* (``ns schedule status``)
                         ├─ bridges: Bridge* (``ns bridge``)
                         └─ vms: VmRecord* (what the namespace launched, as reported)

Every constructor validates, so an invalid state cannot be built: a bug raises
``NamespaceRecordError`` where it happens, and ``from_record`` refuses a corrupt record.
Records hold only CBOR-friendly values (str, int, float, bool, None, list, map).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dvms.names import is_valid_namespace_name
from dvms.namespace.config import NamespaceRecordError, VmConfig

__all__ = [
    "DEFAULT_NAMESPACE",
    "LOADS",
    "VM_STATES",
    "VM_TYPES",
    "AssignEntry",
    "Batch",
    "Bridge",
    "Namespace",
    "ScheduleStat",
    "State",
    "VmRecord",
]

#: minimega's default namespace.
DEFAULT_NAMESPACE = "minimega"
#: ``ns load`` comparators (minimega's).
LOADS = ("cpucommit", "memcommit", "netcommit")
#: minimega's VM states, as printed by ``vm info``.
VM_STATES = ("BUILDING", "RUNNING", "PAUSED", "QUIT", "ERROR")
VM_TYPES = ("kvm", "container")
BRIDGE_KINDS = ("gre", "vxlan")
SCHEDULE_STATES = ("running", "completed")
#: minimega's ``validName`` (VM and namespace names).

RECORD_VERSION = 1


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise NamespaceRecordError(what)


def _str(d: Mapping[str, Any], key: str, what: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise NamespaceRecordError(f"{what}: {key} must be a string")
    return value


def _int(d: Mapping[str, Any], key: str, what: str, low: int = 0) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise NamespaceRecordError(f"{what}: {key} must be an integer >= {low}")
    return value


def _map(d: object, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise NamespaceRecordError(f"{what}: expected a map")
    return d


def _list(d: Mapping[str, Any], key: str, what: str) -> list:
    value = d.get(key, [])
    _need(isinstance(value, list | tuple), f"{what}: {key} must be a list")
    return list(value)


@dataclass(frozen=True, slots=True)
class VmRecord:
    """A VM the namespace launched: where it is and in which state (as last known)."""

    id: int
    name: str
    host: str
    state: str = "BUILDING"
    vm_type: str = "kvm"
    config: VmConfig = field(default_factory=VmConfig)

    def __post_init__(self) -> None:
        what = f"vm {self.name!r}"
        _need(isinstance(self.id, int) and self.id >= 0, f"{what}: bad id")
        _need(isinstance(self.name, str) and bool(self.name), "vm: empty name")
        _need(isinstance(self.host, str) and bool(self.host), f"{what}: empty host")
        _need(self.state in VM_STATES, f"{what}: unknown state {self.state!r}")
        _need(self.vm_type in VM_TYPES, f"{what}: unknown type {self.vm_type!r}")

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "state": self.state,
            "type": self.vm_type,
            "config": self.config.to_record(),
        }

    @classmethod
    def from_record(cls, d: object) -> VmRecord:
        m = _map(d, "vm")
        return cls(
            id=_int(m, "id", "vm"),
            name=_str(m, "name", "vm"),
            host=_str(m, "host", "vm"),
            state=_str(m, "state", "vm"),
            vm_type=_str(m, "type", "vm"),
            config=VmConfig.from_record(m.get("config", {})),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """One ``vm launch TYPE NAMES|N`` waiting in the queue. An empty name is an unnamed
    VM; it is named ``vm-<k>`` when launched (minimega)."""

    vm_type: str
    names: tuple[str, ...]
    config: VmConfig

    def __post_init__(self) -> None:
        _need(self.vm_type in VM_TYPES, f"batch: unknown type {self.vm_type!r}")
        _need(bool(self.names), "batch: no VMs")
        named = [n for n in self.names if n]
        _need(len(named) == len(set(named)), "batch: a name is queued twice")
        _need(all(isinstance(n, str) for n in self.names), "batch: names must be strings")

    def to_record(self) -> dict[str, Any]:
        return {"type": self.vm_type, "names": list(self.names), "config": self.config.to_record()}

    @classmethod
    def from_record(cls, d: object) -> Batch:
        m = _map(d, "batch")
        names = _list(m, "names", "batch")
        _need(all(isinstance(n, str) for n in names), "batch: names must be strings")
        return cls(_str(m, "type", "batch"), tuple(names), VmConfig.from_record(m.get("config")))


@dataclass(frozen=True, slots=True)
class AssignEntry:
    """One dry-run row: queue slot (batch, index), its name ("" = unnamed) and host."""

    batch: int
    index: int
    name: str
    host: str

    def to_record(self) -> dict[str, Any]:
        return {"batch": self.batch, "index": self.index, "name": self.name, "host": self.host}

    @classmethod
    def from_record(cls, d: object) -> AssignEntry:
        m = _map(d, "assignment")
        return cls(
            _int(m, "batch", "assignment"),
            _int(m, "index", "assignment"),
            _str(m, "name", "assignment"),
            _str(m, "host", "assignment"),
        )


@dataclass(frozen=True, slots=True)
class ScheduleStat:
    """One row of ``ns schedule status``; times are seconds since the epoch (UTC).
    ``launcher``: the host whose node carries the launch out ("" in records that do not
    name it); a running row whose launcher no longer runs it is closed by
    ``interrupt``."""

    start: float
    end: float | None
    state: str
    launched: int
    failures: int
    total: int
    hosts: int
    launcher: str = ""

    def __post_init__(self) -> None:
        _need(self.state in SCHEDULE_STATES, f"schedule: unknown state {self.state!r}")
        _need((self.end is None) == (self.state == "running"), "schedule: end iff completed")
        for name in ("launched", "failures", "total", "hosts"):
            _need(getattr(self, name) >= 0, f"schedule: {name} < 0")

    def to_record(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "state": self.state,
            "launched": self.launched,
            "failures": self.failures,
            "total": self.total,
            "hosts": self.hosts,
            "launcher": self.launcher,
        }

    @classmethod
    def from_record(cls, d: object) -> ScheduleStat:
        m = _map(d, "schedule")
        start, end = m.get("start"), m.get("end")
        if not isinstance(start, int | float):
            raise NamespaceRecordError("schedule: start must be a number")
        _need(end is None or isinstance(end, int | float), "schedule: end must be a number")
        counts = {k: _int(m, k, "schedule") for k in ("launched", "failures", "total", "hosts")}
        end = None if end is None else float(end)
        launcher = m.get("launcher", "")
        _need(isinstance(launcher, str), "schedule: launcher must be a string")
        return cls(float(start), end, _str(m, "state", "schedule"), **counts, launcher=launcher)


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge ``ns bridge`` meshed between the namespace's hosts, with its tunnel key."""

    name: str
    kind: str
    key: int
    hosts: frozenset[str]

    def __post_init__(self) -> None:
        _need(bool(self.name), "bridge: empty name")
        _need(self.kind in BRIDGE_KINDS, f"bridge: unknown kind {self.kind!r}")
        _need(0 <= self.key < 2**32, "bridge: key must be an unsigned 32-bit integer")

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "key": self.key, "hosts": sorted(self.hosts)}

    @classmethod
    def from_record(cls, d: object) -> Bridge:
        m = _map(d, "bridge")
        hosts = _list(m, "hosts", "bridge")
        _need(all(isinstance(h, str) for h in hosts), "bridge: hosts must be strings")
        return cls(_str(m, "name", "bridge"), _str(m, "kind", "bridge"), _int(m, "key", "bridge"),
                   frozenset(hosts))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Namespace:
    """Everything one namespace owns (minimega's namespace, minus VLANs, captures and cc)."""

    name: str
    hosts: frozenset[str] = frozenset()
    load: str = "cpucommit"
    queueing: bool = False
    config: VmConfig = field(default_factory=VmConfig)
    queue: tuple[Batch, ...] = ()
    assignment: tuple[AssignEntry, ...] | None = None
    stats: tuple[ScheduleStat, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    vms: tuple[VmRecord, ...] = ()
    next_name: int = 0
    next_id: int = 0

    def __post_init__(self) -> None:
        for problem in _namespace_problems(self):
            raise NamespaceRecordError(f"namespace {self.name!r}: {problem}")

    # -- lookups ------------------------------------------------------------------------

    def vm(self, name: str) -> VmRecord | None:
        return next((vm for vm in self.vms if vm.name == name), None)

    def queued_names(self) -> set[str]:
        return {n for b in self.queue for n in b.names if n}

    def bridge(self, name: str) -> Bridge | None:
        return next((b for b in self.bridges if b.name == name), None)

    def scheduling(self) -> bool:
        return any(s.state == "running" for s in self.stats)

    # -- records ------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "name": self.name,
            "hosts": sorted(self.hosts),
            "load": self.load,
            "queueing": self.queueing,
            "config": self.config.to_record(),
            "queue": [b.to_record() for b in self.queue],
            "assignment": None
            if self.assignment is None
            else [a.to_record() for a in self.assignment],
            "stats": [s.to_record() for s in self.stats],
            "bridges": [b.to_record() for b in self.bridges],
            "vms": [vm.to_record() for vm in self.vms],
            "next_name": self.next_name,
            "next_id": self.next_id,
        }

    @classmethod
    def from_record(cls, d: object) -> Namespace:
        m = _map(d, "namespace")
        _need(m.get("v") == RECORD_VERSION, f"namespace: unsupported version {m.get('v')!r}")
        hosts = _list(m, "hosts", "namespace")
        _need(all(isinstance(h, str) and h for h in hosts), "namespace: bad host name")
        queueing = m.get("queueing")
        if not isinstance(queueing, bool):
            raise NamespaceRecordError("namespace: queueing must be a bool")
        raw_assign = m.get("assignment")
        assignment = None
        if raw_assign is not None:
            _need(isinstance(raw_assign, list), "namespace: assignment must be a list or null")
            assignment = tuple(AssignEntry.from_record(a) for a in raw_assign)
        return cls(
            name=_str(m, "name", "namespace"),
            hosts=frozenset(hosts),
            load=_str(m, "load", "namespace"),
            queueing=queueing,
            config=VmConfig.from_record(m.get("config", {})),
            queue=tuple(Batch.from_record(b) for b in _list(m, "queue", "namespace")),
            assignment=assignment,
            stats=tuple(ScheduleStat.from_record(s) for s in _list(m, "stats", "namespace")),
            bridges=tuple(Bridge.from_record(b) for b in _list(m, "bridges", "namespace")),
            vms=tuple(VmRecord.from_record(v) for v in _list(m, "vms", "namespace")),
            next_name=_int(m, "next_name", "namespace"),
            next_id=_int(m, "next_id", "namespace"),
        )


def _namespace_problems(ns: Namespace) -> Iterable[str]:
    if not is_valid_namespace_name(ns.name):
        yield "invalid name"
    if ns.load not in LOADS:
        yield f"unknown load function {ns.load!r}"
    names = [vm.name for vm in ns.vms]
    if len(names) != len(set(names)):
        yield "two VMs share a name"
    if len({vm.id for vm in ns.vms}) != len(ns.vms):
        yield "two VMs share an id"
    if any(vm.id >= ns.next_id for vm in ns.vms):
        yield "a VM id is not below next_id"
    queued = [n for b in ns.queue for n in b.names if n]
    if len(queued) != len(set(queued)) or set(queued) & set(names):
        yield "a queued name is already used"
    if ns.assignment is not None and ns.queue:
        slots = {(i, j) for i, b in enumerate(ns.queue) for j in range(len(b.names))}
        if {(a.batch, a.index) for a in ns.assignment} != slots or len(ns.assignment) != len(slots):
            yield "the assignment does not cover the queue"
    if len({b.name for b in ns.bridges}) != len(ns.bridges):
        yield "two bridges share a name"


@dataclass(frozen=True, slots=True)
class State:
    """Every namespace, sorted by name. Immutable: commands return a new ``State``."""

    namespaces: tuple[Namespace, ...] = ()

    def __post_init__(self) -> None:
        names = [ns.name for ns in self.namespaces]
        _need(names == sorted(set(names)), "state: namespaces must be unique and sorted")

    def get(self, name: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.name == name), None)

    def names(self) -> list[str]:
        return [ns.name for ns in self.namespaces]

    def put(self, ns: Namespace) -> State:
        rest = [n for n in self.namespaces if n.name != ns.name]
        return State(tuple(sorted([*rest, ns], key=lambda n: n.name)))

    def drop(self, name: str) -> State:
        return State(tuple(n for n in self.namespaces if n.name != name))

    def to_record(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, "namespaces": [ns.to_record() for ns in self.namespaces]}

    @classmethod
    def from_record(cls, d: object) -> State:
        m = _map(d, "state")
        _need(m.get("v") == RECORD_VERSION, f"state: unsupported version {m.get('v')!r}")
        spaces = [Namespace.from_record(n) for n in _list(m, "namespaces", "state")]
        return cls(tuple(sorted(spaces, key=lambda n: n.name)))


def with_vms(ns: Namespace, vms: Iterable[VmRecord]) -> Namespace:
    """``ns`` with its VM table replaced (kept sorted by id)."""
    return replace(ns, vms=tuple(sorted(vms, key=lambda vm: vm.id)))
