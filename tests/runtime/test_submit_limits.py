"""A vjob whose VMs or constraints the partition messages cannot carry is refused at
submit, naming the VM or constraint and the limit (a peer would drop the message as
malformed, and the vjob would fail with no reason)."""

import pytest

from dvms.runtime.client import ControlError
from dvms.runtime.control.commands import launch_from_map


def vm(**kw):
    return {"name": "x1", "namespace": "", "vcpus": 1, "memory_mib": 512, **kw}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"vms": [vm(vcpus=9999)]}, "vm x1: vcpus = 9999 is outside [1, 4096]"),
        (
            {"vms": [vm()], "constraints": [{"kind": "spread", "vms": ["x1"] * 5000}]},
            "constraint spread: vms 5000 items exceed 4096",
        ),
    ],
)
def test_what_the_wire_cannot_carry_is_refused_at_submit(body, says):
    with pytest.raises(ControlError, match=says.replace("[", r"\[")):
        launch_from_map(body)


def test_what_fits_passes():
    vms, constraints = launch_from_map({"vms": [vm(vcpus=4096)]})
    assert vms[0].vcpus == 4096 and constraints == ()
