"""Partition protocol parameters: one frozen dataclass, units and sources per field.

Sources: DVMS 2 (``DvmsActor.scala``) and VMPlaceS (``dvms2``), see
DVMS's published code and VMPlaceS's setup (docs/references.md); our own additions
are marked.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["RECRUITMENT", "PartitionConfig", "Recruitment"]

#: Recruitment strategies: the order in which an ISP visits candidate nodes
#: (``PartitionConfig.recruitment``, ``dvms.partition.recruit``).
Recruitment = Literal["vivaldi", "ring", "random"]
#: The strategies' names, in that order (for command-line choices and messages).
RECRUITMENT: tuple[Recruitment, ...] = typing.get_args(Recruitment)


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    #: A member dissolves its partition after this long without an update, seconds
    #: (DVMS 2: 3.5 s; VMPlaceS: 4.5 s).
    lease_s: float = 3.5
    #: How often members check their lease, seconds (DVMS 2: 0.5 s).
    lease_check_s: float = 0.5
    #: Leader keep-alive period while it solves and acts, seconds (DVMS 2: 0.5 s).
    keepalive_s: float = 0.5
    #: Local monitor period: overload checks and retries of pending events, seconds
    #: (DVMS 2 / VMPlaceS: 1 s).
    monitor_period_s: float = 1.0
    #: Recruitment order: "vivaldi" (increasing predicted RTT from the initiator; the
    #: Euro-Par 2014 locality idea, ours by default), "ring" (node-id successor order, the
    #: original DVMS) or "random" (a uniformly random non-member, as VMPlaceS).
    recruitment: Recruitment = "vivaldi"
    #: Vivaldi recruitment compares predicted RTTs in steps of this size, seconds, and
    #: draws at random within a step (ours: coordinates cannot rank peers closer than
    #: their error, ~1 ms on a LAN).
    locality_resolution_s: float = 0.001
    #: Partitions smaller than this do not run the solver (VMPlaceS used 4). 2 is the
    #: smallest size at which a migration can relieve an overload.
    min_partition_size: int = 2
    #: Ours: a lap also ends when the partition reaches this size or the ISP has made this
    #: many hops (DVMS laps visit every node of the ring; on 10,000 nodes an unsolvable
    #: event would otherwise grow a 10,000-node partition).
    max_partition_size: int = 64
    max_hops: int = 256
    #: Request attempts and first timeout (doubled per retry) for partition RPCs; the
    #: first timeout follows the overlay's RTT estimate of the peer when it has one.
    rpc_attempts: int = 4
    rpc_timeout_s: float = 0.5
    #: Attempts for an ISP sent to a recruitment candidate, each after the same timeout
    #: (``rpc_timeout_s`` or the peer's RTO), not a doubling one (ours): a candidate
    #: answers at once, so a dead one costs 4 x 0.5 s = 2 s instead of 7.5 s per lap.
    #: Fewer attempts are not safer: an ISP whose every answer is lost looks like a dead
    #: candidate although it joined, and forwarding it elsewhere forks the partition
    #: (2 attempts are too few at 10 % loss). The ISP going home to its initiator keeps
    #: ``rpc_attempts`` with back-off.
    isp_attempts: int = 4
    #: A peer that let every attempt of a request time out is kept out of recruitment for
    #: this long, seconds, unless it is heard from again (ours; it is also reported to the
    #: overlay, which marks the routing-table contact failed).
    dead_peer_s: float = 30.0
    #: A member that heard nothing from its partition for this long, seconds, asks the
    #: leader whether it still holds the partition; if the leader does not answer (after
    #: ``isp_attempts``) and this member is the first in line, it takes over as leader
    #: (DVMS 2: "the detecting member makes itself leader"). Must leave the probe time
    #: within ``lease_s``: 1.0 + 0.5 + 1.0 = 2.5 s < 3.5 s.
    suspect_s: float = 1.0
    #: How long a leader waits for member states before dropping silent members, seconds.
    state_timeout_s: float = 2.0
    #: Encoded bytes of a member's host state in one ``MemberState`` at most (ours): a
    #: host whose VMs take more reports them in pages (``StatePage``), so a host of any
    #: number of VMs can join a partition (the daemon's datagrams hold 65,507 bytes;
    #: ~2,500 VMs of short names fit one page).
    state_bytes: int = 60000
    #: How long a leader waits for a started action (a live migration, a VM creation) to
    #: report its end before counting it failed, seconds (a 1 GiB VM takes ~10 s).
    action_timeout_s: float = 300.0
    #: How long an event's origin waits for the leader's ``Outcome`` once the partition
    #: dissolved as solved, seconds (ours). The leader gives up on an unanswered Outcome
    #: after ``rpc_attempts`` (0.5 + 1 + 2 + 4 = 7.5 s by default); past this wait the
    #: origin ends the event as solved without the leader's report.
    outcome_wait_s: float = 10.0
    #: Ask the initiator whether a Blocked partition is still wanted before joining it
    #: (DVMS 2 does, for Blocked ISPs only).
    staleness_check: bool = True
    #: Fraction of its CPU capacity a host may be filled to by a leader's plan (an
    #: overloaded host need only come back under capacity: ``solve._cpu_limit``). 1.0 is
    #: DVMS (just make the partition viable); below 1.0 leaves destinations headroom, so
    #: that the next load change does not put them straight into violation (ours).
    relief_target: float = 1.0
    #: A launch that failed is retried this many times before it is reported failed.
    launch_attempts: int = 3
    #: First back-off before a failed launch is retried, seconds; doubled per attempt,
    #: times a random factor in [0.5, 1.5) (ours: lets contending partitions finish).
    launch_retry_s: float = 0.05
    #: Write VM name -> host records to the DHT after each create and migration, and
    #: claim a launch's VM names there first (unique per namespace) (the issue's
    #: directory; ours, DVMS has none).
    directory: bool = True
    #: Nodes that store each directory record (the closest to its key), and how far its
    #: lookups go (ours; the overlay's k = 20 elsewhere). A record is rewritten by the
    #: VM's host at every create and move, so 5 copies suffice, and a lookup that
    #: settles on 5 nodes instead of 20 makes a new VM cost ~3x fewer datagrams.
    directory_replicas: int = 5
    #: Consolidation on underload (DVMS 1 only; off by default, as in DVMS 2 and
    #: VMPlaceS): a host with VMs whose measured CPU demand is at most
    #: ``underload_cpu`` of its capacity asks a partition to move every VM away (so that
    #: it could be switched off; switching it off is not ours to do).
    underload: bool = False
    #: Underload threshold, fraction of CPU capacity (DVMS 1: 20 %).
    underload_cpu: float = 0.2
    #: A node waits a random delay in [0, this) before raising an underload event, then
    #: checks again that it is free and still underloaded, seconds (DVMS 1: 3 s; low
    #: priority, so that overloads go first).
    underload_delay_s: float = 3.0
    #: After a failed underload event the node raises none for this long, seconds
    #: (DVMS 1: 20,000, most likely ms x 1000).
    underload_backoff_s: float = 20.0

    def __post_init__(self) -> None:
        if self.recruitment not in RECRUITMENT:
            raise ValueError(
                f"recruitment must be one of {', '.join(RECRUITMENT)}, not {self.recruitment!r}"
            )
        if self.min_partition_size < 1 or self.max_partition_size < self.min_partition_size:
            raise ValueError("need 1 <= min_partition_size <= max_partition_size")
        if not 1024 <= self.state_bytes <= 65000:
            raise ValueError("state_bytes must be in [1024, 65000]")
        if not 0.0 < self.relief_target <= 1.0:
            raise ValueError("relief_target must be a fraction in (0, 1]")
        if not 0.0 <= self.underload_cpu < 1.0:
            raise ValueError("underload_cpu must be in [0, 1)")
        for name in ("lease_s", "lease_check_s", "keepalive_s", "monitor_period_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_s >= self.lease_s:
            raise ValueError("keepalive_s must be shorter than lease_s")
        if self.directory_replicas < 1:
            raise ValueError("directory_replicas must be at least 1")
        if self.isp_attempts < 1 or self.rpc_attempts < 1:
            raise ValueError("isp_attempts and rpc_attempts must be at least 1")

    @classmethod
    def vmplaces(cls) -> PartitionConfig:
        """The VMPlaceS DVMS settings: lease 4.5 s, min partition 4, random recruitment."""
        return replace(cls(), lease_s=4.5, min_partition_size=4, recruitment="random")
