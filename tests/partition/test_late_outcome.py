"""An Outcome can reach an event's origin while the event waits in its queue (an earlier
attempt's leader reporting late, after the origin queued a retry): the event ends there,
and the queue must forget it, or the next start looks up an event that is gone."""

from dvms.partition.config import PartitionConfig
from dvms.partition.core import EventDone
from dvms.partition.messages import LaunchVm, Outcome
from dvms.testing.cluster import FakeCluster


def test_an_outcome_for_a_queued_event_ends_it_and_the_queue_moves_on():
    c = FakeCluster(3, seed=1, config=PartitionConfig(), monitor=False)
    first = c.launch(1, [LaunchVm("a", "", 1, 512)])
    c.run(0.01)
    queued = c.launch(1, [LaunchVm("b", "", 1, 512)])
    c.run(0.01)
    core = c.core(1)
    assert core.view is not None and queued in core.queue  # behind the first launch
    leader = c.core(0).me
    effects = c.nodes[1].core.on_message(
        leader.addr, leader.node_id, 7, Outcome(queued, True, "solved"), now=c.engine.now
    )
    c.engine.apply(c.nodes[1], effects)
    assert queued not in core.queue
    c.run(10.0)  # the first partition ends and the node starts what is queued: no KeyError
    assert c.done[(1, first)].ok
    assert [e.event_id for _, e, _ in c.events_of(EventDone) if e.event_id == queued] == [queued]
