"""Timer kinds of the partition core's timer heap (the handler of each: the core's
``_timer_handlers``; which node states act on which: ``transitions.py``)."""

from enum import IntEnum

__all__ = ["PartitionTimer"]


class PartitionTimer(IntEnum):
    RPC = 0  # a request attempt timed out (ref: the Request)
    LEASE = 1  # check a member's lease (ref: pid)
    KEEPALIVE = 2  # a leader or ISP holder refreshes its members' leases (ref: pid)
    MONITOR = 3  # the self-monitor looks for overload/underload
    STATES = 4  # a leader stops waiting for MemberState answers (ref: pid)
    ACTION = 5  # a started action did not report its end in time (ref: op)
    RETRY = 6  # a failed launch queues again (ref: event id)
    FLUSH = 7  # hand out overlay effects held back from a direct call
    SUSPECT = 8  # nothing heard from our partition: probe its leader (ref: pid)
    UNDERLOAD = 9  # the random delay before an underload event is up
    OUTCOME = 10  # an origin stops waiting for a solved partition's Outcome (ref: event id)
