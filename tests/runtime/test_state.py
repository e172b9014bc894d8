"""Cluster state in DHT records and vjobs that survive their node, on three in-process
nodes over loopback UDP (each with its own libvirt test:/// host).

- compare-and-swap at the arbiter: two nodes incrementing one record concurrently lose
  no update; a value larger than a record travels in chunks and reads back elsewhere;
- a vjob whose owner is dead is taken over by its keeper and placed, once;
- a node restarted with an unfinished vjob in its journal resumes it, and a resume
  does not create a VM twice;
- an arbiter that lost its records (restarted with an empty store) answers with the
  replicas' latest version, and the next write continues from it."""

from __future__ import annotations

import json
import time

import pytest
import trio

from dvms.overlay.records import key_of
from dvms.partition.messages import LaunchVm, WireConstraint
from dvms.runtime.daemon import build_vjobs
from dvms.runtime.services.state import UNCHANGED
from dvms.runtime.services.vjobs import Journal, VjobConfig, vjob_record
from dvms.wire.keys import generate_key
from tests.runtime.test_node import start_node

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

FAST = VjobConfig(keeper_period_s=0.3, owner_attempts=2)


async def three_nodes(nursery, tmp_path):
    key = generate_key()
    a, ta, ha = await start_node(nursery, tmp_path, "a", key, [])
    b, _, hb = await start_node(nursery, tmp_path, "b", key, [ta.local_address])
    c, _, hc = await start_node(nursery, tmp_path, "c", key, [ta.local_address])
    with trio.fail_after(15):
        while any(len(r.core.table) < 2 for r in (a, b, c)):
            await trio.sleep(0.05)
    return (a, b, c), (ha, hb, hc)


async def test_concurrent_updates_lose_nothing_and_big_values_travel(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, b, c), _ = await three_nodes(nursery, tmp_path)

        def bump(cur):
            return (cur or 0) + 1, None

        # A race for sure: each node reads, then waits until the other has read too,
        # so both write on the same version and one of them must lose and retry.
        have_read = {"a": trio.Event(), "b": trio.Event()}

        def racing_bump(me, other):
            async def fn(cur):
                have_read[me].set()
                await have_read[other].wait()
                return (cur or 0) + 1, None

            return fn

        async with trio.open_nursery() as inner:
            inner.start_soon(a.state.update, "ns/counter", racing_bump("a", "b"))
            inner.start_soon(b.state.update, "ns/counter", racing_bump("b", "a"))
        assert a.state.stats["conflicts"] + b.state.stats["conflicts"] >= 1
        assert (await c.state.read("ns/counter")).value == 2

        async def bumper(runner, n):
            for _ in range(n):
                await runner.state.update("ns/counter", bump)

        async with trio.open_nursery() as inner:
            inner.start_soon(bumper, a, 10)
            inner.start_soon(bumper, b, 10)
        assert (await c.state.read("ns/counter")).value == 22
        assert (await c.state.read("ns/counter")).seq == 22

        big = [f"vm{i}-{'x' * 40}-{i * 7919 % 10007}" for i in range(3000)]
        await a.state.update("ns/big", lambda cur: (big, None))
        assert (await c.state.read("ns/big")).value == big  # chunks fetched from the DHT
        # a no-op update writes nothing
        before = (await b.state.read("ns/big")).seq
        await b.state.update("ns/big", lambda cur: (UNCHANGED, None))
        assert (await b.state.read("ns/big")).seq == before
        nursery.cancel_scope.cancel()


async def test_an_arbiter_that_lost_its_records_answers_with_the_replicas_version(tmp_path):
    """A restarted node keeps its identity but not its record store. When it is the
    closest node to a head's key, it is that head's arbiter again at once: it answered
    "nothing here" (a file name not found for as long as its table said so) and would
    have accepted a first version over the replicas' latest."""
    async with trio.open_nursery() as nursery:
        nodes, _ = await three_nodes(nursery, tmp_path)
        for _ in range(5):
            await nodes[0].state.update("ns/kept", lambda cur: ((cur or 0) + 1, None))
        key = key_of("ns/kept")
        arbiter = min(nodes, key=lambda r: r.core.contact.node_id ^ key)
        reader = next(r for r in nodes if r is not arbiter)
        store = arbiter.store
        store._items.pop(key)  # what a restart leaves: the identity, no records
        assert store.get(key, trio.current_time()) is None
        got = await reader.state.read("ns/kept")
        assert (got.value, got.seq) == (5, 5)
        assert arbiter.state.stats["caught_up"] == 1
        await reader.state.update("ns/kept", lambda cur: (cur + 1, None))
        got = await arbiter.state.read("ns/kept")
        assert (got.value, got.seq) == (6, 6)
        nursery.cancel_scope.cancel()


