"""The Kademlia routing table (pure: no I/O, no clock; ``now`` is passed in).

Buckets are indexed by the common-prefix length (cpl) of a contact's id with our own id,
as go-libp2p-kbucket does. Bucket ``i`` holds contacts with cpl == i, except the *last*
bucket, which holds every cpl >= its index. Only the last bucket ever splits ("unfolds"):
when it is full and a newcomer falls into it, contacts with cpl > its index move to a new
last bucket. That is the paper's rule (split only the bucket covering our own id) written
with exact integer ranges: a bucket's range is derived from cpl, never from the ids it
happens to hold, so a split can neither go off by one nor misplace ids that share a
prefix.

Within a bucket, contacts are kept least-recently-seen first (insertion order of a dict;
a contact that is seen again moves to the end). A full bucket keeps newcomers in a
replacement cache, and asks its caller to ping the least-recently-seen contact if that one
has been silent for a while (ping-before-evict). A contact becomes *stale* after
``stale_after_failures`` consecutive failed RPCs and is replaced as soon as a replacement
is known; it is dropped regardless after ``drop_after_failures``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

from dvms.overlay.config import KademliaConfig
from dvms.overlay.messages import Contact, ip_group

__all__ = ["Entry", "RoutingTable"]


class Entry:
    """What we know about one contact in the table."""

    __slots__ = ("contact", "coord", "failures", "group", "last_seen", "rttvar", "slot", "srtt")

    def __init__(self, contact: Contact, now: float) -> None:
        self.contact = contact
        self.last_seen = now
        self.failures = 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.group = ip_group(contact.host)
        #: The peer's last Vivaldi coordinate, in wire form (empty if unknown).
        self.coord: tuple[float, ...] = ()
        #: Position in ``RoutingTable._entries`` (for an O(1) uniform random pick).
        self.slot = -1

    def observe_rtt(self, rtt: float) -> None:
        """RFC 6298 smoothing (alpha 1/8, beta 1/4)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += 0.25 * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += 0.125 * (rtt - self.srtt)


class _Bucket:
    __slots__ = ("entries", "last_lookup", "pinging", "replacements")

    def __init__(self, now: float) -> None:
        self.entries: dict[int, Entry] = {}
        self.replacements: dict[int, Contact] = {}
        self.last_lookup = now
        self.pinging: int | None = None

    @property
    def last_changed(self) -> float:
        """When a contact of this bucket was last heard from, added or replaced: entries
        are kept least recently seen first, so the last one tells."""
        if not self.entries:
            return -math.inf
        return next(reversed(self.entries.values())).last_seen


