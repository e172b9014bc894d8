"""What a command asks the daemon to do, and what it gives back.

The interpreter never acts on hosts. It returns a ``Result``: the new ``State`` and
``Session``, an output (``Table`` or ``Text``), an error text, and **effects** the daemon
must carry out on the hosts. Every effect names its namespace; VMs are named by their
name inside that namespace (the hypervisor key is ``namespace/name``).

After carrying out ``Launch`` the daemon calls ``dvms.namespace.launch_finished`` with
the VMs that failed; after any effect it may call ``report_vms`` with what hosts report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dvms.namespace.config import CommandError, VmConfig
from dvms.namespace.state import DEFAULT_NAMESPACE, Namespace, State
from dvms.placement import Host, PlacementConfig, Vm

__all__ = [
    "SOURCE_MESHAGE",
    "SOURCE_USER",
    "ClearNamespace",
    "Cluster",
    "Context",
    "DelBridge",
    "Effect",
    "Flush",
    "Kill",
    "Launch",
    "Migrate",
    "PlacedVm",
    "Result",
    "Run",
    "RunOnHosts",
    "Session",
    "SetBridge",
    "Start",
    "Stop",
    "Table",
    "Text",
    "invalid",
    "match",
]

#: ``Context.source``: typed by a user / sent by another node to run its local part.
SOURCE_USER = ""
SOURCE_MESHAGE = "meshage"


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Cluster:
    """The cluster as the daemon sees it right now.

    ``hosts``: every live node (``Host.cpus``/``memory_mib`` feed the load functions and
    the capacity checks). ``vms``: every VM running anywhere, in any namespace or none
    (``Vm.namespace``/``Vm.name``/``Vm.host``), so host load sums over all namespaces as
    in minimega. ``local``: the node the user talks to (what ``localhost`` means).
    ``silent``: hosts known to the daemon that did not answer it this time (down or
    cut off), so that a command naming one can say so."""

    hosts: tuple[Host, ...] = ()
    vms: tuple[Vm, ...] = ()
    local: str = ""
    silent: frozenset[str] = frozenset()

    def host_names(self) -> frozenset[str]:
        return frozenset(h.name for h in self.hosts)


@dataclass(frozen=True, slots=True)
class Session:
    """Per-client state: the active namespace (minimega keeps it per process)."""

    active: str = "minimega"


@dataclass(frozen=True, slots=True)
class Context:
    """Everything ``execute`` reads. ``now``: seconds since the epoch (for ``ns schedule
    status``). ``bridge_key``: the tunnel key the next ``ns bridge`` uses (the caller
    draws it from its seeded random source). ``source``: ``SOURCE_MESHAGE`` when another
    node sends the command (then ``vm launch`` and ``ns run`` are refused, as in minimega).
    ``placement``: capacity ceilings for dry-run, mv and migrate."""

    state: State
    cluster: Cluster
    session: Session = Session()
    now: float = 0.0
    bridge_key: int = 0
    source: str = SOURCE_USER
    placement: PlacementConfig = field(default_factory=PlacementConfig)


# ---------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Table:
    """Tabular output: ``header`` names the columns, every row has one cell per column."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Format:
    """How a command's output is printed, set by the flags leading the command (minicli):
    ``.json true`` prints minimega's JSON responses, ``.headers false`` tables without
    their header line."""

    json: bool = False
    headers: bool = True


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class PlacedVm:
    """One VM of a ``Launch``: its name, the host the schedule placed it on, its type and
    config (``config.spec(name, namespace)`` is the ``VmSpec`` to create)."""

    # ``VmRecord`` without the namespace's bookkeeping (id, state): deliberately separate,
    # it is what a host needs and what ``render_json`` shows of the effect.

    name: str
    host: str
    vm_type: str
    config: VmConfig


@dataclass(frozen=True, slots=True)
class Launch:
    """Create ``vms`` on their hosts (each starts BUILDING, i.e. paused). ``schedule`` is
    the index of the ``ns schedule status`` row to close with ``launch_finished``."""

    namespace: str
    vms: tuple[PlacedVm, ...]
    schedule: int


