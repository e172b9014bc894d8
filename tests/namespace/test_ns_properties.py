"""Hypothesis: any command sequence keeps the state valid and round-trippable, and a
refused command changes nothing (``ns schedule mv`` keeps the moves made before the
target that failed, as minimega does, and nothing else)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvms.namespace import Context, State, execute, launch_finished
from dvms.namespace.effects import Launch, Session
from tests.namespace.conftest import cluster

NAMES = st.sampled_from(["a", "b", "c", "vm[1-2]", "vm1", "all", "0", "x,x", "2", "vm-0"])
HOSTS = st.sampled_from(["mm1", "mm2", "mm3", "mm9", "localhost", "all", "mm[1-2]", "mm[2-3]"])
NSNAMES = st.sampled_from(["foo", "bar", "minimega", "bad name"])

COMMANDS = st.one_of(
    st.builds("namespace {}".format, NSNAMES),
    st.just("namespace"),
    st.just("clear namespace"),
    st.builds("clear namespace {}".format, st.sampled_from(["foo", "bar", "all", "zzz"])),
    st.builds("ns add-hosts {}".format, HOSTS),
    st.builds("ns del-hosts {}".format, HOSTS),
    st.builds("ns queueing {}".format, st.sampled_from(["true", "false"])),
    st.sampled_from(
        [
            "ns flush",
            "ns schedule",
            "ns schedule dry-run",
            "ns schedule dump",
            "ns queue",
            "ns hosts",
            "vm launch",
            "vm info",
            "host",
            "vm flush",
            "ns schedule status",
            "clear vm config",
            "ns load memcommit",
        ]
    ),
    st.builds("vm launch kvm {}".format, NAMES),
    st.builds("ns schedule mv {} {}".format, NAMES, HOSTS),
    st.builds("vm config schedule {}".format, HOSTS),
    st.builds("vm config colocate {}".format, NAMES),
    st.builds("vm config coschedule {}".format, st.sampled_from(["-1", "0", "1", "-3", "x"])),
    st.builds("vm config memory {}".format, st.sampled_from(["1024", "60000", "0"])),
    st.builds("vm {} {}".format, st.sampled_from(["start", "stop", "kill", "flush"]), NAMES),
    st.builds("vm migrate {} {}".format, NAMES, HOSTS),
    st.builds("ns bridge br{}".format, st.sampled_from(["0", "1"])),
    st.builds("ns del-bridge br{}".format, st.sampled_from(["0", "1"])),
    st.builds("ns run {}".format, st.sampled_from(["host", "ns run host", "vm launch kvm a"])),
)


def _step(ctx: Context, line: str) -> tuple[State, Session]:
    result = execute(line, ctx)
    if result.error is not None:
        if line.startswith("ns schedule mv") and result.state is not ctx.state:
            ns = ctx.state.get(ctx.session.active)
            new = result.state.get(ctx.session.active)
            assert ns is not None and new is not None
            assert replace(new, assignment=ns.assignment) == ns  # only the assignment moved
        else:
            assert result.state is ctx.state, line
        assert result.session == ctx.session and result.effects == ()
        return ctx.state, ctx.session
    state = result.state
    for effect in result.effects:
        if isinstance(effect, Launch):
            state = launch_finished(state, effect.namespace, effect.schedule, {}, now=ctx.now)
    return state, result.session


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(COMMANDS, max_size=25))
def test_any_command_sequence_keeps_state_valid(lines):
    c = cluster(3, memory=16384)
    state, session = State(), Session()
    for line in lines:
        state, session = _step(Context(state, c, session), line)
        assert State.from_record(state.to_record()) == state
        for ns in state.namespaces:
            names = [vm.name for vm in ns.vms]
            assert len(names) == len(set(names))
            assert not set(names) & ns.queued_names()
            assert all(vm.host in c.host_names() for vm in ns.vms)
