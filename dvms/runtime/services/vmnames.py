"""Atomic VM name claims for ``submit``: one compare-and-swap per name.

Two vjobs naming the same VM, submitted at once on different nodes, both pass the
namespace's table check (neither has placed anything yet); the partition directory's
claim (``dvms.partition.directory``) is a put and a read-back, which concurrent
writers on different replicas can both win. So before a vjob is accepted, each of its
VM names is claimed in cluster state (``services/state.py``): a head record
``vmname/<namespace>/<name>`` written at version 1 through its arbiter, which accepts
exactly one write of a version, so of N submits at once exactly one gets each name.
The others read the winner's claim and are refused naming it and the node it was
submitted on.

A claim is not released when its VM goes: the next claimer finds it *stale* and takes
it over with a compare-and-swap at the next version (two takeovers at once: one wins).
A claim is stale when its vjob is failed, stopped or removed, when its vjob is done and
the directory holds no live record of the VM (killed, or never created), or when its
vjob record was never written ``claim_grace_s`` after the claim (a submit that died
between the two writes)::

    claim(ns, name) --write v1--> ok
                    \\--lost--> read claim --ours--> ok (our write landed, its answer did not)
                                           \\--live--> refused: "claimed by vjob V on H"
                                           \\--stale--> write v(n+1) --> ok | lost: again
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dvms.runtime.capabilities import StateStore
from dvms.runtime.services.state import StateError

__all__ = ["CLAIM_PREFIX", "ClaimRefused", "NameClaims", "claim_record"]

CLAIM_PREFIX = "vmname/"
#: Rounds of read, check, take over for one name before the claim is refused as busy.
_ATTEMPTS = 4


class ClaimRefused(Exception):
    """A VM name is claimed by a live vjob; the message names it and its node."""


def claim_record(namespace: str, name: str) -> str:
    return f"{CLAIM_PREFIX}{namespace}/{name}"


#: ``alive(namespace, name, claim)``: whether the claim's vjob still holds the name
Alive = Callable[[str, str, dict[str, Any]], Awaitable[bool]]


class NameClaims:
    def __init__(self, state: StateStore, alive: Alive, parallelism: int = 32) -> None:
        self.state = state
        self.alive = alive
        self.parallelism = parallelism

    async def claim(self, namespace: str, names: list[str], vjob_id: str, host: str) -> None:
        """Claim every one of ``names`` for vjob ``vjob_id`` submitted on ``host``
        (``parallelism`` at once), or none: on a refusal, the names claimed are freed
        and ``ClaimRefused`` raised (the first refusal's), or ``StateError`` when no
        node holding a claim answered."""
        mine = {"vjob": vjob_id, "host": host, "at": time.time()}
        got: list[tuple[str, int]] = []
        refused: list[ClaimRefused | StateError] = []
        limit = trio.CapacityLimiter(self.parallelism)

        async def one(name: str) -> None:
            async with limit:
                if refused:
                    return
                try:
                    got.append((name, await self._claim_one(namespace, name, mine)))
                except (ClaimRefused, StateError) as exc:  # raised below, not as a group
                    refused.append(exc)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        if refused:
            for name, seq in got:
                # a claim not freed now is stale once claim_grace_s has passed
                with contextlib.suppress(StateError):
                    await self.state.write(claim_record(namespace, name), None, seq)
            raise refused[0]

    async def _claim_one(self, namespace: str, name: str, mine: dict[str, Any]) -> int:
        """The version our claim of ``name`` was written at."""
        record = claim_record(namespace, name)
        seq = 0
        for _ in range(_ATTEMPTS):
            if await self.state.write(record, mine, seq):
                return seq + 1
            cur = await self.state.read(record)
            holder = cur.value
            if holder == mine:
                # Ours: the write landed but its answer was lost or late (the arbiter
                # failed over, or a retransmission found the version taken by itself).
                return cur.seq
            if isinstance(holder, dict) and await self.alive(namespace, name, holder):
                where = f"{namespace}/{name}" if namespace else name
                raise ClaimRefused(
                    f"VM {where} is claimed by vjob {holder.get('vjob')} submitted on "
                    f"{holder.get('host')}"
                )
            seq = cur.seq  # free or stale: take it over at the next version
        raise ClaimRefused(f"VM name {name}: claimed and released too often at once; retry")
