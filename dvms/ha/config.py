"""High-availability protocol parameters (``dvms.ha``): one frozen dataclass, units and
sources per field. The daemon reads them from the ``[ha]`` table of its config file."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HaConfig"]


@dataclass(frozen=True, slots=True)
class HaConfig:
    #: Guardians per HA VM: the overlay nodes closest to the VM's key that hold its
    #: record (ours; Kademlia's replication idea with a small odd k for majorities).
    #: 5, not 3: a VM survives two guardians failing before the owner replaces the
    #: first (3 of 5 remain a majority; with 3, two crashes 1 s apart lose the VM), and
    #: three of five guardians are far less often cut off together with a minority of
    #: hosts, which makes the owner fence and the VM restart inside that minority
    #: (``ha-small`` over 40 seeds, 3 -> 5: VMs lost in 5 seeds -> 0; docs/ha.md). The
    #: cost is renewal traffic: one message per guardian per ``renew_period_s``.
    guardians: int = 5
    #: The owner sends its renewals this often, seconds (Nomad heartbeats: ~10 s TTL).
    renew_period_s: float = 2.0
    #: A lease lasts this long after the renewal that a majority of the guardians
    #: acknowledged, seconds (vSphere HA declares a host failed after 15 s).
    lease_s: float = 10.0
    #: The owner (and its host's watchdog) fences this long before its lease ends,
    #: seconds: room for clocks that run at slightly different rates (ours).
    fence_margin_s: float = 1.0
    #: The guardian closest to the VM's key proposes the restart first; the next one
    #: waits this long more per rank, seconds (ours).
    propose_stagger_s: float = 1.0
    #: A proposal that did not get a majority of votes is tried again after this long,
    #: seconds (ours).
    propose_retry_s: float = 1.0
    #: A guardian that voted for a restart refuses other proposals and the old owner's
    #: renewals for this long, seconds; the restarted copy's owner renews well before
    #: (ours: covers a launch and the first renewal).
    promise_s: float = 60.0
    #: VMs that are ready to restart wait this long to go out together in one launch
    #: event, seconds (ours).
    batch_window_s: float = 0.5
    #: At most this many VMs per restart launch event, high priority first (ours: a
    #: partition places a few dozen VMs in one solver call).
    batch_max: int = 32
    #: The owner replaces a guardian that has not acknowledged a renewal for this long
    #: by the next closest node, seconds (ours).
    replace_after_s: float = 5.0
    #: One renewal datagram to a guardian carries at most this many bytes of VM records,
    #: more go in further pages of the same round (ours: a record is ~160-250 bytes;
    #: 48,000 leaves room for the envelope under UDP's 65,507-byte payload).
    renew_max_bytes: int = 48_000
    #: A guardian replaced for silence is not chosen again by this owner for this
    #: long unless it acknowledges again, seconds (ours: the routing table can show a
    #: crashed node as healthy for longer; without this, two dead nodes closest to a
    #: key replace each other in turn and the VM keeps only the live rest).
    avoid_silent_s: float = 120.0

    def __post_init__(self) -> None:
        if self.guardians < 1:
            raise ValueError("ha.guardians: must be >= 1")
        for name in ("renew_period_s", "lease_s", "promise_s", "propose_retry_s", "avoid_silent_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ha.{name}: must be > 0")
        if not 0 <= self.fence_margin_s < self.lease_s:
            raise ValueError("ha.fence_margin_s: must be >= 0 and below lease_s")
        if self.renew_period_s >= self.lease_s - self.fence_margin_s:
            raise ValueError("ha.renew_period_s: must be below lease_s - fence_margin_s")
        if self.renew_max_bytes < 1024:
            raise ValueError("ha.renew_max_bytes: must be >= 1024")
        if self.batch_max < 1 or self.batch_window_s < 0 or self.propose_stagger_s < 0:
            raise ValueError("ha.batch_max >= 1, batch_window_s and propose_stagger_s >= 0")

    @property
    def majority(self) -> int:
        return self.guardians // 2 + 1
