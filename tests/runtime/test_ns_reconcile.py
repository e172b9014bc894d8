"""The namespace service brings a VM table up to what the hosts report before each
command (``NamespaceService._reconcile``). VMs the table does not hold are adopted:
those a launch event created although it failed, and those ``submit`` placed. Each
adopted VM gets an id at or above the table's ``next_id``, and ``next_id`` moves
past it in the same step, so the table stays valid. A table built before ``next_id``
moved made every later namespace command of that namespace fail, ``clear namespace``
included, with ``a VM id is not below next_id``."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvms.namespace import Context, State, execute, launch_finished, launch_token
from dvms.namespace.effects import ClearNamespace, Launch, Session
from dvms.namespace.state import Namespace
from dvms.runtime.services.namespaces import NamespaceService
from tests.namespace.conftest import cluster

HOSTS = ("mm1", "mm2", "mm3")


def service(reports: dict[tuple[str, str], str]) -> NamespaceService:
    """A namespace service whose hosts report ``reports``: (namespace, name) -> host,
    every VM paused (as a launched VM waits for ``vm start``)."""
    svc = NamespaceService(
        host_name="mm1",
        state=None,  # type: ignore[arg-type]  # _reconcile reads only the reports
        requests=None,  # type: ignore[arg-type]
        peers=None,  # type: ignore[arg-type]
        launcher=None,  # type: ignore[arg-type]
        rng=random.Random(0),
    )
    svc._reports = {key: (host, "PAUSED", 1, 512) for key, host in reports.items()}
    # no word from any launcher yet (silent, still in the routing table): running
    # launches stay running; the tests of interrupted launches say otherwise
    svc._silent = frozenset(HOSTS)
    return svc


def launch(state: State, line: str) -> tuple[State, Launch]:
    result = execute(line, Context(state, cluster(3), Session("foo")))
    assert result.ok, result.error
    (effect,) = (e for e in result.effects if isinstance(e, Launch))
    return result.state, effect


def clear(state: State) -> ClearNamespace:
    result = execute("clear namespace foo", Context(state, cluster(3), Session()))
    assert result.ok, result.error
    assert result.state.get("foo") is None
    (effect,) = (e for e in result.effects if isinstance(e, ClearNamespace))
    return effect


def reconciled(svc: NamespaceService, state: State) -> State:
    ns = state.get("foo")
    assert ns is not None
    return State((svc._reconcile(ns, set(HOSTS)),))


def test_vms_a_failed_launch_event_created_are_adopted_and_cleared():
    state, effect = launch(State(), "vm launch kvm 6")
    # the event of vm-3..vm-5 failed (its partition lost a member), yet created them
    failed = {vm.name: "lease expired" for vm in effect.vms[3:]}
    state = launch_finished(state, "foo", effect.schedule, failed, now=1.0)
    ns = state.get("foo")
    assert ns is not None and [v.name for v in ns.vms] == ["vm-0", "vm-1", "vm-2"]
    assert ns.next_id == 6
    svc = service({("foo", vm.name): vm.host for vm in effect.vms})
    state = reconciled(svc, state)
    after = state.get("foo")
    assert after is not None
    assert sorted((v.id, v.name) for v in after.vms) == [
        (0, "vm-0"), (1, "vm-1"), (2, "vm-2"), (6, "vm-3"), (7, "vm-4"), (8, "vm-5"),
    ]  # fmt: skip
    assert after.next_id == 9
    assert Namespace.from_record(after.to_record()) == after
    assert {name for name, _ in clear(state).vms} == {vm.name for vm in effect.vms}


def test_vms_submit_placed_are_adopted_next_to_launched_ones_and_cleared():
    state, effect = launch(State(), "vm launch kvm l[1-2]")
    state = launch_finished(state, "foo", effect.schedule, {}, now=1.0)
    # submit placed s1, s2 in the namespace; recording them in its table failed
    svc = service({("foo", "l1"): "mm1", ("foo", "l2"): "mm2", ("foo", "s1"): "mm3",
                   ("foo", "s2"): "mm1", ("bar", "s3"): "mm2"})  # fmt: skip
    state = reconciled(svc, state)
    after = state.get("foo")
    assert after is not None
    assert [(v.id, v.name, v.host) for v in after.vms] == [
        (0, "l1", "mm1"), (1, "l2", "mm2"), (2, "s1", "mm3"), (3, "s2", "mm1"),
    ]  # fmt: skip
    assert after.next_id == 4
    assert sorted(clear(state).vms) == [("l1", "mm1"), ("l2", "mm2"), ("s1", "mm3"),
                                        ("s2", "mm1")]  # fmt: skip


COMMANDS = ["vm kill all", "vm flush", "ns flush", "ns queueing true", "ns queueing false",
            "vm launch"]  # fmt: skip
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("launch"), st.sampled_from(["1", "3", "a", "b", "vm-[0-2]", "c,d"])),
        st.tuples(st.just("finish"), st.integers(0, 2**6 - 1)),
        st.tuples(st.just("appear"), st.sampled_from(["a", "s1", "s2", "vm-0", "vm-4"])),
        st.tuples(st.just("vanish"), st.integers(0, 9)),
        st.tuples(st.just("command"), st.sampled_from(COMMANDS)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS, st.randoms(use_true_random=False))
def test_any_mix_of_launches_outcomes_and_host_reports_keeps_the_table_valid(steps, rng):
    """Launches that fail in part (the failed VMs may exist all the same), VMs that
    appear on hosts (``submit``) or vanish, and commands, in any order: every table the
    reconcile builds is valid, round-trips, and ``clear namespace`` takes all of it."""
    c = cluster(3)
    state = State((Namespace("foo", hosts=frozenset(HOSTS)),))
    on_hosts: dict[str, str] = {}  # name -> host: what the hosts report
    pending: list[Launch] = []
    for kind, arg in steps:
        ctx = Context(state, c, Session("foo"))
        if kind in ("launch", "command"):
            line = f"vm launch kvm {arg}" if kind == "launch" else str(arg)
            result = execute(line, ctx)
            if result.ok:
                state = result.state
                pending += [e for e in result.effects if isinstance(e, Launch)]
                for e in pending:
                    on_hosts.update((vm.name, vm.host) for vm in e.vms if rng.random() < 0.8)
        elif kind == "finish" and pending:
            effect = pending.pop(0)
            failed = {vm.name: "failed" for i, vm in enumerate(effect.vms) if int(arg) >> i & 1}
            state = launch_finished(state, "foo", effect.schedule, failed, now=1.0)
        elif kind == "appear":
            on_hosts.setdefault(str(arg), HOSTS[len(on_hosts) % 3])
        elif kind == "vanish" and on_hosts:
            on_hosts.pop(sorted(on_hosts)[int(arg) % len(on_hosts)])
        state = reconciled(service({("foo", n): h for n, h in on_hosts.items()}), state)
        ns = state.get("foo")
        assert ns is not None
        assert all(vm.id < ns.next_id for vm in ns.vms)
        assert Namespace.from_record(ns.to_record()) == ns
    if not any(s.state == "running" for s in state.namespaces[0].stats):
        assert {n for n, _ in clear(state).vms} == {v.name for v in state.namespaces[0].vms}


def test_vms_a_running_launch_is_creating_keep_their_record():
    """A command of another client while a launch runs (its VMs not on their hosts
    yet) keeps their records: the same ids, type and config once the hosts report
    them. Those whose event failed and that never appeared go when the launch ends."""
    state = execute("vm config net 100", Context(State(), cluster(3), Session("foo"))).state
    state, effect = launch(state, "vm launch container 4")
    before = state.get("foo")
    assert before is not None and before.scheduling()
    state = reconciled(service({}), state)  # nothing created yet
    assert state.get("foo") == before
    failed = {"vm-3": "lease expired"}
    state = launch_finished(state, "foo", effect.schedule, failed, now=1.0)
    created = {("foo", vm.name): vm.host for vm in effect.vms if vm.name not in failed}
    after = reconciled(service(created), state).get("foo")
    assert after is not None
    assert [(v.id, v.name, v.vm_type, v.config.networks) for v in after.vms] == [
        (i, f"vm-{i}", "container", ("100",)) for i in range(3)
    ]
    # a VM the hosts no longer report is forgotten once no launch runs
    assert [v.name for v in reconciled(service({}), state).get("foo").vms] == []  # type: ignore[union-attr]


def _running_launch() -> tuple[State, Launch]:
    state, effect = launch(State(), "vm launch kvm 4")
    ns = state.get("foo")
    assert ns is not None and ns.scheduling() and ns.stats[-1].launcher == "mm1"
    return state, effect


def _clear_error(state: State) -> str:
    result = execute("clear namespace foo", Context(state, cluster(3), Session()))
    return "" if result.ok else result.error


def test_a_launch_whose_launcher_restarted_is_closed_and_clear_works_again():
    """A node that died (or restarted) during ``vm launch`` left its status row
    ``running`` for ever, and ``clear namespace`` refused with "scheduler still running
    for namespace" on every node. A row whose launcher answers without listing the
    launch is closed: the VMs it created stay, the others are dropped."""
    state, effect = _running_launch()
    assert _clear_error(state) == "scheduler still running for namespace"
    created = {vm.name: vm.host for vm in effect.vms[:2]}
    svc = service({("foo", n): h for n, h in created.items()})
    svc._launching, svc._silent = {h: frozenset() for h in HOSTS}, frozenset()
    after = reconciled(svc, state)
    ns = after.get("foo")
    assert ns is not None and not ns.scheduling()
    stat = ns.stats[-1]
    assert (stat.state, stat.launched, stat.failures) == ("completed", 2, 2)
    assert sorted(v.name for v in ns.vms) == sorted(created)
    assert _clear_error(after) == ""


def test_a_launch_its_launcher_still_carries_out_stays_running():
    state, _ = _running_launch()
    start = state.get("foo").stats[-1].start  # type: ignore[union-attr]
    svc = service({})
    svc._launching, svc._silent = {"mm1": frozenset({launch_token("foo", start)})}, frozenset()
    assert reconciled(svc, state).get("foo").scheduling()  # type: ignore[union-attr]
    # silent but still in the routing table: it may be launching
    svc._launching, svc._silent = {}, frozenset({"mm1"})
    assert reconciled(svc, state).get("foo").scheduling()  # type: ignore[union-attr]
    # silent and dropped from the routing table: it died
    svc._silent = frozenset()
    assert not reconciled(svc, state).get("foo").scheduling()  # type: ignore[union-attr]


def test_a_launch_row_names_its_launcher_in_the_record():
    state, _ = _running_launch()
    ns = state.get("foo")
    assert ns is not None
    assert Namespace.from_record(ns.to_record()).stats[-1].launcher == "mm1"
    # records written without it still read (and are never closed as interrupted)
    old = ns.to_record()
    for row in old["stats"]:
        row.pop("launcher")
    assert Namespace.from_record(old).stats[-1].launcher == ""
