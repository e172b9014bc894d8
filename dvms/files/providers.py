"""Provider records: "node N holds (some of) the file with root R, fetch it from this
stream address". Each is an overlay ``Record`` signed by the provider's node identity,
named ``fprov/<root hex>``; the node id is the hash of the signing key, so a record
speaks only for the node that signed it. The nodes closest to the root keep a
``ProviderTable`` of them: one per (root, provider), the highest ``seq`` wins, each
expires after its ``ttl_s`` (the holder announces again every ``republish_s``), and a
record with ``ttl_s`` 0 withdraws the provider at once (``file delete``).

Unlike other DHT records (one value per name) a root has many providers, so these
records are kept here rather than in the overlay's ``RecordStore``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from dvms.overlay.messages import Record
from dvms.overlay.records import Identity, RecordError, node_id_of, verify_signature

__all__ = [
    "PROVIDER_PREFIX",
    "Provider",
    "ProviderError",
    "ProviderTable",
    "provider_record",
    "read_provider",
]

PROVIDER_PREFIX = "fprov/"


class ProviderError(ValueError):
    """A provider record was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Provider:
    root: bytes
    node_id: int
    #: Where its file stream listens.
    host: str
    port: int
    #: True if it holds every chunk (else ask it for its bitmap).
    complete: bool
    seq: int
    #: 0: the provider withdraws.
    ttl_s: float


def provider_record(
    identity: Identity,
    root: bytes,
    host: str,
    port: int,
    *,
    complete: bool,
    seq: int,
    ttl_s: float,
) -> Record:
    value = cbor2.dumps({"host": host, "port": port, "complete": complete}, canonical=True)
    return identity.sign_record(PROVIDER_PREFIX + root.hex(), value, seq=seq, ttl_s=ttl_s)


def read_provider(rec: Record) -> Provider:
    """The provider ``rec`` announces, after checking its signature and shape."""
    if not rec.name.startswith(PROVIDER_PREFIX):
        raise ProviderError(f"record {rec.name!r} is not a provider record")
    try:
        root = bytes.fromhex(rec.name[len(PROVIDER_PREFIX) :])
    except ValueError:
        root = b""
    if len(root) != 32:
        raise ProviderError(f"record {rec.name!r}: not a root")
    try:
        verify_signature(rec)
        body = cbor2.loads(rec.value)
    except RecordError as exc:
        raise ProviderError(str(exc)) from None
    except Exception:
        raise ProviderError(f"record {rec.name!r}: value is not CBOR") from None
    if not isinstance(body, dict):
        raise ProviderError(f"record {rec.name!r}: value is not a map")
    host, port, complete = body.get("host"), body.get("port"), body.get("complete")
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ProviderError(f"record {rec.name!r}: bad stream address")
    if not isinstance(complete, bool) or len(host) > 255:
        raise ProviderError(f"record {rec.name!r}: malformed value")
    return Provider(root, node_id_of(rec.publisher), host, port, complete, rec.seq, rec.ttl_s)


class ProviderTable:
    """The provider records this node keeps (it is among the closest to their roots)."""

    def __init__(self, *, max_ttl_s: float, max_records: int) -> None:
        self.max_ttl_s = max_ttl_s
        self.max_records = max_records
        #: root -> node id -> (record, local expiry)
        self._by_root: dict[bytes, dict[int, tuple[Record, float]]] = {}
        self._count = 0
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def put(self, rec: Record, now: float) -> bool:
        """Keep (or, ttl 0, withdraw) ``rec``; False if refused or older than held."""
        try:
            p = read_provider(rec)
        except ProviderError:
            self.refused += 1
            return False
        held = self._by_root.setdefault(p.root, {})
        old = held.get(p.node_id)
        if old is not None and old[0].seq >= rec.seq:
            return False
        if p.ttl_s <= 0:
            if old is not None:
                del held[p.node_id]
                self._count -= 1
            if not held:
                del self._by_root[p.root]
            return True
        if old is None:
            if self._count >= self.max_records:
                self.expire(now)
            if self._count >= self.max_records:
                self.refused += 1
                if not held:
                    del self._by_root[p.root]
                return False
            self._count += 1
        held[p.node_id] = (rec, now + min(p.ttl_s, self.max_ttl_s))
        return True

    def get(self, root: bytes, now: float, limit: int) -> list[Record]:
        held = self._by_root.get(root, {})
        live = [(exp, rec) for rec, exp in held.values() if exp > now]
        live.sort(key=lambda t: -t[0])
        return [rec for _, rec in live[:limit]]

    def expire(self, now: float) -> int:
        gone = 0
        for root in list(self._by_root):
            held = self._by_root[root]
            for node_id in [n for n, (_, exp) in held.items() if exp <= now]:
                del held[node_id]
                gone += 1
            if not held:
                del self._by_root[root]
        self._count -= gone
        return gone
