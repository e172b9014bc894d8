"""Status values are printed for people, not as Python reprs."""

import pytest

from dvms.cli.node import for_people


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({}, "-"),
        ([], "-"),
        (None, "-"),
        (True, "yes"),
        (False, "no"),
        (1.2818, "1.2818"),
        ({"rpc": 5, "bad_mac": 2}, "bad_mac=2, rpc=5"),
        (["br0", "br1"], "br0, br1"),
        ({"leases": {"held": 1}}, "leases=held=1"),
        ("free", "free"),
    ],
)
def test_status_values_read_as_words(value, text):
    assert for_people(value) == text
