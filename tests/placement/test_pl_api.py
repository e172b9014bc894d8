"""The package's public surface is explicit and importable."""

import dvms.placement as placement


def test_exports_resolve():
    for name in placement.__all__:
        assert getattr(placement, name) is not None, name
    assert {"solve_launch", "solve_repair", "check_plan", "Snapshot"} <= set(placement.__all__)
