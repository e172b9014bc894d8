"""minimega's namespace API on real daemons (`dvms cluster up`), with the namespace
state in DHT records: every command is sent to a *different* node than the one before,
so each must see what the others wrote.

- minimega's own transcripts (tests/namespace/test_ns_scripts.py) replayed on 3 and 5
  daemons, hosts renamed mm -> node;
- mv re-checks capacity and coschedule (unlike minimega) and names what it would break;
- a failed schedule does not poison later launches; the same name in two namespaces on
  one host; commands act only on their namespace; clear namespace removes VMs, bridges
  and records everywhere; vm info / kill / migrate from a node hosting none of the VMs;
- submit on 5 nodes; kill -9 of the entry node after `submit --no-wait` returned: the
  vjob still completes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import textwrap
import time
from itertools import cycle

import pytest

from dvms.runtime.client import ControlError, call
from tests.e2e.test_e2e_cluster import dvms, dvms_json
from tests.namespace import test_ns_scripts as scripts

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


def _up(tmp_path_factory, n: int, *flags: str):
    d = tmp_path_factory.mktemp(f"ns{n}") / "c"
    up = ("cluster", "up", "--nodes", str(n), "--dir", str(d), "--timeout", "90", *flags)
    rows = dvms_json(*up)["nodes"]
    return d, {r["name"]: r["socket"] for r in rows}


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    d, socks = _up(tmp_path_factory, 3)
    yield socks
    dvms("cluster", "down", "--dir", str(d), check=False)


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    d, socks = _up(tmp_path_factory, 5, "--host-cpus", "32")
    yield d, socks
    dvms("cluster", "down", "--dir", str(d), check=False)


class Shell:
    """A client that sends each command to the next node in turn, carrying its active
    namespace from one to the next (nodes keep none)."""

    def __init__(self, socks: dict[str, str]) -> None:
        self.socks = socks
        self._next = cycle(sorted(socks))
        self.namespace = "minimega"

    def run(self, line: str, node: str | None = None) -> str:
        node = node or next(self._next)
        params = {"words": shlex.split(line), "namespace": self.namespace}
        out = call(self.socks[node], "ns", params, timeout=120)
        self.namespace = out["namespace"]
        return out["text"]

    def replay(self, transcript: str) -> None:
        want = textwrap.dedent(transcript).lstrip("\n").replace("mm", "node")
        got: list[str] = []
        for line in want.splitlines():
            if not line.startswith("## "):
                continue
            got.append(line)
            words = line[3:]
            if words.startswith("#"):
                continue
            text = self.run(words)
            got += text.splitlines()

        def norm(lines: list[str]) -> list[str]:  # renaming hosts shifts the columns
            return [" ".join(line.split()) for line in lines]

        assert norm(got) == norm(want.rstrip("\n").splitlines())

    def reset(self) -> None:
        self.run("clear namespace all")
        self.run("clear namespace")  # back to "minimega"


@pytest.mark.parametrize("case", sorted(k for k, (_, hosts) in scripts.CASES.items() if hosts <= 3))
def test_minimega_transcripts_on_three_daemons(three, case):
    shell = Shell(three)
    shell.reset()
    transcript, _ = scripts.CASES[case]
    shell.replay(transcript)
    shell.reset()


def test_minimega_ns_hosts_on_five_daemons(five):
    _, socks = five
    shell = Shell(socks)
    shell.replay(scripts.NS_HOSTS)
    shell.reset()


def test_mv_rechecks_constraints_and_failed_schedules_do_not_poison(three):
    shell = Shell(three)
    shell.reset()
    shell.run("namespace q")
    shell.run("ns queueing true")
    shell.run("vm config schedule node1")
    shell.run("vm launch kvm pinned")
    shell.run("clear vm config schedule")
    shell.run("vm config coschedule 0")
    shell.run("vm launch kvm alone")
    shell.run("clear vm config coschedule")
    dry = shell.run("ns schedule dry-run")
    where = dict(" ".join(line.split()).split(" | ") for line in dry.splitlines()[1:])
    assert where["pinned"] == "node1" and where["alone"] != "node1", dry
    free = ({"node1", "node2", "node3"} - set(where.values())).pop()
    # unlike minimega, a move that breaks coschedule 0 is refused, naming it
    out = shell.run("ns schedule mv alone node1")
    assert out.startswith("E: ") and "coschedule" in out, out
    assert shell.run("ns schedule dump") == dry  # unchanged
    # an explicit mv overrides a schedule pin (as in minimega)
    assert shell.run(f"ns schedule mv pinned {free}") == ""
    assert f"pinned | {free}" in shell.run("ns schedule dump")
    # mv with an unknown VM or host: minimega's texts, nothing moved
    assert shell.run("ns schedule mv nope node1") == "E: reassign nope: vm not found\n"
    assert shell.run("ns schedule mv pinned node9") == "E: new dst host is not in namespace\n"
    assert shell.run("ns schedule") == ""
    info = shell.run(".annotate true .columns name vm info")
    assert " ".join(info.split()).count(f"{free} | pinned") == 1, info
    # capacity: a VM larger than any host is refused with the reason, queue untouched
    shell.run("vm config memory 900000")
    shell.run("vm launch kvm huge")
    out = shell.run("ns schedule dry-run")
    assert out.startswith("E: ") and "huge" in out, out
    assert "huge" in shell.run("ns queue")
    shell.run("ns flush")
    # the refused schedule did not poison the namespace: a later launch works
    shell.run("clear vm config memory")
    shell.run("vm launch kvm later")
    assert shell.run("ns schedule") == ""
    info = shell.run(".columns name,state vm info")
    assert "later" in info and "BUILDING" in info, info
    shell.reset()


def test_namespaces_are_separate_and_clear_removes_everything(three):
    shell = Shell(three)
    shell.reset()
    for ns in ("red", "blue"):  # the same names in two namespaces, pinned to one host
        shell.run(f"namespace {ns} vm config schedule node2")
        shell.run(f"namespace {ns} vm launch kvm web[1-2]")
    info = dvms_json("vm", "info", "--all", sock=three["node1"])
    rows = sorted((v["namespace"], v["name"], v["host"]) for v in info["vms"])
    assert rows == [(ns, f"web{i}", "node2") for ns in ("blue", "red") for i in (1, 2)]

    # commands act only on their namespace; vm kill from a node hosting neither VM
    out = call(three["node3"], "ns", {"words": ["namespace", "red", "vm", "kill", "web[1-2]"]})
    assert out["ok"], out
    red = shell.run("namespace red .columns name,state vm info", node="node1")
    blue = shell.run("namespace blue .columns name,state vm info", node="node3")
    assert red.split() == ["name", "|", "state", "web1", "|", "QUIT", "web2", "|", "QUIT"]
    assert blue.split() == ["name", "|", "state", "web1", "|", "BUILDING", "web2", "|", "BUILDING"]

    # vm migrate, sent to a node that hosts neither end
    shell.run("namespace blue vm start web1", node="node3")
    assert shell.run("namespace blue vm migrate web1 node3", node="node1") == ""
    where = shell.run("namespace blue .annotate true .columns name vm info", node="node2")
    assert "node3 | web1" in where, where

    # a bridge, then clear namespace: VMs, bridges and the record are gone everywhere
    assert shell.run("namespace blue ns bridge br0 vxlan", node="node2") == ""
    assert all(call(s, "status")["bridges"] == ["blue/br0"] for s in three.values())
    shell.run("clear namespace blue", node="node1")
    assert all(call(s, "status")["bridges"] == [] for s in three.values())
    info = dvms_json("vm", "info", "--all", sock=three["node2"])
    assert {v["namespace"] for v in info["vms"]} == {"red"}
    listed = shell.run(".columns namespace namespace", node="node3")
    assert "blue" not in listed and "red" in listed, listed
    shell.reset()
    assert dvms_json("vm", "info", "--all", sock=three["node3"])["vms"] == []


def test_ns_run_gathers_from_every_host_and_follows_minimega_refusals(three):
    shell = Shell(three)
    shell.reset()
    shell.run("namespace r")
    shell.run("vm config coschedule 0")
    shell.run("vm launch kvm x[1-3]")
    out = shell.run(".columns name ns run vm info")
    assert [line for line in out.splitlines() if line.endswith(":")] == [
        "node1:",
        "node2:",
        "node3:",
    ]
    assert sorted(w for w in out.split() if w.startswith("x")) == ["x1", "x2", "x3"]
    assert shell.run("ns run ns run vm info") == "E: cannot run `ns run vm info` using `ns run`\n"
    shell.reset()


VJOB = """
name = "web"
namespace = "web"

