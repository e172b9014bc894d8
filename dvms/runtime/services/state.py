"""Cluster state in DHT records: what minimega keeps on its head node, kept by the
overlay instead (namespaces, their index, vjobs).

A piece of state is a *head* record (``ns/NAME``, ``vjob/ID``, ``nsindex/all``) whose
value is small: a version number (the record's ``seq``) and either the state itself,
compressed, or the hashes of the chunks that hold it (``blob/SHA256``, immutable,
content-addressed, any replica will do). Heads and blobs are signed by the node that
wrote them and replicated on the k nodes closest to their key like every DHT record.

A head holds at most ``head_chunks`` = 100 hashes; a larger value gets a tree of
chunks: the hashes of its data chunks are themselves cut into index chunks (109 hashes
each), as often as needed, and the head names the top ones and the number of index
``levels``::

    head {chunks: [h1..hn], levels: 2} -> index blobs -> index blobs -> data blobs

One level covers 100 x 3,500 B = 350 KB compressed, two 38 MB; a value larger than
``max_value_bytes`` (64 MiB compressed) is refused with a ``StateError`` naming its
size (a namespace of 20,000 VMs is about 0.1-1 MB).

Writes are compare-and-swap, serialised by one node per head: the **arbiter**, the
live node whose id is closest to the head's key (the first of the k closest that
answers). ``StateCas(record)`` succeeds only if the arbiter holds version
``record.seq - 1``; so two nodes changing one namespace at once cannot both win: the
loser re-reads and re-applies its change (``update``). Readers ask the arbiter too.
Every node can be an arbiter and every head has its own: there is no head node. When
an arbiter dies the next closest node takes over with its replica, which holds every
version the writer finished replicating (writes are replicated before ``update``
returns). What is not covered: an arbiter that dies between accepting a write and the
writer's replication may lose that last version if no replica got it.

::

    update(name, fn):  read (arbiter) -> fn(value) -> blobs put -> StateCas (arbiter)
                       -> replicate the head (overlay put) -> done | conflict: retry
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import trio

from dvms.overlay.messages import Contact, Record
from dvms.overlay.records import (
    Identity,
    RecordError,
    RecordStore,
    Validator,
    ValidatorRegistry,
    key_of,
)
from dvms.runtime.capabilities import Dht, Handlers, Requester
from dvms.runtime.messages import StateCas, StateCasReply, StateRead, StateValue

__all__ = [
    "BLOB_PREFIX",
    "HEAD_PREFIXES",
    "Conflict",
    "ReplicatedState",
    "StateConfig",
    "StateError",
    "Versioned",
    "answer_state",
    "inline_value",
    "is_deleted",
    "state_validators",
]

log = logging.getLogger("dvms.node.state")

BLOB_PREFIX = "blob/"
#: Names of head records (values of the form described above); ``file/``: file names
#: (``services/files.py``).
HEAD_PREFIXES = ("ns/", "nsindex/", "vjob/", "file/", "vmname/")
HEAD_VERSION = 1
#: Size of a chunk hash (SHA-256) in an index chunk, bytes.
HASH_BYTES = 32
#: Most index levels a head may name (the writer's ``max_value_bytes`` needs 2; a
#: reader accepts a few more, never an unbounded walk).
MAX_LEVELS = 4


@dataclass(frozen=True, slots=True)
class StateConfig:
    #: Largest compressed state kept inline in its head record, bytes (a record value
    #: holds at most 4,096 bytes; the rest of the head is a few dozen bytes).
    inline_bytes: int = 3_500
    #: Size of one blob chunk, bytes (same limit).
    chunk_bytes: int = 3_500
    #: Most chunk hashes a head record holds (32 bytes each, inside its 4,096 bytes);
    #: more make a tree of index chunks (module text).
    head_chunks: int = 100
    #: Largest compressed state written, bytes (ours: a bound on what one write may put
    #: in the DHT; 19,000 blobs).
    max_value_bytes: int = 64 * 1024 * 1024
    #: Nodes that keep each head and blob: the closest to its key, the arbiter first
    #: (the overlay's k = 20 elsewhere). A head survives until 5 of them die at once.
    replicas: int = 5
    #: Lifetime of heads and blobs on replicas, seconds; the writer republishes them
    #: (overlay ``republish_interval_s``) while it lives.
    ttl_s: float = 48 * 3600.0
    #: One arbiter RPC: first timeout, seconds (doubled per attempt).
    rpc_timeout_s: float = 0.3
    rpc_attempts: int = 2
    #: Closest nodes tried as arbiter, in order, before giving up.
    arbiters: int = 3
    #: Read-modify-write attempts before ``update`` reports a conflict.
    update_attempts: int = 8
    #: Back-off before a retried update: uniform in [0, this * attempt], seconds.
    backoff_s: float = 0.02
    #: A node that did not answer as an arbiter is asked last for this long, seconds.
    silent_s: float = 30.0
    #: Blobs kept in memory (they are immutable: a hit saves a DHT lookup).
    blob_cache: int = 4_096
    #: Blobs fetched or put at once by one read or write (a large value is hundreds).
    fetch_parallelism: int = 64


class StateError(Exception):
    """The state could not be read or written; the message says why."""


class Conflict(StateError):
    """Other nodes kept changing the record: ``update`` gave up after its attempts."""


@dataclass(frozen=True, slots=True)
class Versioned:
    """A state value and its version (0: never written; ``value`` None then)."""

    value: Any
    seq: int


# ----------------------------------------------------------------------- validation


def _check_blob(rec: Record) -> None:
    digest = rec.name[len(BLOB_PREFIX) :]
    if hashlib.sha256(rec.value).hexdigest() != digest:
        raise RecordError(f"record {rec.name!r}: value does not match its hash")


def _check_head(rec: Record) -> None:
    head = _decode_head(rec.value)
    if head is None:
        raise RecordError(f"record {rec.name!r}: not a state head")


def _decode_head(value: bytes) -> dict[str, Any] | None:
    try:
        head = cbor2.loads(value)
    except Exception:
        return None
    if not isinstance(head, dict) or head.get("v") != HEAD_VERSION:
        return None
    inline, chunks, size = head.get("inline"), head.get("chunks"), head.get("size")
    levels = head.get("levels", 0)
    if not isinstance(size, int) or size < 0:
        return None
    if not isinstance(levels, int) or isinstance(levels, bool) or not 0 <= levels <= MAX_LEVELS:
        return None
    if inline is not None:
        return head if isinstance(inline, bytes) and chunks is None else None
    ok = isinstance(chunks, list) and all(
        isinstance(c, bytes) and len(c) == HASH_BYTES for c in chunks
    )
    return head if ok else None


def inline_value(rec: Record) -> Any:
    """The value of a head record when it is held inline, else None."""
    head = _decode_head(rec.value)
    if head is None or head.get("inline") is None:
        return None
    try:
        return cbor2.loads(zlib.decompress(head["inline"]))
    except Exception:
        return None


def is_deleted(rec: Record) -> bool:
    """The head record holds no value: its state was deleted (written as None)."""
    head = _decode_head(rec.value)
    if head is None or head.get("inline") is None:
        return False
    return inline_value(rec) is None


def state_validators(
    registry: ValidatorRegistry | None = None, config: StateConfig | None = None
) -> ValidatorRegistry:
    """Register the validators of blobs and heads (on ``registry`` or a new one)."""
    registry = registry or ValidatorRegistry()
    replicas = (config or StateConfig()).replicas
    registry.register(Validator(BLOB_PREFIX, _check_blob, replicas=replicas))
    for prefix in HEAD_PREFIXES:
        registry.register(Validator(prefix, _check_head, replicas=replicas))
    return registry


# ------------------------------------------------------------------------ arbiter side


def answer_state(
    store: RecordStore, msg: StateRead | StateCas, now: float
) -> StateValue | StateCasReply:
    """What this node answers as an arbiter (``store``: its overlay ``RecordStore``)."""
    held = store.get(key_of(msg.name if isinstance(msg, StateRead) else msg.record.name), now)
    if isinstance(msg, StateRead):
        return StateValue(held)
    have = held.seq if held is not None else 0
    if msg.record.seq != have + 1:
        return StateCasReply(False, have, "version moved on")
    if not store.put(msg.record, now):
        return StateCasReply(False, have, "record refused")
    return StateCasReply(True, msg.record.seq)


# ------------------------------------------------------------------------- the client


Update = Callable[[Any], Awaitable[tuple[Any, Any]] | tuple[Any, Any]]

#: ``fn`` returns this as the new value to leave the record as it is.
UNCHANGED = object()


class ReplicatedState:
    """Read and update head records on behalf of this node (see the module text), and
    answer as the arbiter of the heads closest to this node (``StateRead``,
    ``StateCas``)."""

    def __init__(
        self,
        identity: Identity,
        *,
        requests: Requester,
        dht: Dht,
        handlers: Handlers,
        rng: random.Random,
        config: StateConfig | None = None,
    ) -> None:
        """``identity`` signs the records written; ``rng`` draws the back-off of a
        retried update."""
        self.requests = requests
        self.dht = dht
        self.identity = identity
        self.config = config or StateConfig()
        self._rng = rng
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        #: node id -> until when it is asked last (it did not answer as an arbiter)
        self._silent: dict[int, float] = {}
        self.stats = {
            "reads": 0,
            "writes": 0,
            "conflicts": 0,
            "arbiter_failover": 0,
            "caught_up": 0,
        }
        handlers.register(StateRead, self._answer)
        handlers.register(StateCas, self._answer)

    async def _answer(self, msg: StateRead | StateCas) -> StateValue | StateCasReply:
        await self._catch_up(msg.name if isinstance(msg, StateRead) else msg.record.name)
        return answer_state(self.dht.store, msg, trio.current_time())

    async def _catch_up(self, name: str) -> None:
        """Before answering as the arbiter of ``name`` without holding it, fetch it from
        the other replicas: a node restarted with an empty store, or one that joined
        closer to the key than the old arbiter, must not answer "no such record" (nor
        accept a first version) while the replicas hold the latest one."""
        if self.dht.store.get(key_of(name), trio.current_time()) is not None:
            return
        rec = await self.dht.get(name)
        if rec is not None and self.dht.store.put(rec, trio.current_time()):
            self.stats["caught_up"] += 1

    # -- public -------------------------------------------------------------------------

    async def read(self, name: str) -> Versioned:
        rec = await self._read_head(name)
        if rec is None:
            return Versioned(None, 0)
        return Versioned(await self._value_of(rec), rec.seq)

    async def update(self, name: str, fn: Update) -> tuple[Any, Any]:
        """Read ``name``, call ``fn(value)`` -> (new value or ``UNCHANGED``, result),
        write the new value if the version did not move meanwhile, else start again.
        Returns (the value now stored, ``fn``'s result). Raises ``Conflict`` after
        ``update_attempts`` lost races, ``StateError`` if no arbiter answers."""
        cfg = self.config
        for attempt in range(cfg.update_attempts):
            cur = await self.read(name)
            out = fn(cur.value)
            if inspect.isawaitable(out):
                out = await out
            new, result = out
            if new is UNCHANGED:
                return cur.value, result
            if await self.write(name, new, cur.seq):
                return new, result
            self.stats["conflicts"] += 1
            await trio.sleep(self._rng.uniform(0, cfg.backoff_s * (attempt + 1)))
        raise Conflict(f"{name}: changed by other nodes {cfg.update_attempts} times in a row")

    async def write(self, name: str, value: Any, seq: int) -> bool:
        """Write ``value`` as version ``seq + 1``; False if the version moved on."""
        rec = await self._head_record(name, value, seq + 1)
        reply = await self._ask(name, StateCas(rec))
        if not isinstance(reply, StateCasReply) or not reply.ok:
            return False
        self.stats["writes"] += 1
        await self._replicate(rec)
        return True

    # -- heads --------------------------------------------------------------------------

    async def _read_head(self, name: str) -> Record | None:
        reply = await self._ask(name, StateRead(name))
        self.stats["reads"] += 1
        return reply.record if isinstance(reply, StateValue) else None

    async def _ask(self, name: str, msg: StateRead | StateCas) -> Any:
        """Ask the arbiter of ``name`` (the closest live node), failing over."""
        me = self.dht.contact.node_id
        for i, contact in enumerate(await self._arbiters(name)):
            if i:
                self.stats["arbiter_failover"] += 1
            if contact.node_id == me:
                return await self._answer(msg)
            reply = await self.requests.request(
                contact.addr,
                msg,
                timeout=self.config.rpc_timeout_s,
                attempts=self.config.rpc_attempts,
            )
            if reply is not None:
                self._silent.pop(contact.node_id, None)
                return reply
            self._silent[contact.node_id] = trio.current_time() + self.config.silent_s
        raise StateError(f"{name}: no node holding it answered")

    async def _arbiters(self, name: str) -> list[Contact]:
        key = key_of(name)
        unique = {c.node_id: c for c in await self.dht.closest_nodes(key)}
        ranked = sorted(unique.values(), key=lambda c: c.node_id ^ key)[: self.config.arbiters]
        # a node that just let us down is asked last (it is likely dead; the overlay
        # drops it from the routing table only after several failed RPCs)
        now = trio.current_time()
        return sorted(ranked, key=lambda c: self._silent.get(c.node_id, 0.0) > now)

    async def _replicate(self, rec: Record) -> None:
        try:
            await self.dht.put(rec)
        except RecordError as exc:  # our own validators refused it: a bug, say so
            log.error("state record %s not replicated: %s", rec.name, exc)

    # -- values -------------------------------------------------------------------------

    async def _head_record(self, name: str, value: Any, seq: int) -> Record:
        cfg = self.config
        data = zlib.compress(cbor2.dumps(value, canonical=True), 6)
        if len(data) > cfg.max_value_bytes:
            raise StateError(
                f"{name}: too large to write ({len(data):,} bytes compressed; the limit is "
                f"{cfg.max_value_bytes:,}, [state] max_value_bytes)"
            )
        head: dict[str, Any] = {"v": HEAD_VERSION, "size": len(data)}
        if len(data) <= cfg.inline_bytes:
            head["inline"] = data
        else:
            blobs, hashes, levels = self._chunk_tree(data)
            head["chunks"] = hashes
            if levels:
                head["levels"] = levels
            limit = trio.CapacityLimiter(cfg.fetch_parallelism)
            async with trio.open_nursery() as nursery:
                for part in blobs:
                    nursery.start_soon(self._put_blob, part, limit)
        return self.identity.sign_record(
            name, cbor2.dumps(head, canonical=True), seq=seq, ttl_s=cfg.ttl_s
        )

    def _chunk_tree(self, data: bytes) -> tuple[list[bytes], list[bytes], int]:
        """(every blob to put, the hashes the head names, the index levels above the
        data chunks)."""
        cfg = self.config
        step = cfg.chunk_bytes
        per_index = step - step % HASH_BYTES
        parts = [data[i : i + step] for i in range(0, len(data), step)]
        blobs = list(parts)
        hashes = [hashlib.sha256(p).digest() for p in parts]
        levels = 0
        while len(hashes) > cfg.head_chunks:
            index = b"".join(hashes)
            parts = [index[i : i + per_index] for i in range(0, len(index), per_index)]
            blobs += parts
            hashes = [hashlib.sha256(p).digest() for p in parts]
            levels += 1
        return blobs, hashes, levels

    async def _put_blob(self, part: bytes, limit: trio.CapacityLimiter) -> None:
        digest = hashlib.sha256(part).digest()
        self._remember(digest, part)
        rec = self.identity.sign_record(
            BLOB_PREFIX + digest.hex(), part, seq=1, ttl_s=self.config.ttl_s
        )
        async with limit:
            await self.dht.put(rec)

    async def _value_of(self, rec: Record) -> Any:
        head = _decode_head(rec.value)
        if head is None:
            raise StateError(f"{rec.name}: corrupt head record")
        if head.get("inline") is not None:
            data = head["inline"]
        else:
            hashes = head["chunks"]
            for _ in range(head.get("levels", 0)):
                index = await self._fetch(hashes, rec.name)
                if len(index) % HASH_BYTES:
                    raise StateError(f"{rec.name}: corrupt index chunk")
                hashes = [index[i : i + HASH_BYTES] for i in range(0, len(index), HASH_BYTES)]
            data = await self._fetch(hashes, rec.name)
            if len(data) != head["size"]:
                raise StateError(
                    f"{rec.name}: corrupt value (size {len(data)}, not {head['size']})"
                )
        try:
            return cbor2.loads(zlib.decompress(data))
        except Exception as exc:
            raise StateError(f"{rec.name}: corrupt value ({exc})") from None

    async def _fetch(self, hashes: list[bytes], owner: str) -> bytes:
        """The blobs ``hashes`` name, concatenated (at most ``fetch_parallelism`` asked
        at once)."""
        parts: dict[bytes, bytes] = {}
        limit = trio.CapacityLimiter(self.config.fetch_parallelism)

        async def fetch(digest: bytes) -> None:
            async with limit:
                blob = await self._blob(digest)
            if blob is not None:
                parts[digest] = blob

        async with trio.open_nursery() as nursery:
            for digest in set(hashes):
                nursery.start_soon(fetch, digest)
        if len(parts) < len(set(hashes)):
            raise StateError(f"{owner}: a chunk of its value is missing from the DHT")
        return b"".join(parts[d] for d in hashes)

    async def _blob(self, digest: bytes) -> bytes | None:
        """The blob ``digest`` names (None if no replica holds it)."""
        hit = self._blobs.get(digest)
        if hit is not None:
            self._blobs.move_to_end(digest)
            return hit
        rec = await self.dht.get(BLOB_PREFIX + digest.hex())
        if rec is None or hashlib.sha256(rec.value).digest() != digest:
            return None
        self._remember(digest, rec.value)
        return rec.value

    def _remember(self, digest: bytes, part: bytes) -> None:
        self._blobs[digest] = part
        self._blobs.move_to_end(digest)
        while len(self._blobs) > self.config.blob_cache:
            self._blobs.popitem(last=False)
