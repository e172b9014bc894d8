"""What became of the overlay core's RPCs, by request type: counts by result and a
latency histogram (pure counters: the core writes them, the metrics read them at scrape
time; nothing in the protocol reads them back).

Results, as memberlist and serf count theirs::

    ok       answered with the response its request asks for (Ping -> Pong,
             FindNode -> Nodes, FindValue -> Value, Store -> Stored(ok), Leave -> Pong)
    error    answered, but refused (a Store the replica did not keep) or with another
             response type than the request asks for
    timeout  every attempt timed out (the core's ``rpc_attempts``, or fewer for a retry)

The latency of an answered RPC runs from its first attempt to the answer, so it
includes retransmissions. Buckets are cumulative at read time (``histogram``), as
Prometheus wants them; counting one RPC is a dict lookup and a bisect.
"""

from __future__ import annotations

from bisect import bisect_left

from dvms.overlay.messages import (
    FindNode,
    FindValue,
    Leave,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    Value,
)

__all__ = ["LATENCY_BOUNDS_S", "RESULTS", "RPC_KINDS", "KindStats", "RpcStats"]

#: Request type -> its label (``type`` of ``dvms_overlay_rpcs_total``).
RPC_KINDS: dict[type, str] = {
    Ping: "ping",
    FindNode: "find_node",
    FindValue: "find_value",
    Store: "store",
    Leave: "leave",
}
#: The response each request asks for.
_ANSWER: dict[type, type] = {
    Ping: Pong,
    FindNode: Nodes,
    FindValue: Value,
    Store: Stored,
    Leave: Pong,
}
RESULTS = ("ok", "error", "timeout")
#: Upper bounds of the latency buckets, seconds: a loopback round trip (~0.1 ms) to a
#: request answered after retransmissions (seconds).
LATENCY_BOUNDS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class KindStats:
    """One request type's counts; ``buckets[i]`` counts latencies in
    ``(bounds[i-1], bounds[i]]``, the last one those above every bound."""

    __slots__ = ("buckets", "error", "ok", "retransmits", "sum_s", "timeout")

    def __init__(self, n_buckets: int) -> None:
        self.ok = 0
        self.error = 0
        self.timeout = 0
        self.retransmits = 0
        self.sum_s = 0.0
        self.buckets = [0] * n_buckets

    def count(self, result: str) -> int:
        return int(getattr(self, result))


class RpcStats:
    __slots__ = ("bounds", "by_type")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.by_type: dict[type, KindStats] = {t: KindStats(len(bounds) + 1) for t in RPC_KINDS}

    def answered(self, request: object, response: object, duration_s: float) -> None:
        """``request`` was answered by ``response``, ``duration_s`` after its first
        attempt."""
        k = self.by_type.get(type(request))
        if k is None:
            return
        # Of the answers, only Stored carries an ``ok`` flag. (Not ``getattr(response,
        # "ok", True)``: in the compiled build that raises and catches an AttributeError
        # per answer, 3 % of a simulation.)
        if _ANSWER[type(request)] is type(response) and (
            not isinstance(response, Stored) or response.ok
        ):
            k.ok += 1
        else:
            k.error += 1
        k.sum_s += duration_s
        k.buckets[bisect_left(self.bounds, duration_s)] += 1

    def timed_out(self, request: object) -> None:
        k = self.by_type.get(type(request))
        if k is not None:
            k.timeout += 1

    def retransmitted(self, request: object) -> None:
        k = self.by_type.get(type(request))
        if k is not None:
            k.retransmits += 1

    def kinds(self) -> list[tuple[str, KindStats]]:
        """(label, counts) of every request type, in a fixed order."""
        return [(RPC_KINDS[t], k) for t, k in self.by_type.items()]

    def histogram(self, k: KindStats) -> list[tuple[str, float]]:
        """``k``'s latencies as Prometheus buckets: (upper bound, cumulative count),
        ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), k.buckets, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out
