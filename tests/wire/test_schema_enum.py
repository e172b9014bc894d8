"""IntEnum fields travel as their int and decode to the member (any other value refused)."""

import pytest

from dvms.overlay.messages import Contact
from dvms.partition.messages import PartitionState, PartitionView, SetPartition
from dvms.wire.schema import SchemaError, compile_record

ME = Contact(1 << 150, "10.0.0.1", 7000)


def view(state: PartitionState) -> PartitionView:
    return PartitionView(7, 1, ME, ME, (ME,), state, ())


@pytest.mark.parametrize("state", list(PartitionState))
def test_a_partition_state_travels_as_its_int(state):
    enc, dec = compile_record(SetPartition)
    wire = enc(SetPartition(view(state)))
    assert type(wire[0][5]) is int and wire[0][5] == state.value
    got = dec(wire)
    assert got.view.state is state


@pytest.mark.parametrize("bad", [3, -1, True, 1.0, "1"])
def test_a_value_outside_the_enum_is_a_schema_error(bad):
    enc, dec = compile_record(SetPartition)
    wire = enc(SetPartition(view(PartitionState.GROWING)))
    wire[0][5] = bad
    with pytest.raises(SchemaError, match="state"):
        dec(wire)
