"""Kademlia parameters: one frozen dataclass, every field with its unit and source.

Sources: Maymounkov & Mazieres (IPTPS 2002) for k, alpha and the staleness rule;
go-libp2p-kad-dht / rust-libp2p for refresh, record TTLs and IP-diversity limits
(Kademlia and libp2p's parameters, docs/references.md). Profiles: ``lan()`` (the default),
``wan()`` and ``local()`` (fast timers for tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["KademliaConfig"]


@dataclass(frozen=True, slots=True)
class KademliaConfig:
    #: Bits in a node id / key (SHA-1 size, as in the paper).
    id_bits: int = 160
    #: Bucket size and replication factor (paper, libp2p).
    k: int = 20
    #: Parallel RPCs per lookup (paper, rust-libp2p, libp2p spec).
    alpha: int = 3
    #: Candidates kept in a full bucket's replacement cache (most recent first).
    replacement_cache: int = 20
    #: Consecutive failed RPCs (each already retried) before a contact is stale; a stale
    #: contact is replaced as soon as a replacement exists (paper section 2.2 keeps stale
    #: contacts while nothing better is known).
    stale_after_failures: int = 3
    #: Failed RPCs after which a contact is removed even without a replacement.
    drop_after_failures: int = 5
    #: Ping the least-recently-seen contact of a full bucket before evicting it, but only
    #: when it has been silent this long (seconds); avoids a ping per newcomer.
    evict_ping_after_s: float = 30.0

    #: Datagram attempts per RPC (1 + retries). With 5 % loss each way, 4 attempts leave
    #: a live peer unanswered with probability ~1e-4.
    rpc_attempts: int = 4
    #: Timeout of the first attempt to a peer with no RTT history, seconds.
    rpc_timeout_s: float = 1.0
    #: Bounds of the adaptive per-peer timeout srtt + 4 * rttvar (RFC 6298 style), seconds.
    rto_min_s: float = 0.05
    rto_max_s: float = 5.0
    #: Multiplier applied to the timeout on each retry (1 + 1.5 + 2.25 + 3.4 = 8.1 RTOs
    #: before a silent peer counts as failed).
    rto_backoff: float = 1.5
    #: A lookup asks a node once more after a failed RPC if it was answering until then
    #: (under 5 % loss a live node loses all 4 attempts of ~1 RPC in 10,000, and the
    #: lookup would miss one of the k closest); this many datagrams for that second RPC.
    #: 0 turns the retry off.
    lookup_retry_attempts: int = 2
    #: Deadline of a whole lookup, seconds (rust-libp2p query timeout is 60 s).
    lookup_timeout_s: float = 60.0
    #: A join whose seeds all failed, or whose join lookup no other node answered, starts
    #: again from the seeds after this long, seconds (ours).
    join_retry_s: float = 5.0

    #: A crawl (``crawl.py``: every node of the overlay, for cluster-wide views) keeps at
    #: most this many FindNode RPCs in flight (ours; the libp2p crawler runs 1,000
    #: workers against the public DHT, we keep a cluster's own traffic modest).
    crawl_parallelism: int = 32
    #: Deadline of a whole crawl, seconds (ours): nodes not read by then are reported
    #: as unfinished. A 10,000-node crawl is ~100,000 RPCs: ~3 s at 1 ms per RPC.
    crawl_timeout_s: float = 30.0

    #: A node stopping cleanly tells every peer of its routing table (``Leave``); the
    #: datagram attempts per peer (ours: the stop should not wait long for a dead peer).
    leave_attempts: int = 2
    #: Peers remembered as left (a clean stop) until heard from again, the oldest
    #: forgotten first (ours; serf keeps left members as tombstones for 24 h).
    left_memory: int = 1024

    #: Refresh a bucket not used by a lookup for this long, seconds (go-libp2p: 10 min).
    refresh_interval_s: float = 600.0
    #: Highest common-prefix length refreshed (go-libp2p-kbucket maxCplForRefresh).
    refresh_max_cpl: int = 15
    #: A refresh lookup (at join, or of a stale bucket) only needs to meet live nodes in
    #: the bucket's range, not the exact k closest: it ends once this many of the closest
    #: have answered (libp2p's "resiliency" beta = 3). About a third of a full lookup.
    refresh_beta: int = 3

    #: Vivaldi probe period once the coordinate has settled, seconds. RTT samples also ride
    #: on every other RPC; this only guarantees a steady trickle. (Serf probes every 1 s
    #: for failure detection; our failure detection rides on RPCs, so a slow trickle is
    #: enough to track a slowly changing network.)
    probe_interval_s: float = 10.0
    #: Faster probe period while a node is new: until it has taken ``probe_fast_samples``
    #: RTT samples (from any RPC) or its error estimate is down to
    #: ``probe_fast_settled_error``; later, for a bounded burst whenever the estimate
    #: exceeds ``probe_fast_error`` (the network changed under it).
    probe_fast_interval_s: float = 1.0
    #: Samples after which a coordinate has converged: Vivaldi on the WonderNetwork
    #: matrix reaches a median relative error of 0.10 after ~150 samples per node
    #: (dvms/vivaldi/README.md).
    probe_fast_samples: int = 150
    #: A new coordinate whose error estimate is already at or below this has converged
    #: however few samples it took, and leaves the fast period (unitless). Ours: on the
    #: WonderNetwork matrix the median estimate is still 0.15 after 150 samples, so most
    #: nodes of a WAN probe fast as long as before; on a LAN (50 µs) it is ~0.05 after
    #: ~50 samples, and another 100 probes at 1 s would teach it nothing. At 0.1, the
    #: WAN nodes that left early cost the overlay simulation ~5 % of its Vivaldi
    #: accuracy; at 0.07 its median and p90 errors are those of a full fast period.
    probe_fast_settled_error: float = 0.07
    #: Coordinate error estimate above which probing goes fast again (unitless, a
    #: relative error), for at most ``probe_fast_burst`` probes.
    probe_fast_error: float = 0.5
    #: Most fast probes per error surge, once the coordinate is no longer new. Count
    #: (ours). A clean run of samples brings the estimate from its clamp
    #: (``VivaldiConfig.error_max``, 1.5) below 0.5 in about 10 samples, and RPCs add
    #: more: 20 probes are enough when probing helps. When the estimate stays high
    #: (a noisy path; on a 50 µs LAN, coordinates still spread by milliseconds after a
    #: reordering window keep it at the clamp for minutes), faster probing does not help
    #: and would cost one Ping/Pong per node per second.
    probe_fast_burst: int = 20
    #: A new surge may start only after the estimate has fallen to or below this
    #: (unitless; hysteresis, so an estimate hovering at ``probe_fast_error`` does not
    #: start a burst at every crossing). Ours: half of ``probe_fast_error``.
    probe_fast_rearm_error: float = 0.25

    #: Lifetime of a stored record on a replica, seconds (libp2p MaxRecordAge: 48 h).
    record_ttl_s: float = 48 * 3600.0
    #: The publisher re-stores its records this often, seconds (rust-libp2p: 22 h).
    republish_interval_s: float = 22 * 3600.0
    #: Period of the record housekeeping: expire stored records and republish our own
    #: that are due, seconds (ours).
    housekeeping_interval_s: float = 60.0
    #: Most records one node stores for others (memory bound against abuse).
    max_records: int = 100_000
    #: Largest record value, bytes.
    max_record_value: int = 4096

    #: At most this many contacts from one public /24 (IPv4) or /48 (IPv6) per bucket and
    #: per table (go-libp2p defaults). Loopback, private and link-local addresses are
    #: exempt: a data-centre cluster legitimately lives in one subnet.
    max_per_ip_group_bucket: int = 2
    max_per_ip_group_table: int = 3

    def __post_init__(self) -> None:
        if not 8 <= self.id_bits <= 256 or self.id_bits % 8:
            raise ValueError("id_bits must be a multiple of 8 in [8, 256]")
        if self.lookup_retry_attempts < 0:
            raise ValueError("lookup_retry_attempts must be >= 0")
        if self.k < 1 or self.alpha < 1 or self.rpc_attempts < 1 or self.crawl_parallelism < 1:
            raise ValueError("k, alpha, rpc_attempts and crawl_parallelism must be >= 1")
        if self.leave_attempts < 1 or self.left_memory < 0:
            raise ValueError("leave_attempts must be >= 1 and left_memory >= 0")
        if self.probe_fast_burst < 0:
            raise ValueError("probe_fast_burst must be >= 0")
        if self.probe_fast_settled_error < 0.0:
            raise ValueError("probe_fast_settled_error must be >= 0")
        if not 0.0 <= self.probe_fast_rearm_error <= self.probe_fast_error:
            raise ValueError("probe_fast_rearm_error must be in [0, probe_fast_error]")
        if self.republish_interval_s >= self.record_ttl_s:
            raise ValueError("republish_interval_s must be shorter than record_ttl_s")

    @classmethod
    def lan(cls) -> KademliaConfig:
        return cls()

    @classmethod
    def wan(cls) -> KademliaConfig:
        return replace(cls(), rpc_timeout_s=2.0, rto_min_s=0.2)

    @classmethod
    def local(cls) -> KademliaConfig:
        """Fast timers for tests on loopback: short refresh and probe periods."""
        return replace(
            cls(),
            rpc_timeout_s=0.5,
            rto_min_s=0.02,
            refresh_interval_s=20.0,
            probe_interval_s=1.0,
            probe_fast_interval_s=0.25,
            evict_ping_after_s=2.0,
        )
