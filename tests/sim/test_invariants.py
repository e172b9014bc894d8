"""The partition invariants' checker itself (``dvms.sim.invariants``)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from dvms.overlay.messages import Contact
from dvms.partition.base import Lead, LeadPhase
from dvms.partition.config import PartitionConfig
from dvms.partition.messages import FINISHING, PartitionView
from dvms.sim.invariants import ONE_PARTITION, InvariantChecker

A, B, M = (Contact(i, f"h{i}", 7400) for i in (1, 2, 3))


def leader(me: Contact, view: PartitionView) -> Any:
    part = SimpleNamespace(
        view=view,
        lead=Lead(phase=LeadPhase.ACTING),
        _holding=None,
        lease_until=100.0,
        held_by_migration=lambda: False,
    )
    core = SimpleNamespace(partition=part)
    return SimpleNamespace(
        node_id=me.node_id, alive=True, frozen=False, core=core, local=lambda now: now
    )


def view(pid: int, lead: Contact, version: int) -> PartitionView:
    return PartitionView(pid, version, A, lead, (lead, M), FINISHING, ())


def test_two_leaders_of_one_partition_id_claiming_a_node_are_a_violation_counted_once() -> None:
    """Before: claims were keyed by partition id only, so the two copies of a partition
    whose ISP forked under loss (same id, two leaders, both applying a plan) were never
    seen claiming the same host; and a conflict counted once per check while it lasted."""
    seen: list[str] = []
    checker = InvariantChecker(PartitionConfig(), seen.append)
    nodes = [leader(A, view(7, A, 9)), leader(B, view(7, B, 12))]
    for pos, node in enumerate(nodes):
        checker.changed(pos, node.core.partition.view, "leader", 0.0)
    checker.check(nodes, 1.0)
    checker.check(nodes, 2.0)
    assert checker.by_kind[ONE_PARTITION] == 1 and len(seen) == 1
    assert "node 3 claimed by partitions 7 (leader 1) and 7 (leader 2)" in seen[0]


def test_one_leader_claiming_its_members_is_no_violation() -> None:
    checker = InvariantChecker(PartitionConfig(), lambda what: None)
    nodes = [leader(A, view(7, A, 9)), leader(B, replace(view(8, B, 1), members=(B,)))]
    for pos, node in enumerate(nodes):
        checker.changed(pos, node.core.partition.view, "leader", 0.0)
    checker.check(nodes, 1.0)
    assert checker.by_kind[ONE_PARTITION] == 0


def member(view: PartitionView, last_update: float, migrating: list[int]) -> Any:
    """A plain member whose lease was last renewed at ``last_update``; a migration into
    its host runs while ``migrating[0]``."""
    part = SimpleNamespace(
        view=view,
        lead=None,
        _holding=None,
        lease_until=last_update + PartitionConfig().lease_s,
        held_by_migration=lambda: migrating[0] > 0,
    )
    core = SimpleNamespace(partition=part)
    return SimpleNamespace(
        node_id=M.node_id, alive=True, frozen=False, core=core, local=lambda now: now
    )


def test_the_end_of_a_run_allows_a_member_held_by_a_migration_its_next_lease_check() -> None:
    """Seed 472 of faults-200: a destination whose leader dissolved its partition while
    a VM migrated into its host stayed, as it must, until the VM landed (599.73 s), and
    would have left at its next lease check; the run ended at 600 s and the end-of-run
    count (its own rule: no grace after the migration) reported a stuck partition that
    the checker, while the run goes, allows for ``lease_check_s`` + 1 s."""
    cfg = PartitionConfig()
    migrating = [1]
    node = member(view(7, A, 5), 593.0, migrating)
    seen: list[str] = []
    checker = InvariantChecker(cfg, seen.append)
    checker.changed(0, node.core.partition.view, "member", 593.0)
    checker.check([node], 599.5)  # held: the VM is still in flight
    migrating[0] = 0  # it lands at 599.73 s
    assert checker.open_at_end([node], 600.0) == 0
    assert checker.open_at_end([node], 599.5 + cfg.lease_check_s + 1.1) == 1
    assert seen == []


def test_the_end_of_a_run_counts_a_member_past_its_lease() -> None:
    cfg = PartitionConfig()
    node = member(view(7, A, 5), 590.0, [0])
    checker = InvariantChecker(cfg, lambda what: None)
    assert checker.open_at_end([node], 590.0 + cfg.lease_s + 0.9) == 0
    assert checker.open_at_end([node], 590.0 + cfg.lease_s + 1.1) == 1
    node.frozen = True  # a stopped daemon frees nothing: left out
    assert checker.open_at_end([node], 600.0) == 0
