"""Values larger than one level of chunks: a tree of index chunks, written and read
back through a fake DHT (one node, its own arbiter); a value past the limit is refused
naming its size; a head naming too many levels is not a valid record."""

from __future__ import annotations

import random
import zlib

import cbor2
import pytest
import trio

from dvms.overlay.messages import Contact, Record
from dvms.overlay.records import Identity, RecordError, RecordStore, key_of
from dvms.runtime.capabilities import Handlers
from dvms.runtime.services.state import (
    BLOB_PREFIX,
    ReplicatedState,
    StateConfig,
    StateError,
    state_validators,
)


class FakeDht:
    """One node: every record is stored here; ``closest_nodes`` is this node alone, so
    it is the arbiter of every head."""

    def __init__(self) -> None:
        self.contact = Contact(1, "127.0.0.1", 9)
        self.store = RecordStore(state_validators(), max_records=10**6, max_ttl_s=10**6)
        self.puts = 0

    async def closest_nodes(self, key: int) -> list[Contact]:
        return [self.contact]

    async def put(self, record: Record) -> int:
        self.store.validators.validate(record)
        self.puts += 1
        return int(self.store.put(record, trio.current_time()))

    async def get(self, name: str) -> Record | None:
        return self.store.get(key_of(name), trio.current_time())

    async def lookup(self, target: int):  # pragma: no cover - not used
        raise AssertionError


def state(config: StateConfig, dht: FakeDht) -> ReplicatedState:
    return ReplicatedState(
        Identity.generate(),
        requests=None,  # type: ignore[arg-type]  # never asked: the node is its own arbiter
        dht=dht,  # type: ignore[arg-type]
        handlers=Handlers(),
        rng=random.Random(1),
        config=config,
    )


def value(n: int) -> list[str]:
    rng = random.Random(n)
    return [f"vm{i}-{rng.getrandbits(64):016x}" for i in range(n)]


def head_of(dht: FakeDht, name: str) -> dict:
    rec = dht.store.get(key_of(name), trio.current_time())
    assert rec is not None
    return cbor2.loads(rec.value)


SMALL = StateConfig(inline_bytes=300, chunk_bytes=320, head_chunks=4)


@pytest.mark.parametrize(("vms", "levels"), [(10, None), (60, 0), (400, 1), (4000, 2), (20_000, 3)])
async def test_values_of_any_size_travel_in_a_tree_of_chunks(vms, levels):
    dht = FakeDht()
    writer, reader = state(SMALL, dht), state(SMALL, dht)
    big = value(vms)
    await writer.update("ns/big", lambda cur: (big, None))
    head = head_of(dht, "ns/big")
    if levels is None:
        assert "inline" in head and "chunks" not in head
    else:
        assert head.get("levels", 0) == levels and len(head["chunks"]) <= SMALL.head_chunks
    assert (await reader.read("ns/big")).value == big  # every blob from the DHT
    # the next version replaces it whole
    await writer.update("ns/big", lambda cur: (cur[:5], None))
    assert (await reader.read("ns/big")).value == big[:5]


async def test_a_namespace_of_20000_vms_is_past_one_level_and_needs_one_index_level():
    dht = FakeDht()
    st = state(StateConfig(), dht)
    vms = [{"id": i, "name": f"vm{i}", "uuid": f"{random.Random(i).getrandbits(128):032x}"}
           for i in range(20_000)]  # fmt: skip
    await st.update("ns/big", lambda cur: (vms, None))
    head = head_of(dht, "ns/big")
    assert head["size"] > 100 * StateConfig().chunk_bytes  # past one level of chunks
    assert head["levels"] == 1
    assert (await state(StateConfig(), dht).read("ns/big")).value == vms


async def test_a_value_past_the_limit_is_refused_naming_its_size():
    dht = FakeDht()
    st = state(StateConfig(max_value_bytes=2_000), dht)
    with pytest.raises(StateError, match=r"ns/huge: too large to write \(\d[\d,]* bytes "
                       r"compressed; the limit is 2,000, \[state\] max_value_bytes\)"):  # fmt: skip
        await st.update("ns/huge", lambda cur: (value(500), None))
    assert (await st.read("ns/huge")).seq == 0  # nothing written
    assert dht.puts == 0


async def test_a_missing_index_chunk_is_an_error_not_a_wrong_value():
    dht = FakeDht()
    writer = state(SMALL, dht)
    await writer.update("ns/big", lambda cur: (value(4000), None))
    head = head_of(dht, "ns/big")
    # forget the top index chunks everywhere (a fresh reader has no cache)
    for digest in head["chunks"]:
        dht.store._items.pop(key_of(BLOB_PREFIX + digest.hex()), None)
    with pytest.raises(StateError, match="a chunk of its value is missing"):
        await state(SMALL, dht).read("ns/big")


def test_a_head_naming_too_many_levels_is_not_a_state_record():
    ident = Identity.generate()
    validators = state_validators()
    data = zlib.compress(cbor2.dumps([1]))
    for levels, ok in ((0, True), (4, True), (5, False), (-1, False), (True, False)):
        head = {"v": 1, "size": len(data), "chunks": [b"\0" * 32], "levels": levels}
        rec = ident.sign_record("ns/x", cbor2.dumps(head), seq=1, ttl_s=60.0)
        if ok:
            validators.validate(rec)
        else:
            with pytest.raises(RecordError):
                validators.validate(rec)
