"""The partition core's transition table: for each state of this node and each input (a
message type or a timer kind), the handler that runs, or ``IGNORED``.

The node's state (``NodeState``, from ``PartitionCore.node_state()``)::

    FREE     in no partition, holding no ISP: may start an event of its own
    PASSING  in no partition, but holding an ISP it passes on (or checks before joining)
    MEMBER   in a partition led by another node (it may hold that partition's ISP too,
             after its own solver found nothing and it passed the ISP on)
    LEADING  leads its partition: collecting states -> solving -> confirming (every
             member asked to adopt the Finishing view) -> acting (``LeadPhase``)

    FREE --Isp (joins) / own event--> LEADING --no plan, ISP passed on--> MEMBER
    FREE --SetPartition--> MEMBER --leader gone (SUSPECT probe unanswered)--> LEADING
    FREE --Blocked Isp, staleness check--> PASSING --still valid--> LEADING
    MEMBER/LEADING --Dissolve, lease expired, plan applied, lap over--> FREE (or PASSING)

Every handler still checks the partition it is given (a pid, a version, the partition's
own state ``PartitionState``): the table says which inputs can matter in a state, the
handler decides what they do. An ``IGNORED`` pair is one whose handler would do nothing
in that state (a KeepAlive or Dissolve reaching a node in no partition, a lease or
leader-probe timer of a partition already left, a leader's own timers after it stopped
leading); nothing is counted or answered. Requests are answered in every state (a
refusal is an answer: ``IspAck(False)``, ``MemberState(host=None)``, ``Valid(False)``,
``MergeAnswer(False)``, ``ActionAccepted(ok=False)``), and responses always go to the
request table, which drops the unexpected ones. A message type missing from the table is
counted as ``unknown_message``.

``tests/partition/test_transition_table.py`` walks the table: every pair is present or
ignored, every handler exists, and each pair runs on a fresh core.
"""

from __future__ import annotations

from enum import Enum

from dvms.partition.messages import (
    RESPONSES,
    ActionDone,
    CanMerge,
    CreateVm,
    Dissolve,
    Isp,
    KeepAlive,
    KeepAliveAck,
    MigrateVm,
    Outcome,
    SetPartition,
    StatePage,
    StillValid,
)
from dvms.partition.timers import PartitionTimer

__all__ = ["IGNORED", "TRANSITIONS", "Input", "NodeState"]


class NodeState(Enum):
    FREE = "free"
    PASSING = "passing"
    MEMBER = "member"
    LEADING = "leading"


#: An input of the machine: a message type or a timer kind.
Input = type | PartitionTimer

#: The pair is legal and its handler would do nothing: drop the input.
IGNORED: None = None

_ALL = tuple(NodeState)
FREE, PASSING, MEMBER, LEADING = _ALL
_NO_PARTITION = (FREE, PASSING)


def _rows(handler: str | None, states: tuple[NodeState, ...], *inputs: Input) -> dict:
    return {(state, i): handler for state in states for i in inputs}


def _build() -> dict[tuple[NodeState, Input], str | None]:
    t: dict[tuple[NodeState, Input], str | None] = {}
    # -- messages ----------------------------------------------------------------------
    t |= _rows("_on_isp", _ALL, Isp)
    t |= _rows("_on_set_partition", _ALL, SetPartition)
    t |= _rows("_on_state_page", _ALL, StatePage)  # refused outside the partition
    t |= _rows("_on_still_valid", _ALL, StillValid)
    t |= _rows("_on_can_merge", _ALL, CanMerge)
    t |= _rows("_on_migrate", _ALL, MigrateVm)  # a retransmission is re-accepted anywhere
    t |= _rows("_on_create", _ALL, CreateVm)
    t |= _rows("_on_outcome", _ALL, Outcome)
    t |= _rows("_on_action_done", _ALL, ActionDone)  # acknowledged even when stale
    t |= _rows("_on_keepalive", (MEMBER, LEADING), KeepAlive)
    t |= _rows(IGNORED, _NO_PARTITION, KeepAlive)
    t |= _rows("_on_keepalive_ack", (LEADING,), KeepAliveAck)
    t |= _rows(IGNORED, (FREE, PASSING, MEMBER), KeepAliveAck)  # no longer leading
    t |= _rows("_on_dissolve", (MEMBER,), Dissolve)
    t |= _rows(IGNORED, (FREE, PASSING, LEADING), Dissolve)  # a leader dissolves itself
    t |= _rows("_on_reply", _ALL, *RESPONSES)
    # -- timers ------------------------------------------------------------------------
    t |= _rows("_rpc_timeout", _ALL, PartitionTimer.RPC)
    t |= _rows("_check_lease", (MEMBER, LEADING), PartitionTimer.LEASE)
    t |= _rows(IGNORED, _NO_PARTITION, PartitionTimer.LEASE)
    t |= _rows("_keepalive", (PASSING, MEMBER, LEADING), PartitionTimer.KEEPALIVE)
    t |= _rows(IGNORED, (FREE,), PartitionTimer.KEEPALIVE)
    t |= _rows("_monitor", _ALL, PartitionTimer.MONITOR)
    t |= _rows("_states_timeout", (LEADING,), PartitionTimer.STATES)
    t |= _rows(IGNORED, (FREE, PASSING, MEMBER), PartitionTimer.STATES)
    t |= _rows("_action_timeout", (LEADING,), PartitionTimer.ACTION)
    t |= _rows(IGNORED, (FREE, PASSING, MEMBER), PartitionTimer.ACTION)
    t |= _rows("_retry_due", _ALL, PartitionTimer.RETRY)
    t |= _rows("_flush", _ALL, PartitionTimer.FLUSH)
    t |= _rows("_suspect", (MEMBER,), PartitionTimer.SUSPECT)
    t |= _rows(IGNORED, (FREE, PASSING, LEADING), PartitionTimer.SUSPECT)  # leaders don't
    t |= _rows("_underload_due_now", _ALL, PartitionTimer.UNDERLOAD)
    t |= _rows("_outcome_overdue", _ALL, PartitionTimer.OUTCOME)
    return t


#: (node state, input) -> the name of the ``PartitionCore`` method handling it, or
#: ``IGNORED``.
TRANSITIONS: dict[tuple[NodeState, Input], str | None] = _build()
