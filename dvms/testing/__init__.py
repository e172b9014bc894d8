"""Test support shipped with the package: an in-memory cluster of real node cores driven
by the simulator's engine (``cluster``) and the partition invariant checker."""

from dvms.sim.invariants import InvariantChecker

__all__ = ["InvariantChecker"]
