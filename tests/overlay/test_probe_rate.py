"""Vivaldi probe rate of one overlay core: fast while the coordinate is new (until 150
samples, or sooner once its error estimate has settled), then a bounded burst per error
surge, re-armed once the error is low again.

One core with one peer (its seed) that answers every request after 50 µs with the
coordinate it is given; the test drives the core's timers itself (no engine). A cluster
on a 50 µs LAN just after a reordering window is modelled by the peer claiming, at
each answer, another coordinate milliseconds from the origin with the clamped error:
after such a window the coordinates of a 200-node simulation stay spread by
milliseconds for minutes, and every node's error estimate stays at its clamp."""

import random
from collections.abc import Callable

from dvms.effects import Send
from dvms.overlay.config import KademliaConfig
from dvms.overlay.core import OverlayCore
from dvms.overlay.messages import Contact, FindNode, Nodes, Ping, Pong
from dvms.vivaldi import Coordinate, VivaldiClient, VivaldiConfig

CFG = KademliaConfig(k=8)
VIV = VivaldiConfig()
LAN_RTT = 50e-6
PEER = 5
SEED = ("seed", 9)
#: The peer sits at the origin with a settled coordinate.
SETTLED = tuple(Coordinate((0.0,) * VIV.dimensionality, 0.05, 0.0, VIV.height_min).to_wire())


class OnePeer:
    """A core whose only peer answers Pings and FindNodes after 50 µs, with ``coord()``."""

    def __init__(self, jitter: Callable[[], float] = lambda: 0.0) -> None:
        self.jitter = jitter
        self.core = OverlayCore(
            Contact(1, "me", 1), CFG, random.Random(0), vivaldi=VivaldiClient(VIV, random.Random(1))
        )
        self.now = 0.0
        self.coord: Callable[[], tuple[float, ...]] = lambda: SETTLED
        self._answer(self.core.start([SEED], now=0.0))

    def _answer(self, out: list) -> int:
        """Answer every request in ``out`` (and those its answers start); the Pings."""
        pings = 0
        while out:
            sends = [e for e in out if isinstance(e, Send)]
            out = []
            for s in sends:
                if isinstance(s.msg, Ping):
                    pings += 1
                    reply = Pong(self.coord())
                elif isinstance(s.msg, FindNode):
                    reply = Nodes((), self.coord())
                else:
                    continue
                out += self.core.on_message(
                    SEED, PEER, s.rid, reply, now=self.now + LAN_RTT + self.jitter()
                )
        return pings

    def run(self, seconds: float) -> int:
        """Run the core's timers for ``seconds``; the Pings it sent (probes)."""
        end = self.now + seconds
        pings = 0
        while (due := self.core.next_deadline()) is not None and due <= end:
            self.now = due
            pings += self._answer(self.core.on_timer(now=due))
        self.now = end
        return pings


def spread(rng: random.Random) -> Callable[[], tuple[float, ...]]:
    """Peer coordinates as after a reordering window: milliseconds apart, error clamped."""

    def coord() -> tuple[float, ...]:
        vec = tuple(rng.uniform(-5e-3, 5e-3) for _ in range(VIV.dimensionality))
        return tuple(Coordinate(vec, VIV.error_max, -2e-3, VIV.height_min).to_wire())

    return coord


def noisy() -> OnePeer:
    """The settled peer answering after 10-150 µs: the error estimate stays well above
    probe_fast_settled_error, as most WAN nodes' does until their 150th sample (on the
    WonderNetwork matrix, the median estimate is still 0.15 after 150 samples)."""
    rng = random.Random(11)
    return OnePeer(jitter=lambda: LAN_RTT * rng.uniform(-0.8, 2.0))


def test_a_new_coordinate_probes_fast_until_its_error_has_settled_then_slowly():
    """On a quiet 50 µs path the estimate is down to probe_fast_settled_error within
    some 30 samples: 120 more probes at 1 s would teach the node nothing."""
    node = OnePeer()
    fast = node.run(60.0)
    assert node.core.vivaldi.coordinate.error <= CFG.probe_fast_settled_error
    assert 10 <= fast <= 45
    slow = node.run(200.0)
    assert slow <= 200.0 / CFG.probe_interval_s * 1.2


def test_a_new_coordinate_whose_error_stays_above_settled_probes_fast_for_150_samples():
    node = noisy()
    fast = node.run(200.0)
    assert fast >= CFG.probe_fast_samples - 10  # ~1 probe/s until 150 samples
    assert CFG.probe_fast_settled_error < node.core.vivaldi.coordinate.error
    slow = node.run(200.0)
    assert slow <= 200.0 / CFG.probe_interval_s * 1.2


def test_a_settled_new_coordinate_gets_only_a_burst_when_a_surge_comes_early():
    """The fast period of a new coordinate ends for good once its error has settled: a
    surge before its 150th sample is a surge like any other (a bounded burst)."""
    node = OnePeer()
    node.run(60.0)  # settled after some 30 samples
    node.coord = spread(random.Random(3))
    probes = node.run(300.0)
    most = CFG.probe_fast_burst + 300.0 / CFG.probe_interval_s * 1.2
    assert probes <= most, (probes, most)


def test_fast_probing_after_an_error_surge_is_bounded_and_falls_back_to_the_slow_period():
    """Spread peer coordinates keep the error estimate at its clamp: probing goes fast
    for a bounded burst, then back to the slow period however long the error stays high
    (without the bound it went on at 1 probe/s all along)."""
    node = OnePeer()
    node.run(200.0)
    node.coord = spread(random.Random(3))
    probes = node.run(300.0)
    assert node.core.vivaldi.coordinate.error > CFG.probe_fast_error  # still stuck
    most = CFG.probe_fast_burst + 300.0 / CFG.probe_interval_s * 1.2
    assert probes <= most, (probes, most)
    late = node.run(200.0)  # the burst is long spent: the slow period only
    assert late <= 200.0 / CFG.probe_interval_s * 1.2


def test_a_quiet_network_rearms_the_burst_for_the_next_surge():
    node = OnePeer()
    node.run(200.0)
    node.coord = spread(random.Random(4))
    node.run(300.0)  # burst spent
    node.coord = lambda: SETTLED
    node.run(400.0)
    assert node.core.vivaldi.coordinate.error <= CFG.probe_fast_rearm_error
    node.coord = spread(random.Random(5))
    probes = node.run(CFG.probe_fast_burst * 1.5)
    assert probes >= CFG.probe_fast_burst * 0.6  # fast again, ~1 probe/s
