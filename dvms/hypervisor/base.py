"""The hypervisor interface every backend implements, its value types and the registry.

A backend is one host: ``create`` / ``shutdown`` / ``destroy`` / ``undefine`` act on that
host's VMs, ``migrate`` moves one of them to a *peer* backend of the same kind. All methods
are async; a backend whose library blocks (libvirt) runs those calls in worker threads, so
the Trio event loop never blocks. Lifecycle events arrive on a memory channel obtained with
``events()``.

Backends are looked up by name (``open_hypervisor("libvirt", config)``); the registry
imports a backend module only when it is asked for, so the simulator never needs
libvirt-python.
"""

from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dvms.names import vm_key

if TYPE_CHECKING:
    import trio

    from dvms.hypervisor.stats import HostStats
    from dvms.placement.spec import VmSpec

__all__ = [
    "DomainState",
    "EventKind",
    "Hypervisor",
    "LifecycleEvent",
    "MigrationResult",
    "VmInfo",
    "available_backends",
    "open_hypervisor",
    "register_backend",
    "vm_key",
]


class DomainState(enum.Enum):
    """Coarse VM state, the same words minimega prints (upper-cased in its CLI)."""

    BUILDING = "building"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"  # defined, not running
    MIGRATING = "migrating"
    CRASHED = "crashed"
    UNKNOWN = "unknown"


class EventKind(enum.Enum):
    """Lifecycle events (libvirt's VIR_DOMAIN_EVENT_* top-level kinds, plus migration)."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    MIGRATED_OUT = "migrated-out"
    MIGRATED_IN = "migrated-in"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One thing that happened to one VM on one host. ``at`` is the backend's clock (s)."""

    host: str
    vm: str
    kind: EventKind
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class VmInfo:
    """What a host knows about one of its VMs.

    ``memory_mib`` is the configured maximum; ``cpu_time_s`` the guest CPU time consumed so
    far (libvirt) or the CPU demand integrated over time (sim).
    """

    name: str
    host: str
    state: DomainState
    vcpus: int
    memory_mib: int
    namespace: str = ""
    uuid: str = ""
    cpu_time_s: float = 0.0
    cpu_demand: float | None = None  # fraction of the VM's vCPUs in use (sim only)
    #: Network interfaces (libvirt: from the domain definition; 0 when unknown).
    nics: int = 0
    #: Disks backed by a file on the host (libvirt; 0 when unknown).
    disks: int = 0
    #: An HA copy's generation and fence action from its metadata (0, "": not HA).
    ha_generation: int = 0
    ha_fence: str = ""

    @property
    def key(self) -> str:
        """What to pass to the hypervisor's methods for this VM (``vm_key``)."""
        return vm_key(self.name, self.namespace)


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """Outcome of one successful migration.

    ``duration_s`` is wall (or virtual) time of the whole migration; ``downtime_ms`` the
    time the guest was paused for the final copy (None when the backend cannot tell);
    ``transferred_mib`` the memory sent (None when unknown); ``method`` says how it was done
    (``live-p2p``, ``save-restore`` for the libvirt test driver, ``sim-precopy``).
    """

    vm: str
    source: str
    destination: str
    duration_s: float
    downtime_ms: float | None
    transferred_mib: float | None
    method: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class Hypervisor(ABC):
    """One host's hypervisor. Every method may raise a ``HypervisorError`` subclass."""

    #: the host's name as other components know it (used in events and VmInfo.host)
    host: str

    @abstractmethod
    async def create(self, spec: VmSpec) -> VmInfo:
        """Define the VM persistently from ``spec`` and start it."""

    @abstractmethod
    async def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI); returns once the request was delivered."""

    @abstractmethod
    async def destroy(self, name: str) -> None:
        """Power the VM off at once; its definition stays."""

    @abstractmethod
    async def undefine(self, name: str) -> None:
        """Forget an inactive VM's definition."""

    @abstractmethod
    async def suspend(self, name: str) -> None:
        """Pause a running VM (minimega ``vm stop``)."""

    @abstractmethod
    async def resume(self, name: str) -> None:
        """Run a paused VM again (minimega ``vm start``)."""

    @abstractmethod
    async def start(self, name: str) -> None:
        """Boot a defined VM that is shut off (minimega ``vm start`` of a QUIT VM)."""

    @abstractmethod
    async def migrate(
        self, name: str, dest: Hypervisor, *, copy_storage: bool = False
    ) -> MigrationResult:
        """Live-migrate ``name`` to the peer host ``dest`` (same backend kind)."""

    @abstractmethod
    async def list_vms(self) -> list[VmInfo]:
        """Every VM this host knows (running or defined)."""

    @abstractmethod
    async def info(self, name: str) -> VmInfo:
        """One VM; raises ``VmNotFound`` if this host does not have it."""

    @abstractmethod
    async def stats(self) -> HostStats:
        """Host statistics (capacity, load, commitments)."""

    @abstractmethod
    def events(self) -> trio.MemoryReceiveChannel[LifecycleEvent]:
        """A new subscription to this host's lifecycle events."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads; idempotent."""

    async def __aenter__(self) -> Hypervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --- registry ---------------------------------------------------------------------------

Factory = Callable[..., Hypervisor]

#: backend name -> "module:callable" (imported on first use) or a factory already loaded
_BACKENDS: dict[str, str | Factory] = {
    "libvirt": "dvms.hypervisor.libvirt_backend:open_libvirt",
    "sim": "dvms.hypervisor.simulated:open_sim",
}


def register_backend(name: str, factory: str | Factory) -> None:
    """Add (or replace) a backend; ``factory`` is a callable or a "module:attr" string."""
    _BACKENDS[name] = factory


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS))


def open_hypervisor(name: str, *args: Any, **kwargs: Any) -> Hypervisor:
    """Instantiate backend ``name`` with the backend's own arguments (see its factory)."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        known = ", ".join(available_backends())
        raise ValueError(f"unknown hypervisor backend {name!r} (known: {known})") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        _BACKENDS[name] = factory
    return factory(*args, **kwargs)
