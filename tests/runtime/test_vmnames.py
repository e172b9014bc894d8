"""A VM name claim whose write landed but whose answer was lost is ours, not a rival's
(``services/vmnames.py``): under load the arbiter's answer can come late or the request
fail over, and the read-back then finds our own claim."""

from __future__ import annotations

from typing import Any

import pytest

from dvms.runtime.services.state import StateError, Versioned
from dvms.runtime.services.vmnames import ClaimRefused, NameClaims


class LossyState:
    """Versioned records; the first ``lose`` writes land but answer False."""

    def __init__(self, lose: int) -> None:
        self.records: dict[str, Versioned] = {}
        self.lose = lose

    async def read(self, name: str) -> Versioned:
        return self.records.get(name, Versioned(None, 0))

    async def write(self, name: str, value: Any, seq: int) -> bool:
        if self.records.get(name, Versioned(None, 0)).seq != seq:
            return False
        self.records[name] = Versioned(value, seq + 1)
        if self.lose:
            self.lose -= 1
            return False
        return True

    async def update(self, name: str, fn: Any) -> tuple[Any, Any]:
        raise NotImplementedError


async def always_alive(namespace: str, name: str, claim: dict[str, Any]) -> bool:
    return True


async def test_a_claim_whose_answer_was_lost_is_ours():
    state = LossyState(lose=1)
    claims = NameClaims(state, always_alive)  # type: ignore[arg-type]
    await claims.claim("ns", ["web1", "web2"], "v1", "node1")
    assert {n: v.value["vjob"] for n, v in state.records.items()} == {
        "vmname/ns/web1": "v1",
        "vmname/ns/web2": "v1",
    }
    # a rival's live claim is still refused, naming it
    with pytest.raises(ClaimRefused, match="claimed by vjob v1 submitted on node1"):
        await claims.claim("ns", ["web1"], "v2", "node2")


class SilentState(LossyState):
    """No node holding ``vmname/ns/db1`` answers."""

    async def write(self, name: str, value: Any, seq: int) -> bool:
        if name.endswith("/db1"):
            raise StateError(f"{name}: no node holding it answered")
        return await super().write(name, value, seq)


async def test_a_claim_nobody_answers_is_a_state_error_and_frees_the_others():
    state = SilentState(lose=0)
    claims = NameClaims(state, always_alive)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="no node holding it answered"):  # not a group
        await claims.claim("ns", ["web1", "db1", "web2"], "v1", "node1")
    assert all(v.value is None for v in state.records.values()), state.records
