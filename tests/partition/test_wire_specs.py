"""The partition's wire records and the placement specs they mirror: each wire type
carries every field of its spec but those named here, and converts both ways."""

from __future__ import annotations

from dataclasses import fields

from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.placement.spec import ConstraintSpec, VmSpec


def names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def test_the_wire_types_mirror_their_specs_but_for_the_named_fields() -> None:
    assert names(ConstraintSpec) - names(WireConstraint) == {"where"}
    assert names(WireConstraint) - names(ConstraintSpec) == set()
    # the host's business; the files a VM boots from travel with it, so that whichever host
    # a partition picks can fetch (file:NAME) and boot them
    local_only = {"tags"}
    # the user's HA policy and the copy's generation travel as the HA tag the restart
    # protocol keeps (dvms.ha)
    assert names(VmSpec) - names(LaunchVm) == local_only | {"ha_policy", "ha_generation"}
    # set on the way: the constraints by the leader, the images' roots by the entry node
    assert names(LaunchVm) - names(VmSpec) == {"constraints", "images", "ha"}


def test_a_spec_survives_the_wire_but_for_its_local_fields() -> None:
    c = ConstraintSpec(
        "among", ("a", "b"), groups=(("h1",), ("h2", "h3")), soft=True, weight=2.0, where=(3, 4)
    )
    wire = WireConstraint.from_spec(c)
    assert wire == WireConstraint(
        "among", ("a", "b"), groups=(("h1",), ("h2", "h3")), soft=True, weight=2.0
    )
    assert wire.to_spec() == ConstraintSpec(
        "among", ("a", "b"), groups=(("h1",), ("h2", "h3")), soft=True, weight=2.0
    )
    vm = VmSpec(
        "web", "ns", 2, 1024, ("lan",), disk="d.qcow2", schedule="h1", colocate="db", append="x"
    )
    launch = LaunchVm.from_spec(vm)
    assert launch == LaunchVm(
        "web", "ns", 2, 1024, ("lan",), "h1", -1, "db", disk="d.qcow2", append="x"
    )
    assert launch.to_spec() == vm  # the boot files and kernel line travel with the VM
