"""Hypervisor and network drivers behind one small interface with a registry by name.

- ``base``            the ``Hypervisor`` interface, value types, ``open_hypervisor(name)``
- ``errors``          error classes and the libvirt error-code mapping
- ``domxml``          VmSpec -> libvirt domain XML (validated names, escaped values)
- ``libvirt_backend`` ``libvirt``: test:/// hosts and real QEMU with live migration
- ``sim``             ``sim``: pure pre-copy migration model + Trio adapter
- ``stats``           host statistics (psutil + libvirt node info + commitments)
- ``net``             namespace bridges and VXLAN/gretap meshes (pyroute2, fake)

See README.md in this folder for the data flow.
"""

from __future__ import annotations

from dvms.hypervisor.base import (
    DomainState,
    EventKind,
    Hypervisor,
    LifecycleEvent,
    MigrationResult,
    VmInfo,
    available_backends,
    open_hypervisor,
    register_backend,
)
from dvms.hypervisor.errors import (
    AlreadyExists,
    BackendUnavailable,
    HostUnreachable,
    HypervisorError,
    InvalidSpec,
    InvalidState,
    MigrationFailed,
    Unsupported,
    VmNotFound,
)
from dvms.hypervisor.stats import HostStats, NodeInfo

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "DomainState",
    "EventKind",
    "HostStats",
    "HostUnreachable",
    "Hypervisor",
    "HypervisorError",
    "InvalidSpec",
    "InvalidState",
    "LifecycleEvent",
    "MigrationFailed",
    "MigrationResult",
    "NodeInfo",
    "Unsupported",
    "VmInfo",
    "VmNotFound",
    "available_backends",
    "open_hypervisor",
    "register_backend",
]
