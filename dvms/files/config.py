"""Configuration of file sharing (``[files]`` of the node TOML)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FilesConfig"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """File store, provider records and swarm transfers. Sizes in bytes, times in
    seconds; the defaults suit a data-centre LAN."""

    #: Chunk size of files added here (4 MiB: BitTorrent v2 and IPFS use 16 KiB-4 MiB;
    #: larger chunks mean fewer hashes and requests, smaller ones spread sooner).
    chunk_bytes: int = 4 * MIB
    #: Largest chunk accepted in a peer's manifest (a bound on one read into memory).
    max_chunk_bytes: int = 64 * MIB
    #: Size of the store under the state dir (``files/``); 0 = bounded by the disk only.
    capacity_bytes: int = 0
    #: Eviction: when a new file would take the store above ``high_watermark`` of
    #: ``capacity_bytes``, unpinned files are evicted least-recently-used until it fits
    #: under ``low_watermark`` (fractions; squid's cache_swap_high/low, 0.95/0.90).
    high_watermark: float = 0.95
    low_watermark: float = 0.85
    #: Free space left on the disk after preallocating a file, bytes.
    reserve_bytes: int = 64 * MIB
    #: Provider records: lifetime on the nodes that keep them, and how often a holder
    #: announces again (libp2p's IPFS DHT: 48 h / 22 h; a LAN cluster churns faster).
    provider_ttl_s: float = 3 * 3600.0
    republish_s: float = 3600.0
    #: Nodes closest to a root that keep its provider records.
    provider_replicas: int = 5
    #: Provider records answered per lookup, and kept by one node in all.
    max_providers: int = 64
    max_provider_records: int = 100_000
    #: Chunks in flight from one peer, and in total for one transfer.
    per_peer_inflight: int = 4
    total_inflight: int = 16
    #: A peer that sends this many chunks that fail their hash is banned for the transfer.
    ban_after_bad: int = 3
    #: Providers are looked up again this often while a transfer lacks peers, seconds.
    find_period_s: float = 1.0
    #: A partial provider is asked for its bitmap again after this long, seconds.
    have_poll_s: float = 0.25
    #: One stream operation (connect + handshake, or one request), seconds.
    stream_timeout_s: float = 30.0
    #: Largest control frame on a file stream (manifests travel in one), bytes.
    max_frame_bytes: int = 4 * MIB
    #: Upload rate of this node, bytes/s, shared by all its streams; 0 = unlimited
    #: (tests and benchmarks use it to model a host's link on loopback).
    upload_bytes_s: float = 0.0
    #: Chunks this node sends at once; more requests wait their turn (BitTorrent's 4
    #: upload slots): a few chunks finish fast and spread, rather than all finishing late.
    upload_slots: int = 4
    #: Chunk requests that may wait for an upload slot; one more is answered "busy" at
    #: once (BitTorrent's choking): the asker fetches that chunk elsewhere, or asks
    #: again after ``busy_backoff_s``, so a seed's link carries chunks the swarm lacks
    #: rather than a long queue of chunks others could have sent.
    upload_queue: int = 0
    busy_backoff_s: float = 0.1
    #: A VM's ``file:`` disk, kernel or initrd: how long its host waits for the fetch
    #: before the creation fails, seconds.
    vm_fetch_timeout_s: float = 1800.0
    #: How often the pins of VMs not defined on this host are dropped, seconds, and how
    #: long a new pin is kept before its VM must exist (creation follows the fetch).
    pin_check_s: float = 10.0
    pin_grace_s: float = 60.0
    #: Image locality (docs/placement.md): this host tells its partition leaders about
    #: at most this many files it holds, the largest held first (each costs ~60 bytes of
    #: the member's state message), refreshed every ``held_refresh_s`` seconds.
    placement_images: int = 32
    held_refresh_s: float = 2.0
    #: Stream listener: host ("" = the node's overlay address) and port (0 = any).
    listen_host: str = ""
    listen_port: int = 0
    #: Flush each chunk to disk before it is marked done (a power loss then never marks
    #: a chunk whose data was lost; a killed process loses nothing either way).
    sync_chunks: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.chunk_bytes <= self.max_chunk_bytes:
            raise ValueError("chunk_bytes must be > 0 and at most max_chunk_bytes")
        if not 0.0 < self.low_watermark <= self.high_watermark <= 1.0:
            raise ValueError("need 0 < low_watermark <= high_watermark <= 1")
        if self.capacity_bytes < 0 or self.reserve_bytes < 0 or self.upload_bytes_s < 0:
            raise ValueError("capacity_bytes, reserve_bytes and upload_bytes_s must be >= 0")
        if min(self.per_peer_inflight, self.total_inflight, self.ban_after_bad) < 1:
            raise ValueError("per_peer_inflight, total_inflight and ban_after_bad must be >= 1")
        if self.upload_slots < 1 or self.upload_queue < 0 or self.busy_backoff_s <= 0:
            raise ValueError("need upload_slots >= 1, upload_queue >= 0, busy_backoff_s > 0")
        if min(self.provider_replicas, self.max_providers, self.max_provider_records) < 1:
            raise ValueError(
                "provider_replicas, max_providers and max_provider_records must be >= 1"
            )
        if not 0 < self.republish_s < self.provider_ttl_s:
            raise ValueError("need 0 < republish_s < provider_ttl_s")
        if min(self.find_period_s, self.have_poll_s, self.stream_timeout_s) <= 0:
            raise ValueError("find_period_s, have_poll_s and stream_timeout_s must be > 0")
        if min(self.vm_fetch_timeout_s, self.pin_check_s, self.pin_grace_s) <= 0:
            raise ValueError("vm_fetch_timeout_s, pin_check_s and pin_grace_s must be > 0")
        if not 0 <= self.placement_images <= 256 or self.held_refresh_s <= 0:
            raise ValueError("need 0 <= placement_images <= 256 and held_refresh_s > 0")
        if not 0 <= self.listen_port <= 65535:
            raise ValueError("listen_port must be in 0..65535")