class RoutingTable:
    def __init__(self, own_id: int, config: KademliaConfig, *, now: float = 0.0) -> None:
        if not 0 <= own_id < 1 << config.id_bits:
            raise ValueError("own id out of range")
        self.own_id = own_id
        self.config = config
        self.bits = config.id_bits
        self.buckets: list[_Bucket] = [_Bucket(now)]
        self.index: dict[int, Entry] = {}
        #: The entries of ``index`` in an array, so a random contact costs O(1).
        self._entries: list[Entry] = []
        self._groups: Counter[str] = Counter()
        #: Contacts refused by the IP-diversity limits.
        self.rejected_by_group = 0

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.index

    def get(self, node_id: int) -> Entry | None:
        return self.index.get(node_id)

    def cpl(self, node_id: int) -> int:
        return self.bits - (self.own_id ^ node_id).bit_length()

    def bucket_index(self, node_id: int) -> int:
        return min(self.cpl(node_id), len(self.buckets) - 1)

    def contacts(self) -> Iterator[Contact]:
        for e in self.index.values():
            yield e.contact

    def closest(
        self, target: int, n: int, *, exclude: int | None = None, healthy: bool = False
    ) -> list[Contact]:
        """The ``n`` known contacts closest to ``target`` by XOR distance (with
        ``healthy``, only contacts whose last RPC did not fail: what we tell others).

        Contacts fall into groups whose distances to ``target`` do not overlap, visited
        nearest first: the target's bucket ``i`` (they share its first ``i + 1`` bits),
        then every deeper bucket together (they differ from it at bit ``i`` only), then
        bucket ``i - 1``, ``i - 2``, ... (each differs from it one bit further up). When
        ``i`` is the last bucket it is the first group alone. Only the groups needed for
        ``n`` contacts are sorted, so a far target costs one bucket, not the whole table.
        """
        idx = self.bucket_index(target)
        index = self.index
        skip = exclude ^ target if exclude is not None else -1
        out: list[Contact] = []
        for group in self._distance_groups(idx):
            if healthy:
                dists = [i ^ target for b in group for i, e in b.entries.items() if not e.failures]
            else:
                dists = [i ^ target for b in group for i in b.entries]
            if not dists:
                continue
            dists.sort()
            for d in dists:
                if d != skip:
                    out.append(index[d ^ target].contact)
            if len(out) >= n:
                del out[n:]
                break
        return out

    def _distance_groups(self, idx: int) -> Iterator[list[_Bucket]]:
        """The bucket groups of ``closest``, nearest first."""
        buckets = self.buckets
        yield buckets[idx : idx + 1]
        yield buckets[idx + 1 :]
        for j in range(idx - 1, -1, -1):
            yield buckets[j : j + 1]

    def random_entry(self, rng: random.Random) -> Entry | None:
        """A contact drawn uniformly from the table (None if empty), in O(1)."""
        entries = self._entries
        return entries[rng.randrange(len(entries))] if entries else None

    def rto(self, node_id: int) -> float | None:
        e = self.index.get(node_id)
        if e is None or e.srtt is None:
            return None
        c = self.config
        return min(c.rto_max_s, max(c.rto_min_s, e.srtt + 4 * e.rttvar))

    # -- updates -----------------------------------------------------------------------

    def seen(self, contact: Contact, now: float, rtt: float | None = None) -> Contact | None:
        """Record that ``contact`` is alive (it sent us a message or answered).

        Returns a contact the caller should ping (the silent head of a full bucket), or
        None.
        """
        node_id = contact.node_id
        if node_id == self.own_id:
            return None
        e = self.index.get(node_id)
        if e is not None:
            self._refresh(e, contact, now, rtt)
            return None
        while True:
            b = self.buckets[self.bucket_index(node_id)]
            if len(b.entries) < self.config.k:
                if self._group_full(b, contact):
                    self.rejected_by_group += 1
                    return None
                self._add(b, contact, now, rtt)
                return None
            if b is self.buckets[-1] and len(self.buckets) < self.bits:
                self._split()
                continue
            return self._full(b, contact, now)

    def _refresh(self, e: Entry, contact: Contact, now: float, rtt: float | None) -> None:
        if e.contact != contact:  # the peer moved to another address
            self._ungroup(e)
            e.contact = contact
            e.group = ip_group(contact.host)
            if e.group:
                self._groups[e.group] += 1
        self.heard(e, now, rtt)

    def heard(self, e: Entry, now: float, rtt: float | None = None) -> None:
        """``seen`` for a contact already in the table at the address it has there (the
        common case, which needs no new ``Contact``): it is alive, most recently seen."""
        e.last_seen = now
        e.failures = 0
        if rtt is not None:
            e.observe_rtt(rtt)
        node_id = e.contact.node_id
        buckets = self.buckets
        b = buckets[min(self.bits - (self.own_id ^ node_id).bit_length(), len(buckets) - 1)]
        if b.pinging == node_id:
            b.pinging = None
        entries = b.entries
        del entries[node_id]
        entries[node_id] = e

    def _add(self, b: _Bucket, contact: Contact, now: float, rtt: float | None) -> None:
        e = Entry(contact, now)
        if rtt is not None:
            e.observe_rtt(rtt)
        b.entries[contact.node_id] = e
        b.replacements.pop(contact.node_id, None)
        self.index[contact.node_id] = e
        e.slot = len(self._entries)
        self._entries.append(e)
        if e.group:
            self._groups[e.group] += 1

    def _full(self, b: _Bucket, contact: Contact, now: float) -> Contact | None:
        stale = next(
            (e for e in b.entries.values() if e.failures >= self.config.stale_after_failures),
            None,
        )
        if stale is not None and not self._group_full(b, contact, replacing=stale):
            self._remove(b, stale)
            self._add(b, contact, now, None)
            return None
        b.replacements.pop(contact.node_id, None)
        b.replacements[contact.node_id] = contact
        if len(b.replacements) > self.config.replacement_cache:
            del b.replacements[next(iter(b.replacements))]
        head = next(iter(b.entries.values()))
        if b.pinging is None and now - head.last_seen >= self.config.evict_ping_after_s:
            b.pinging = head.contact.node_id
            return head.contact
        return None

    def failed(self, node_id: int, now: float) -> None:
        """An RPC to ``node_id`` failed after all its retries."""
        e = self.index.get(node_id)
        if e is None:
            for b in self.buckets:
                b.replacements.pop(node_id, None)
            return
        b = self.buckets[self.bucket_index(node_id)]
        if b.pinging == node_id:
            b.pinging = None
        e.failures += 1
        cfg = self.config
        if e.failures >= cfg.drop_after_failures or (
            e.failures >= cfg.stale_after_failures and b.replacements
        ):
            self._remove(b, e)
            self._promote(b, now)

    def remove(self, node_id: int) -> None:
        e = self.index.get(node_id)
        if e is not None:
            self._remove(self.buckets[self.bucket_index(node_id)], e)

    def gone(self, node_id: int, now: float) -> None:
        """``node_id`` left the overlay: out of the table and of every replacement
        cache; its bucket takes a replacement if it has one."""
        b = self.buckets[self.bucket_index(node_id)]
        b.replacements.pop(node_id, None)
        e = self.index.get(node_id)
        if e is not None:
            self._remove(b, e)
            self._promote(b, now)

    def _promote(self, b: _Bucket, now: float) -> None:
        while b.replacements and len(b.entries) < self.config.k:
            node_id = next(reversed(b.replacements))
            contact = b.replacements.pop(node_id)
            if not self._group_full(b, contact):
                # Not heard from directly yet: it starts as least recently seen.
                self._add(b, contact, now - self.config.evict_ping_after_s, None)
                b.entries = {node_id: b.entries.pop(node_id), **b.entries}

    def _remove(self, b: _Bucket, e: Entry) -> None:
        del b.entries[e.contact.node_id]
        del self.index[e.contact.node_id]
        last = self._entries.pop()
        if last is not e:  # move the last entry into the freed slot
            self._entries[e.slot] = last
            last.slot = e.slot
        self._ungroup(e)
        if b.pinging == e.contact.node_id:
            b.pinging = None

    def _ungroup(self, e: Entry) -> None:
        if e.group:
            self._groups[e.group] -= 1
            if not self._groups[e.group]:
                del self._groups[e.group]

    def _group_full(self, b: _Bucket, contact: Contact, replacing: Entry | None = None) -> bool:
        group = ip_group(contact.host)
        if group is None:
            return False
        credit = 1 if replacing is not None and replacing.group == group else 0
        if self._groups[group] - credit >= self.config.max_per_ip_group_table:
            return True
        in_bucket = sum(1 for e in b.entries.values() if e.group == group) - credit
        return in_bucket >= self.config.max_per_ip_group_bucket

    def _split(self) -> None:
        old = self.buckets[-1]
        depth = len(self.buckets)  # index of the new last bucket
        new = _Bucket(old.last_lookup)
        for node_id in [i for i in old.entries if self.cpl(i) >= depth]:
            new.entries[node_id] = old.entries.pop(node_id)
        for node_id in [i for i in old.replacements if self.cpl(i) >= depth]:
            new.replacements[node_id] = old.replacements.pop(node_id)
        if old.pinging is not None and old.pinging in new.entries:
            new.pinging, old.pinging = old.pinging, None
        self.buckets.append(new)

    # -- refresh -----------------------------------------------------------------------

    def touch(self, target: int, now: float) -> None:
        """A lookup for ``target`` ran: its bucket needs no refresh for a while."""
        self.buckets[self.bucket_index(target)].last_lookup = now

    def stale_buckets(self, now: float) -> list[int]:
        """Indexes of buckets (up to ``refresh_max_cpl``) that need a refresh lookup.

        A bucket is fresh while a lookup of ours went through its range within the
        interval (the paper's rule) or while any of its contacts was heard from, added
        or replaced within it (BitTorrent's "last changed", BEP 5): traffic with the
        bucket's range already checks that its contacts live and teaches us its
        newcomers, which is what a refresh lookup is for. What is left is the buckets
        nobody talked to, empty ones included. Contacts are kept least recently seen
        first, so the last one tells when the bucket last changed.
        """
        limit = min(len(self.buckets), self.config.refresh_max_cpl + 1)
        horizon = now - self.config.refresh_interval_s
        out = []
        for i in range(limit):
            b = self.buckets[i]
            if b.last_lookup > horizon or b.last_changed > horizon:
                continue
            out.append(i)
        return out

    def random_id_in_bucket(self, index: int, rng: random.Random) -> int:
        """A random id whose bucket is ``index``: it shares exactly ``index`` leading bits
        with our id (or at least ``index`` for the last bucket)."""
        bits = self.bits
        if index >= len(self.buckets) - 1:
            return self.own_id ^ rng.getrandbits(bits - index) if index < bits else self.own_id
        flip = 1 << (bits - 1 - index)
        return self.own_id ^ flip ^ rng.getrandbits(bits - 1 - index)
