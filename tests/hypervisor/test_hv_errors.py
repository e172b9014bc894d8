"""libvirt errors become our classes with a message naming the VM, the host and the cause."""

from __future__ import annotations

import pytest

from dvms.hypervisor.errors import (
    AlreadyExists,
    HostUnreachable,
    HypervisorError,
    InvalidSpec,
    InvalidState,
    MigrationFailed,
    Unsupported,
    VmNotFound,
    map_libvirt_error,
)

CASES = [
    # code, libvirt message, migrating, expected class, words our message must contain
    (42, "Domain not found: no domain with matching name 'x'", False, VmNotFound, "no such VM"),
    (55, "Requested operation is not valid: domain is not running", False, InvalidState, "state"),
    (9, "operation failed: domain 'x' is already defined with uuid 1", False, AlreadyExists, ""),
    (28, "domain 'x' already exists", False, AlreadyExists, "already exists"),
    (
        3,
        "this function is not supported by the connection driver: virDomainMigrate",
        False,
        Unsupported,
        "does not support",
    ),
    (
        74,
        "argument unsupported: p2p migration is not supported by the source host",
        True,
        Unsupported,
        "option",
    ),
    (
        38,
        "Unable to connect to server at '10.0.0.2:16509': Connection refused",
        False,
        HypervisorError,
        "hypervisor error",
    ),
    (38, "Unable to connect to server: Connection refused", True, MigrationFailed, ""),
    (
        5,
        "Failed to connect socket to '/run/libvirt/libvirt-sock'",
        False,
        HostUnreachable,
        "cannot connect",
    ),
    (39, "End of file while reading data: Input/output error", False, HostUnreachable, "lost"),
    (27, "XML error: expected unit", False, InvalidSpec, "rejected"),
    (9, "operation failed: migrate to the same host", True, MigrationFailed, "same host"),
    (55, "domain is not running", True, MigrationFailed, ""),
    (1, "internal error: something odd", False, HypervisorError, "hypervisor error"),
    (69, "persist failed", True, MigrationFailed, "persistent"),
]


@pytest.mark.parametrize(("code", "text", "migrating", "cls", "words"), CASES)
def test_mapping_table(code, text, migrating, cls, words):
    err = map_libvirt_error(
        code, text, operation="destroy", vm="web1", host="h2", migrating=migrating
    )
    assert type(err) is cls
    msg = str(err)
    assert msg.startswith("destroy vm 'web1' on h2: ")
    assert words in msg
    assert f"libvirt error {code}: {text}" in msg  # the library's words are kept
    assert (err.vm, err.host, err.cause) == ("web1", "h2", text)


def test_real_libvirt_errors_map(tmp_path):
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python not installed")
    from dvms.hypervisor.errors import from_libvirt_exception

    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test:///default")
    try:
        with pytest.raises(libvirt.libvirtError) as info:
            conn.lookupByName("no-such-vm")
        err = from_libvirt_exception(info.value, operation="info", vm="no-such-vm")
        assert isinstance(err, VmNotFound)
        dom = conn.lookupByName("test")
        with pytest.raises(libvirt.libvirtError) as info:
            dom.migrateToURI3("test:///default", {}, libvirt.VIR_MIGRATE_PEER2PEER)
        err = from_libvirt_exception(info.value, operation="migrate", vm="test", migrating=True)
        assert isinstance(err, Unsupported)
    finally:
        conn.close()