[[vms]]
name = "fe[1-5]"
memory = 512
coschedule = 1

[[vms]]
name = "db[1-3]"
memory = 1024

[[constraints]]
kind = "spread"
vms = "db[1-3]"
"""


def _check_web(vms: list[dict]) -> None:
    hosts = {v["name"]: v["host"] for v in vms if v["namespace"] == "web"}
    assert sorted(hosts) == sorted([f"fe{i}" for i in range(1, 6)] + ["db1", "db2", "db3"])
    assert len({hosts[f"db{i}"] for i in (1, 2, 3)}) == 3, hosts
    for i in range(1, 6):  # coschedule 1: at most one other VM on its host
        others = [n for n, h in hosts.items() if h == hosts[f"fe{i}"] and n != f"fe{i}"]
        assert len(others) <= 1, hosts


BIG = """
name = "big"
namespace = "big"

[[vms]]
name = "w[1-120]"
memory = 64

[[vms]]
name = "db[1-3]"
memory = 64

[[constraints]]
kind = "spread"
vms = "db[1-3]"
"""


def test_submit_on_five_and_kill_9_of_the_entry_node(five, tmp_path):
    d, socks = five
    job = tmp_path / "web.toml"
    job.write_text(VJOB)
    res = dvms_json("submit", str(job), sock=socks["node4"])
    assert res["ok"], res
    _check_web(dvms_json("vm", "info", "--all", sock=socks["node1"])["vms"])
    listed = dvms_json("vjob", "list", sock=socks["node2"])
    assert [(v["name"], v["state"], v["placed"]) for v in listed["vjobs"]] == [("web", "done", 8)]
    assert listed["unreachable"] == [] and listed["truncated"] is False
    dvms("vm", "kill", "fe[1-5],db[1-3]", "--namespace", "web", sock=socks["node5"])

    # accepted (journaled, in the DHT), then the entry node is killed while the 123 VMs
    # are being placed (or just after)
    job.write_text(BIG)
    acc = dvms_json("submit", "--no-wait", str(job), sock=socks["node3"])
    pid = json.loads((d / "node3" / "node.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    out = dvms("--json", "vjob", "show", "--wait", acc["id"], sock=socks["node1"], check=False)
    rec = json.loads(out.stdout)
    assert rec["state"] == "done", (rec["reason"], rec["history"])
    print(f"vjob done {time.monotonic() - t0:.2f} s after kill -9: {rec['history']}")
    placed = {p["name"]: p["host"] for p in rec["placed"]}
    assert len(placed) == 123 == len(rec["placed"])
    db_hosts = [placed[f"db{i}"] for i in (1, 2, 3)]
    assert len(set(db_hosts)) == 3, db_hosts
    # every VM placed on a live host runs there, once; node3's went down with it
    info = dvms_json("vm", "info", "--namespace", "big", sock=socks["node2"])
    running = [(v["name"], v["host"]) for v in info["vms"]]
    assert len(running) == len(set(n for n, _ in running))  # no VM twice
    assert set(running) == {(n, h) for n, h in placed.items() if h != "node3"}
    with pytest.raises(ControlError, match="no such vjob"):
        call(socks["node1"], "vjob_show", {"id": "0123456789abcdef"})


def test_the_cli_speaks_minimega_flags_vm_verbs_and_scripts(three, tmp_path):
    shell = Shell(three)
    shell.reset()
    sock = three["node2"]
    dvms("namespace", "cli", sock=sock)
    dvms("vm", "launch", "kvm", "c[1-2]", sock=sock)
    out = dvms(".columns", "name,state", "vm", "info", sock=sock).stdout  # minimega flags
    assert out.split() == ["name", "|", "state", "c1", "|", "BUILDING", "c2", "|", "BUILDING"]
    dvms("vm", "start", "all", sock=sock)
    dvms("vm", "kill", "c1", sock=sock)  # minimega's kill: QUIT until flushed
    out = dvms(".columns", "name,state", "vm", "info", sock=sock).stdout
    assert out.split() == ["name", "|", "state", "c1", "|", "QUIT", "c2", "|", "RUNNING"]
    everywhere = dvms_json("vm", "info", "--all", sock=sock)["vms"]
    assert sorted((v["name"], v["state"]) for v in everywhere) == [
        ("c1", "SHUTOFF"),
        ("c2", "RUNNING"),
    ]
    script = tmp_path / "flush.mm"
    script.write_text("# minimega script\nvm flush\n\n.columns name vm info\nvm kill nope\n")
    out = dvms("script", "--echo", str(script), sock=sock, check=False)
    assert out.returncode == 1  # one command was refused; the others ran
    assert out.stdout.splitlines() == [
        "## vm flush",
        "## .columns name vm info",
        "name",
        "c2",
        "## vm kill nope",
        "E: vm not found: nope",
    ]
    shell.reset()


def test_the_active_namespace_belongs_to_the_client_not_the_node(three, monkeypatch):
    a, b = Shell(three), Shell(three)
    a.reset()
    a.run("namespace p1", node="node1")
    assert a.namespace == "p1"
    a.run("vm launch kvm x1", node="node1")
    # b talks to the very node a switched on, and is still in minimega's default
    assert "x1" not in b.run("vm info", node="node1")
    assert b.namespace == "minimega"
    assert "x1" in a.run("vm info", node="node2")

    # the CLI's client is the shell: DVMS_NAMESPACE, and the export line to keep one
    monkeypatch.setenv("DVMS_NAMESPACE", "p1")
    assert "x1" in dvms("vm", "info", sock=three["node3"]).stdout
    monkeypatch.delenv("DVMS_NAMESPACE")
    assert "x1" not in dvms("vm", "info", sock=three["node3"]).stdout
    switched = dvms("namespace", "p1", sock=three["node3"])
    assert "export DVMS_NAMESPACE=p1" in switched.stderr
    assert "x1" not in dvms("vm", "info", sock=three["node3"]).stdout  # the node kept none
    monkeypatch.setenv("DVMS_NAMESPACE", "no/slash")
    bad = dvms("vm", "info", sock=three["node3"], check=False)
    assert bad.returncode == 1 and "DVMS_NAMESPACE" in bad.stderr
    monkeypatch.delenv("DVMS_NAMESPACE")
    a.run("clear namespace p1")


def test_submit_dry_run_plans_over_the_hosts_and_creates_nothing(three, tmp_path):
    fits = tmp_path / "fits.toml"
    fits.write_text(
        'name = "dry"\nnamespace = "dry"\n[[vms]]\nname = "d[1-3]"\nvcpus = 2\n'
        '[[constraints]]\nkind = "spread"\nvms = "d[1-3]"\n'
    )
    plan = dvms_json("submit", "--dry-run", str(fits), sock=three["node2"])
    assert plan["status"] == "placeable"
    assert sorted(plan["placement"].values()) == ["node1", "node2", "node3"]
    everything = dvms_json("vm", "info", "--all", sock=three["node1"])["vms"]
    assert not [v for v in everything if v["namespace"] == "dry"]  # nothing created

    wide = tmp_path / "wide.toml"
    wide.write_text(fits.read_text().replace("d[1-3]", "d[1-5]"))
    out = dvms("submit", "--dry-run", str(wide), sock=three["node2"], check=False)
    assert out.returncode == 1
    assert "spread of 5 VMs needs 5 hosts, 3 online" in out.stdout
