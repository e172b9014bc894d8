"""Per-peer rate limits on the requests that cost a node work (sans-I/O: ``now`` is an
argument). A peer holding the cluster key but misbehaving (a compromised node, a bug)
must not take a node down by asking too much.

Each expensive request belongs to a class, and each class has a token bucket per peer,
keyed by the datagram's source address (a flooder that makes up a new node id per
datagram still sends from one socket)::

    class      messages                                       why it costs
    datagram   every datagram, before its MAC is checked      reading, MAC, decoding
    lookup     FindNode, FindValue                            a closest-k search
    store      Store                                          a signature check, memory
    partition  Isp, SetPartition, StatePage, CanMerge,        partition work, driver
               StillValid, MigrateVm, CreateVm                calls
    request    node-to-node queries (runtime/messages.py)     a task, hypervisor reads

A request over its peer's bucket is dropped and counted (``drops``: ``rate_<class>``).
Answers, keep-alives and pings are never limited: they are cheap, and the protocols'
timers depend on them.

The table of buckets holds at most ``peers`` of them (least recently used evicted), so
the state kept per unknown sender is bounded; and a source address the table does not
hold yet gets a bucket only while the *newcomers* bucket (``new_peers_per_s``) has a
token: a flooder cycling through source addresses is held there (``new_peer_<class>``), and
the peers already known -- which a flood does not touch -- keep their own buckets.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

__all__ = ["LimitsConfig", "PeerLimiter", "TokenBucket"]

CLASSES = ("datagram", "lookup", "store", "partition", "request")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Resource limits against misbehaving peers (``[limits]``; ours). Rates are per
    second and per peer, bursts in requests; defaults sit well above what a healthy
    cluster sends one node (a lookup asks each node a few FindNodes; a crawl one)."""

    #: Every datagram from one source address, before anything else is done with it:
    #: a flood from one socket costs a dictionary lookup per datagram, so the node
    #: keeps reading its socket (and hears the other peers) faster than one flooder
    #: fills it.
    datagram_per_s: float = 2000.0
    datagram_burst: int = 4000
    lookup_per_s: float = 200.0
    lookup_burst: int = 400
    store_per_s: float = 100.0
    store_burst: int = 200
    partition_per_s: float = 50.0
    partition_burst: int = 100
    request_per_s: float = 200.0
    request_burst: int = 400
    #: New source addresses given a bucket, per second and at once (more: dropped).
    new_peers_per_s: float = 100.0
    new_peers_burst: int = 1000
    #: Per-peer buckets kept (least recently used evicted).
    peers: int = 4096
    #: Node-to-node queries answered at once; more are dropped (``busy``).
    serving: int = 256
    #: Control-plane requests of this node awaiting an answer; more fail at once
    #: (``rpc_table_full``).
    pending_rpcs: int = 8192
    #: Replay memory, entries (about 100 bytes each). Full: the oldest is forgotten and
    #: datagrams as old as it are dropped as ``replay_horizon`` (wire/replay.py).
    replay_entries: int = 262144

    def __post_init__(self) -> None:
        for name in CLASSES:
            if getattr(self, f"{name}_per_s") <= 0 or getattr(self, f"{name}_burst") < 1:
                raise ValueError(f"{name}_per_s must be > 0 and {name}_burst >= 1")
        if self.new_peers_per_s <= 0 or self.new_peers_burst < 1:
            raise ValueError("new_peers_per_s must be > 0 and new_peers_burst >= 1")
        if min(self.peers, self.serving, self.pending_rpcs, self.replay_entries) < 1:
            raise ValueError("peers, serving, pending_rpcs and replay_entries must be >= 1")

    def rate(self, cls: str) -> tuple[float, float]:
        """(tokens per second, burst) of one peer's bucket of class ``cls``."""
        return float(getattr(self, f"{cls}_per_s")), float(getattr(self, f"{cls}_burst"))


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``take`` spends one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PeerLimiter:
    """The buckets of one node: ``admit(peer, cls, now)`` says whether a request of
    class ``cls`` from ``peer`` (any hashable: a source address) is served."""

    def __init__(
        self,
        config: LimitsConfig | None = None,
        *,
        drops: Counter[str] | None = None,
        now: float = 0.0,
    ) -> None:
        """``drops``: where drops are counted (the daemon passes its codec's, so that
        every drop of a datagram is in one table)."""
        self.config = config or LimitsConfig()
        cfg = self.config
        self._newcomers = TokenBucket(cfg.new_peers_per_s, cfg.new_peers_burst, now)
        self._peers: OrderedDict[tuple[object, str], TokenBucket] = OrderedDict()
        self.drops: Counter[str] = Counter() if drops is None else drops

    def admit(self, peer: object, cls: str, now: float) -> bool:
        key = (peer, cls)
        peers = self._peers
        bucket = peers.get(key)
        if bucket is None:
            if not self._newcomers.take(now):
                self.drops[f"new_peer_{cls}"] += 1
                return False
            rate, burst = self.config.rate(cls)
            bucket = peers[key] = TokenBucket(rate, burst, now)
            if len(peers) > self.config.peers:
                peers.popitem(last=False)
        else:
            peers.move_to_end(key)
        if not bucket.take(now):
            self.drops[f"rate_{cls}"] += 1
            return False
        return True

    def __len__(self) -> int:
        return len(self._peers)
