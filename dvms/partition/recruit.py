"""Which node an ISP visits next: the three recruitment strategies.

All three choose among the peers the holder's overlay knows (its routing table), never
among members of the partition, nodes in the ISP's ``skip`` set (busy elsewhere, refused
or unreachable during this lap) or the holder itself.

- ``vivaldi`` (default): the known peer with the smallest *predicted RTT from the
  initiator* (the ISP carries the initiator's coordinate; the holder knows its peers'
  coordinates from their replies), RTTs compared in steps of ``locality_resolution_s``
  (1 ms) with ties drawn at random. Every hop therefore recruits among the closest
  remaining nodes to the problem, so partitions grow in rings of increasing latency
  around the initiator (the Euro-Par 2014 locality idea), and on one LAN, where
  coordinates cannot rank peers, recruitment is random. Peers without a known coordinate
  come last.
- ``ring``: the known peer whose id follows the holder's id on the 160-bit ring (wrapping
  around): DVMS's successor order. A busy node forwarding an ISP skips its own partition's
  members, which is DVMS 2's one-hop "shortcut" past a foreign partition.
- ``random``: a uniformly random known peer (VMPlaceS's ``SimpleOverlay``).

Before any strategy, a node in ``prefer`` that is not excluded is chosen, in its order,
whether the routing table holds it or not: the hosts a launch's VMs are scheduled on,
which its origin names (``PartitionCore.launch(prefer=...)``). A launch of VMs for one
host then forms a partition of its origin and that host, instead of growing through
random nodes (on one LAN) until the host joins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from dvms.overlay.core import OverlayCore, decode_coord
from dvms.overlay.messages import Contact
from dvms.overlay.routing import Entry
from dvms.partition.messages import PartitionView

__all__ = ["next_candidate"]

_ID_SPACE = 1 << 160


def next_candidate(
    strategy: str,
    overlay: OverlayCore,
    view: PartitionView,
    skip: set[int],
    rng: random.Random,
    *,
    resolution_s: float = 0.001,
    prefer: Sequence[Contact] = (),
) -> Contact | None:
    excluded = view.member_ids() | skip
    excluded.add(overlay.node_id)
    for c in prefer:
        if c.node_id not in excluded:
            return c
    entries = [e for node_id, e in overlay.table.index.items() if node_id not in excluded]
    if not entries:
        return None
    if strategy == "vivaldi":
        return _nearest_to_origin(overlay, view, entries, rng, resolution_s)
    if strategy == "ring":
        me = overlay.node_id
        return min(entries, key=lambda e: (e.contact.node_id - me) % _ID_SPACE).contact
    entries.sort(key=lambda e: e.contact.node_id)
    return rng.choice(entries).contact


def _nearest_to_origin(
    overlay: OverlayCore,
    view: PartitionView,
    entries: list[Entry],
    rng: random.Random,
    resolution_s: float,
) -> Contact:
    """Smallest predicted RTT from the initiator, compared in steps of ``resolution_s``;
    candidates in the same step are drawn at random. Coordinates cannot rank peers whose
    RTTs differ by less than their own error: on one LAN, ranking by raw coordinate would
    send every initiator to the same few "nearest" hosts and overload them."""
    dim = overlay.vivaldi.config.dimensionality if overlay.vivaldi is not None else 0
    origin = None
    if view.origin_coord and dim:
        try:
            origin = decode_coord(view.origin_coord, dim)
        except ValueError:
            origin = None
    best: tuple[float, float] | None = None
    choice = entries[0].contact
    for e in sorted(entries, key=lambda e: e.contact.node_id):
        step = math.inf  # a float throughout (one representation in the compiled build)
        if origin is not None and e.coord:
            try:
                rtt = origin.distance_to(decode_coord(e.coord, dim))
                step = float(math.floor(rtt / resolution_s))
            except ValueError:
                step = math.inf
        key = (step, rng.random())
        if best is None or key < best:
            best, choice = key, e.contact
    return choice