def _vjob_body():
    vms = [LaunchVm(f"k{i}", "blue", 1, 256) for i in (1, 2, 3)]
    spread = WireConstraint("spread", tuple(f"blue/k{i}" for i in (1, 2, 3)))
    from dataclasses import asdict

    return {"vms": [asdict(v) for v in vms], "constraints": [asdict(spread)]}


async def test_keeper_takes_over_a_vjob_whose_owner_is_dead(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, b, c), hvs = await three_nodes(nursery, tmp_path)
        services = [build_vjobs(r, tmp_path / r.monitor.name, FAST) for r in (a, b, c)]
        for s in services:
            await nursery.start(s.run)
        dead = {"id": "ff" * 20, "host": "127.0.0.1", "port": 9, "name": "gone"}
        record = {
            "id": "00000000deadbeef",
            "name": "orphan",
            "namespace": "blue",
            "state": "accepted",
            "owner": dead,
            "submitted": time.time(),
            "placed": [],
            "vms": 3,
            "body": _vjob_body(),
            "history": ["accepted by gone"],
        }
        await a.state.update(vjob_record("00000000deadbeef"), lambda cur: (record, None))
        with trio.fail_after(30):
            while True:
                rec = (await b.state.read(vjob_record("00000000deadbeef"))).value
                if rec["state"] not in ("accepted", "placing"):
                    break
                await trio.sleep(0.2)
        assert rec["state"] == "done", rec
        assert rec["owner"]["name"] in ("a", "b", "c")
        assert any("taken over by" in line for line in rec["history"])
        hosts = [h for _, _, h in rec["placed"]]
        assert sorted(hosts) == ["a", "b", "c"]  # spread held
        running = [v.name for hv in hvs for v in await hv.list_vms()]
        assert sorted(running) == ["k1", "k2", "k3"]  # created once
        nursery.cancel_scope.cancel()


async def test_journal_resume_after_a_crash_places_once(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, _, _), hvs = await three_nodes(nursery, tmp_path)
        # node a "crashed" right after accepting: its journal holds the vjob, the DHT
        # holds nothing yet
        journal = Journal(tmp_path / "a" / "vjobs.journal")
        entry = {"event": "accepted", "id": "0000000000c0ffee", "name": "j",
                 "namespace": "blue", "body": _vjob_body(), "at": time.time()}  # fmt: skip
        journal.append(entry)
        with journal.path.open("a") as f:
            f.write('{"event": "accepted", "id": "torn')  # a write cut by the crash
        service = build_vjobs(a, tmp_path / "a", FAST)
        await nursery.start(service.run)
        with trio.fail_after(20):
            while "0000000000c0ffee" not in service.known or service.known["0000000000c0ffee"].get(
                "state"
            ) in ("accepted", "placing"):
                await trio.sleep(0.1)
        rec = await service.show("0000000000c0ffee")
        assert rec["state"] == "done" and len(rec["placed"]) == 3, rec
        assert journal.pending() == {}
        lines = [json.loads(x) for x in journal.path.read_text().splitlines()[-1:]]
        assert lines[-1]["event"] == "done"

        # resuming again (say the node crashed before writing "done") creates nothing new
        journal.append(entry)
        again = build_vjobs(a, tmp_path / "a", FAST)
        await nursery.start(again.run)
        with trio.fail_after(20):
            while journal.pending():
                await trio.sleep(0.1)
        running = [v.name for hv in hvs for v in await hv.list_vms()]
        assert sorted(running) == ["k1", "k2", "k3"]
        nursery.cancel_scope.cancel()
