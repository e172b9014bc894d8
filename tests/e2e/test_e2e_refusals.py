"""Every refusal of ``submit`` on real daemons says which VMs, which hosts and which rule,
in the words of the vjob file, as ``dvms solve`` does (the same explanation code): no
protocol jargon (laps, search-tree nodes) and no internal VM names."""

from __future__ import annotations

import pytest

from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

HOSTS = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def socks(tmp_path_factory):
    d = tmp_path_factory.mktemp("refusals") / "c"
    rows = dvms_json("cluster", "up", "--nodes", "3", "--dir", str(d), "--timeout", "90")["nodes"]
    yield [r["socket"] for r in rows]
    dvms("cluster", "down", "--dir", str(d), check=False)


CASES = {
    # vjob file body after [[vms]] -> what the refusal must say besides the VM names
    "huge": ('name = "huge1"\nmemory = 99999999\n', ["fail memory", "needs 99999999 MiB"], True),
    "cpus": ('name = "cpu1"\nvcpus = 9999\n', ["vcpus", "4096"], False),
    "pinned": ('name = "pin1"\nschedule = "nosuch"\n', ["schedule = 'nosuch'", "hosts:"], True),
    "spread": (
        'name = "sp[1-5]"\n[[constraints]]\nkind = "spread"\nvms = "sp[1-5]"\n',
        ["fail spread", "spread of 5 VMs needs 5 hosts, 3 online"],
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refusal_names_vms_hosts_and_rule(socks, tmp_path, case):
    body, says, names_hosts = CASES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(f'name = "{case}"\n[[vms]]\n{body}')
    out = dvms("submit", str(path), sock=socks[0], check=False)
    assert out.returncode == 1, out.stdout
    text = out.stderr
    vm = body.split('"')[1].split("[")[0]
    assert vm in text, text
    for words in says:
        assert words in text, text
    if names_hosts:
        assert all(h in text for h in HOSTS), text
    for jargon in ("lap", "searched", "#", "cpu_demand", "solution"):
        assert jargon not in text, text
    # and the cluster still places what fits
    ok = tmp_path / "ok.toml"
    ok.write_text(f'name = "ok-{case}"\n[[vms]]\nname = "ok-{case}"\n')
    dvms("submit", str(ok), sock=socks[-1])
    dvms("vm", "kill", "--all", f"ok-{case}", sock=socks[1])


def test_high_availability_is_accepted_and_protected(socks, tmp_path):
    """`ha = "restart"` in a vjob and `vm config ha restart` before `vm launch` are
    launched, and the host running each VM holds it under a lease (`vm info --all`: ha
    ok, generation 1); a VM without the policy shows none."""
    path = tmp_path / "ha.toml"
    path.write_text('name = "ha"\n[[vms]]\nname = "safe1"\nha = "restart"\nmemory = 256\n')
    dvms("submit", str(path), sock=socks[0])
    sock = socks[1]
    ns = ["namespace", "hans"]
    assert dvms_json(*ns, "vm", "config", "ha", "restart", sock=sock)["ok"]
    dvms(*ns, "vm", "launch", "kvm", "h1", sock=sock)
    assert dvms_json(*ns, "vm", "config", "ha", "off", sock=sock)["ok"]
    dvms(*ns, "vm", "launch", "kvm", "h2", sock=sock)
    rows = {v["name"]: v for v in dvms_json("vm", "info", "--all", sock=sock)["vms"]}
    for name in ("safe1", "h1"):
        assert (rows[name]["ha"], rows[name]["generation"]) == ("ok", 1), rows[name]
    assert (rows["h2"]["ha"], rows["h2"]["generation"]) == ("", 0), rows["h2"]
    dvms("vm", "kill", "--all", "safe1", sock=socks[0])
    dvms("clear", "namespace", "hans", sock=sock)
