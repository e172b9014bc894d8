"""Image transfers in the simulated datacenter (``[images]`` of a scenario).

A launched VM boots from an image (``file:imgI``). Its host needs the image before the
VM is created: a host that lacks it fetches it from a holder first, and the creation
waits for that transfer::

    create_vm(image) ──> held here? ──yes──> create after create_s (a cache hit)
                            │ no
                            ▼
            a fetch of (host, image) already running? ──yes──> wait for it
                            │ no
                            ▼
    source = the holder whose transfer would end first:
             max(now, its uplink free) + size / link bandwidth + link RTT
             (bandwidth: within a site or between sites; RTT: the topology's)
                            │
                            ▼   at the end
    the host holds the image (LRU cache of cache_mib; never evicts an image a VM on
    the host, or being created there, boots from) ──> every waiting creation goes on

A holder's uplink sends one image at a time (its queue is the FIFO of ``uplink_free``),
so many hosts fetching from few holders wait in line. One source per transfer is
pessimistic next to the daemon's swarm (chunks from every holder at once): the model
charges transfers fully, which is what the image-locality score avoids.

The model is deterministic (no randomness; ties broken by host index) and the root a
host reports for an image is the SHA-256 of its name.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from dvms.partition.messages import HeldImage
from dvms.sim.metrics import percentile
from dvms.sim.scenario import ImagesConfig

if TYPE_CHECKING:
    from dvms.sim.world import World

__all__ = ["ImageModel", "image_root"]

MIB = 1 << 20


def image_root(name: str) -> bytes:
    """The content root the simulated hosts report for image ``name``."""
    return hashlib.sha256(name.encode()).digest()


class ImageModel:
    def __init__(self, world: World, config: ImagesConfig) -> None:
        self.world = world
        self.config = config
        n = len(world.hosts)
        self.names = [f"img{i}" for i in range(config.count)]
        self.roots = {name: image_root(name) for name in self.names}
        self.size_mib = config.size_mib
        #: per host: images held, least recently used first (dict order)
        self.held: list[dict[str, None]] = [{} for _ in range(n)]
        self.holders: dict[str, set[int]] = {name: set() for name in self.names}
        #: per host: images VMs being created there boot from (never evicted)
        self.booting: list[Counter[str]] = [Counter() for _ in range(n)]
        #: VM name -> the image it boots from
        self.vm_image: dict[str, str] = {}
        self.uplink_free = [0.0] * n
        self.fetches: dict[tuple[int, str], list[Callable[[bool], None]]] = {}
        self.transfers = 0
        self.wan_transfers = 0
        self.hits = 0
        self.evictions = 0
        self.waits: list[float] = []
        for i, name in enumerate(self.names):
            for k in range(config.seeds):
                self._hold((k * n // config.seeds + i) % n, name)

    def image_of_vjob(self, j: int) -> str:
        return self.names[j % len(self.names)]

    # -- what hosts hold -----------------------------------------------------------------

    def _hold(self, h: int, name: str) -> None:
        self.held[h].pop(name, None)
        self.held[h][name] = None  # most recently used
        self.holders[name].add(h)

    def reported(self, h: int) -> tuple[HeldImage, ...]:
        """What host ``h`` tells its partition leaders (``HostState.images``)."""
        size = self.size_mib * MIB
        return tuple(HeldImage(self.roots[name], size, size) for name in sorted(self.held[h]))

    def _evict(self, h: int) -> None:
        held, cap = self.held[h], self.config.cache_mib
        w = self.world
        used = {self.vm_image.get(w.vm_names[v], "") for v in w.host_vms[h]}
        used.update(k for k, c in self.booting[h].items() if c)
        for name in list(held):
            if len(held) * self.size_mib <= cap:
                return
            if name not in used:
                del held[name]
                self.holders[name].discard(h)
                self.evictions += 1

    # -- creations ----------------------------------------------------------------------

    def before_create(self, h: int, vm: str, name: str, then: Callable[[bool], None]) -> None:
        """``then(True)`` once host ``h`` holds image ``name`` (at once when it does);
        ``then(False)`` when no holder was up to send it."""
        now = self.world.engine.now
        self.vm_image[vm] = name
        self.booting[h][name] += 1
        if name in self.held[h]:
            self.hits += 1
            self._hold(h, name)
            self.waits.append(0.0)
            then(True)
            return

        def go(ok: bool) -> None:
            if ok:
                self.waits.append(self.world.engine.now - now)
            then(ok)

        waiting = self.fetches.get((h, name))
        if waiting is not None:
            waiting.append(go)
            return
        self.fetches[(h, name)] = [go]
        self._start(h, name, now)

    def created(self, h: int, name: str) -> None:
        """A creation on ``h`` that waited for ``name`` ended (created or not)."""
        self.booting[h][name] -= 1

    def _start(self, h: int, name: str, now: float) -> None:
        w = self.world
        best: tuple[float, int, float] | None = None
        for s in sorted(self.holders[name]):
            if s == h or not w.host_up[s]:
                continue
            same_site = w.site_of[s] == w.site_of[h]
            bw = self.config.bandwidth_mib_s if same_site else self.config.wan_bandwidth_mib_s
            send = self.size_mib / bw
            end = max(now, self.uplink_free[s]) + send + w.network.latency.rtt(s, h)
            if best is None or end < best[0]:
                best = (end, s, send)
        if best is None:  # no holder is up: the creation fails
            w.engine.at(now, self._done, h, name, False)
            return
        end, src, send = best
        self.uplink_free[src] = max(now, self.uplink_free[src]) + send
        self.transfers += 1
        self.wan_transfers += w.site_of[src] != w.site_of[h]
        w.engine.at(end, self._fetched, h, name)

    def _fetched(self, h: int, name: str) -> None:
        self._hold(h, name)
        self._evict(h)
        self._done(h, name, True)

    def _done(self, h: int, name: str, ok: bool) -> None:
        for go in self.fetches.pop((h, name), []):
            go(ok)

    def summary(self) -> dict[str, object]:
        return {
            "image_transfers": self.transfers,
            "image_wan_transfers": self.wan_transfers,
            "image_mib_transferred": self.transfers * self.size_mib,
            "image_cache_hits": self.hits,
            "image_evictions": self.evictions,
            "image_wait_p50_s": _r(percentile(self.waits, 50)),
            "image_wait_p99_s": _r(percentile(self.waits, 99)),
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