@dataclass(frozen=True, slots=True)
class Start:
    namespace: str
    vms: tuple[tuple[str, str], ...]  # (name, host)


@dataclass(frozen=True, slots=True)
class Stop:
    namespace: str
    vms: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Kill:
    namespace: str
    vms: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Flush:
    """Forget (undefine) quit or errored VMs."""

    namespace: str
    vms: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Migrate:
    """Live-migrate ``vm`` from ``src`` to ``dst``."""

    namespace: str
    vm: str
    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class SetBridge:
    """Create ``bridge`` on every host and a full mesh of ``kind`` tunnels (key ``key``)."""

    namespace: str
    bridge: str
    kind: str
    key: int
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DelBridge:
    """Destroy ``bridge`` (and its tunnels) on every host."""

    namespace: str
    bridge: str
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClearNamespace:
    """Destroy a namespace everywhere: kill and flush ``vms`` (name, host), remove its
    tunnels and taps on every host in ``hosts``, and delete its DHT records."""

    namespace: str
    vms: tuple[tuple[str, str], ...]
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunOnHosts:
    """``ns run``: run ``command`` on every host of ``hosts`` (with ``SOURCE_MESHAGE`` and
    the namespace active) and gather the replies."""

    namespace: str
    hosts: tuple[str, ...]
    command: tuple[str, ...]


Effect = (
    Launch | Start | Stop | Kill | Flush | Migrate | SetBridge | DelBridge | ClearNamespace
    | RunOnHosts
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Result:
    """What ``execute`` returns. On error, ``state``/``session`` are the ones passed in
    (one documented exception: ``ns schedule mv`` keeps the moves made before the target
    that failed, as minimega does) and ``effects`` is empty."""

    state: State
    session: Session
    output: Table | Text | None = None
    effects: tuple[Effect, ...] = ()
    error: str | None = None
    format: Format = Format()

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------ the working copy


def invalid(words: Sequence[str]) -> CommandError:
    return CommandError(f"invalid command: `{' '.join(words)}`")


def match(word: str, options: Sequence[str], words: Sequence[str]) -> str:
    """``word`` as one of ``options``: exact, else a unique prefix (minicli accepts
    ``vm config net`` for ``networks``)."""
    if word in options:
        return word
    found = [o for o in options if o.startswith(word)] if word else []
    if len(found) != 1:
        raise invalid(words)
    return found[0]


@dataclass
class Run:
    """Mutable working copy of one ``execute`` call."""

    ctx: Context
    state: State = field(init=False)
    session: Session = field(init=False)
    output: Table | Text | None = None
    effects: list[Effect] = field(default_factory=list)
    #: an error that still commits ``state`` (only ``ns schedule mv``, as minimega)
    partial_error: str | None = None
    depth: int = 0
    #: output flags met so far (``.json``, ``.headers``)
    format: Format = Format()

    def __post_init__(self) -> None:
        self.state = self.ctx.state
        self.session = self.ctx.session

    # -- namespaces ----------------------------------------------------------------------

    def fresh(self, name: str) -> Namespace:
        """A new namespace: every host of the cluster (there is no head node to leave out)."""
        return Namespace(name, hosts=self.ctx.cluster.host_names())

    def ns(self) -> Namespace:
        """The active namespace (created on the fly, not stored, if it does not exist)."""
        return self.state.get(self.session.active) or self.fresh(self.session.active)

    def save(self, ns: Namespace) -> None:
        self.state = self.state.put(ns)

    def update(self, **changes: Any) -> Namespace:
        ns = replace(self.ns(), **changes)
        self.save(ns)
        return ns

    def known(self) -> list[str]:
        """Namespaces to list: the stored ones, the default one, the active one."""
        return sorted({*self.state.names(), DEFAULT_NAMESPACE, self.session.active})
