"""Errors of the hypervisor layer, and the mapping from libvirt's error codes to them.

Every backend raises subclasses of ``HypervisorError``; callers (the placement planner,
the CLI) branch on the class and show ``str(err)``, which says which VM, which host, what
went wrong and, for libvirt, the library's own words. ``map_libvirt_error`` is pure (it
takes the numbers libvirt reports, not the exception object) so it is table-tested without
a libvirt connection.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "HostUnreachable",
    "HypervisorError",
    "InvalidSpec",
    "InvalidState",
    "MigrationFailed",
    "Unsupported",
    "VmNotFound",
    "from_libvirt_exception",
    "map_libvirt_error",
]


class HypervisorError(Exception):
    """Base class. ``vm``/``host`` say where; ``cause`` keeps the library's text."""

    def __init__(self, message: str, *, vm: str = "", host: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.vm = vm
        self.host = host
        self.cause = cause


class InvalidSpec(HypervisorError):
    """The VM spec cannot be turned into a definition (bad name, bad path, bad value)."""


class VmNotFound(HypervisorError):
    """The host has no VM of that name."""


class AlreadyExists(HypervisorError):
    """A VM of that name (or UUID) is already defined on the host."""


class InvalidState(HypervisorError):
    """The VM is not in a state that allows the operation (e.g. destroy a stopped VM)."""


class Unsupported(HypervisorError):
    """The backend or its driver cannot do this (e.g. live migration on test:///)."""


class HostUnreachable(HypervisorError):
    """The connection to the host's hypervisor failed or broke."""


class MigrationFailed(HypervisorError):
    """The migration started but did not complete; the VM stays on the source host."""


class BackendUnavailable(HypervisorError):
    """A library or kernel feature the backend needs is missing on this machine."""


# libvirt virErrorNumber values (libvirt/virterror.h; stable ABI since they are public).
_VIR_ERR = {
    "INTERNAL_ERROR": 1,
    "NO_SUPPORT": 3,
    "NO_CONNECT": 5,
    "INVALID_CONN": 6,
    "INVALID_DOMAIN": 7,
    "INVALID_ARG": 8,
    "OPERATION_FAILED": 9,
    "XML_ERROR": 27,
    "DOM_EXIST": 28,
    "XML_DETAIL": 35,
    "SYSTEM_ERROR": 38,
    "RPC": 39,
    "NO_DOMAIN": 42,
    "AUTH_FAILED": 45,
    "OPERATION_INVALID": 55,
    "CONFIG_UNSUPPORTED": 67,
    "OPERATION_TIMEOUT": 68,
    "MIGRATE_PERSIST_FAILED": 69,
    "ARGUMENT_UNSUPPORTED": 74,
    "OPERATION_ABORTED": 78,
    "MIGRATE_UNSAFE": 81,
    "OPERATION_UNSUPPORTED": 84,
    "RESOURCE_BUSY": 87,
    "ACCESS_DENIED": 88,
    "AUTH_UNAVAILABLE": 94,
}

#: code -> (error class, what it means in our words)
_TABLE: dict[int, tuple[type[HypervisorError], str]] = {
    _VIR_ERR["NO_DOMAIN"]: (VmNotFound, "no such VM on this host"),
    _VIR_ERR["INVALID_DOMAIN"]: (VmNotFound, "the VM handle is no longer valid"),
    _VIR_ERR["DOM_EXIST"]: (AlreadyExists, "a VM with this name or UUID already exists"),
    _VIR_ERR["OPERATION_INVALID"]: (InvalidState, "the VM is not in a state that allows this"),
    _VIR_ERR["NO_SUPPORT"]: (Unsupported, "the hypervisor driver does not support this"),
    _VIR_ERR["ARGUMENT_UNSUPPORTED"]: (Unsupported, "the driver does not support this option"),
    _VIR_ERR["OPERATION_UNSUPPORTED"]: (Unsupported, "the driver does not support this"),
    _VIR_ERR["CONFIG_UNSUPPORTED"]: (InvalidSpec, "the host cannot run this configuration"),
    _VIR_ERR["XML_ERROR"]: (InvalidSpec, "the domain definition was rejected"),
    _VIR_ERR["XML_DETAIL"]: (InvalidSpec, "the domain definition was rejected"),
    _VIR_ERR["INVALID_ARG"]: (InvalidSpec, "invalid argument"),
    _VIR_ERR["NO_CONNECT"]: (HostUnreachable, "cannot connect to the hypervisor"),
    _VIR_ERR["INVALID_CONN"]: (HostUnreachable, "the hypervisor connection is closed"),
    _VIR_ERR["RPC"]: (HostUnreachable, "lost contact with the hypervisor daemon"),
    _VIR_ERR["AUTH_FAILED"]: (HostUnreachable, "authentication to the hypervisor failed"),
    _VIR_ERR["AUTH_UNAVAILABLE"]: (HostUnreachable, "authentication is unavailable"),
    _VIR_ERR["ACCESS_DENIED"]: (HostUnreachable, "access denied by the hypervisor"),
    _VIR_ERR["OPERATION_TIMEOUT"]: (HypervisorError, "the hypervisor timed out"),
    _VIR_ERR["RESOURCE_BUSY"]: (InvalidState, "a resource the VM needs is busy"),
    _VIR_ERR["MIGRATE_PERSIST_FAILED"]: (
        MigrationFailed,
        "migrated, but the definition could not be made persistent on the destination",
    ),
    _VIR_ERR["MIGRATE_UNSAFE"]: (MigrationFailed, "migration would be unsafe (disk cache)"),
    _VIR_ERR["OPERATION_ABORTED"]: (MigrationFailed, "the operation was aborted"),
}

#: substrings of libvirt's message that refine a generic code (OPERATION_FAILED, INTERNAL)
_BY_TEXT: tuple[tuple[str, type[HypervisorError], str], ...] = (
    ("already defined", AlreadyExists, "a VM with this name or UUID already exists"),
    ("already exists", AlreadyExists, "a VM with this name or UUID already exists"),
    ("is not running", InvalidState, "the VM is not running"),
    ("is already active", InvalidState, "the VM is already running"),
    ("migrate to the same host", MigrationFailed, "source and destination are the same host"),
    ("cannot allocate memory", HypervisorError, "the host is out of memory"),
)


def map_libvirt_error(
    code: int,
    message: str,
    *,
    operation: str,
    vm: str = "",
    host: str = "",
    migrating: bool = False,
) -> HypervisorError:
    """Turn libvirt's (code, message) into our error with a sentence a user can act on.

    ``operation`` is our verb ("create", "migrate to h2", ...). During a migration a failure
    that is not more specific becomes ``MigrationFailed``.
    """
    cls, meaning = _TABLE.get(code, (HypervisorError, ""))
    lowered = message.lower()
    if cls is HypervisorError or code == _VIR_ERR["OPERATION_FAILED"]:
        for needle, text_cls, text_meaning in _BY_TEXT:
            if needle in lowered:
                cls, meaning = text_cls, text_meaning
                break
    if migrating and cls in (HypervisorError, InvalidState):
        cls = MigrationFailed
    where = " ".join(part for part in (f"vm {vm!r}" if vm else "", f"on {host}" if host else ""))
    head = f"{operation} {where}".strip()
    body = meaning or "hypervisor error"
    text = f"{head}: {body} (libvirt error {code}: {message.strip()})"
    return cls(text, vm=vm, host=host, cause=message)


def from_libvirt_exception(
    exc: Any, *, operation: str, vm: str = "", host: str = "", migrating: bool = False
) -> HypervisorError:
    """Map a ``libvirt.libvirtError`` (duck-typed: ``get_error_code`` / message)."""
    code = exc.get_error_code() if hasattr(exc, "get_error_code") else -1
    message = (exc.get_error_message() if hasattr(exc, "get_error_message") else "") or str(exc)
    return map_libvirt_error(
        int(code or -1), message, operation=operation, vm=vm, host=host, migrating=migrating
    )
