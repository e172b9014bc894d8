"""End to end on real daemons: /metrics, /healthz, /readyz and `dvms events`.

On `dvms cluster up --nodes 4` a vjob is launched and a `dvms debug load` overload of
node1 is relieved by a migration (the scenario of test_overload.py, in a namespace).
Then every node's /metrics, parsed with prometheus_client's own parser, must show the
launch attempts, the overload event, the partition, the migration and the violation,
in counts that match `partitions --all`; `dvms events --follow` (of node1, and of every
node with `--all`) must have printed the overload within a second of the node recording
it; each partition's leader logged its outcome line in its node.log; and once the
namespace is cleared every gauge reads its idle value. No label may carry a VM name.

A lone node whose seed is not up yet answers /readyz 503, and 200 once it has joined.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dvms.wire.keys import generate_key, write_key
from tests.e2e.test_e2e_cluster import dvms, dvms_json

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")

NS = "obs"
BASE = f"""
name = "base"
namespace = "{NS}"

[[vms]]
name = "hot[1-2]"
vcpus = 4
memory = 1024
schedule = "node1"

[[vms]]
name = "lone1"
memory = 512
coschedule = 0
"""

MORE = f"""
name = "more"
namespace = "{NS}"

[[vms]]
name = "hot3"
vcpus = 4
memory = 1024
schedule = "node1"

[[vms]]
name = "db[1-2]"
memory = 512
"""
VM_NAMES = {"hot1", "hot2", "hot3", "lone1", "db1", "db2"}
#: Synthetic load per hot VM, CPUs: three on node1's 8 CPUs make 9 > 8.
LOAD = 3.0
RELIEF_TIMEOUT_S = 30.0
#: Gauges and the value they must read when no VM runs and nothing is overloaded.
IDLE = {
    "dvms_violation_active": 0.0,
    "dvms_partitions_active": 0.0,
    "dvms_partition_member": 0.0,
    "dvms_pending_vms": 0.0,
    "dvms_host_cpu_committed_cores": 0.0,
    "dvms_host_memory_committed_bytes": 0.0,
    "dvms_host_cpu_demand_cores": 0.0,
    "dvms_host_migrations_in_flight": 0.0,
    "dvms_vms": 0.0,
}


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, every sample of the exposition at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))


def status_of(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Follower:
    """`dvms events --follow --json [--all]` in the background; each line with its arrival
    time."""

    def __init__(self, sock: str, *extra: str) -> None:
        cmd = [sys.executable, "-m", "dvms", "--socket", sock, "--json", "events", "--follow"]
        cmd += extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, dict]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), json.loads(line)))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cluster(tmp_path):
    d = tmp_path / "c"
    rows = dvms_json("cluster", "up", "--nodes", "4", "--dir", str(d))["nodes"]
    try:
        yield d, rows
    finally:
        if (d / "cluster.json").exists():
            dvms("cluster", "down", "--dir", str(d), check=False)


def relieve(d: Path, socks: dict[str, str]) -> list[dict]:
    """node1 overloaded by synthetic load until a partition moves a hot VM away."""
    for vm in ("hot1", "hot2", "hot3"):
        dvms("debug", "load", "--dir", str(d), vm, str(LOAD))
    deadline = time.monotonic() + RELIEF_TIMEOUT_S
    while True:
        vms = dvms_json("vm", "info", "--namespace", NS, sock=socks["node2"])["vms"]
        hosts = dvms_json("debug", "loads", "--dir", str(d))["hosts"]
        moved = [v for v in vms if v["name"].startswith("hot") and v["host"] != "node1"]
        if moved and not any(h["overloaded"] for h in hosts):
            return vms
        assert time.monotonic() < deadline, f"not relieved: {vms} {hosts}"
        time.sleep(0.5)


def test_metrics_and_events_of_a_relieved_overload(cluster, tmp_path):
    d, rows = cluster
    socks = {r["name"]: r["socket"] for r in rows}
    urls = {r["name"]: r["metrics"] for r in rows}
    status = dvms_json("cluster", "status", "--dir", str(d))["nodes"]
    assert {r["name"]: r["metrics"] for r in status} == urls
    assert all(u.startswith("http://127.0.0.1:") for u in urls.values()), urls
    for url in urls.values():
        assert status_of(url.replace("/metrics", "/readyz"))[0] == 200
        assert status_of(url.replace("/metrics", "/healthz"))[0] == 200
        assert status_of(url.replace("/metrics", "/nothing"))[0] == 404

    for name, text, entry in (("base", BASE, "node2"), ("more", MORE, "node3")):
        job = tmp_path / f"{name}.toml"
        job.write_text(text)
        assert dvms_json("submit", str(job), sock=socks[entry])["ok"]

    follower = Follower(socks["node1"])
    gatherer = Follower(socks["node4"], "--all")  # polls every node through node4
    try:
        time.sleep(1.0)  # the followers are listening
        relieve(d, socks)
        time.sleep(1.5)  # the followers' last polls, the sampler's overload edge
    finally:
        follower.stop()
        gatherer.stop()

    # events --follow printed node1's overload within a second of node1 recording it,
    # on node1 itself (long-poll) and gathered through node4 (--all: polls)
    for f in (follower, gatherer):
        overloads = [(seen, e) for seen, e in f.lines if e["type"] == "overload"]
        assert overloads, f.lines
        seen, event = overloads[0]
        assert event["host"] == "node1" and event["time"].endswith("Z"), event
        assert seen - datetime.fromisoformat(event["time"]).timestamp() < 1.0, (seen, event)
        types = [e["type"] for _, e in f.lines]
        assert "overload-ended" in types, types
    every = dvms_json("events", "--all", sock=socks["node4"])["events"]
    assert {e["host"] for e in every} == set(socks), every
    assert {"vjob", "partition", "migration", "member"} <= {e["type"] for e in every}

    samples = {n: scrape(u) for n, u in urls.items()}
    parts = dvms_json("partitions", "--all", sock=socks["node2"])["partitions"]
    ended = [p for p in parts if p["state"] == "ended"]

    def cluster_total(name: str, **labels: str) -> float:
        return sum(total(s, name, **labels) for s in samples.values())

    # two launches (base, more) scheduled at their entry nodes; one overload raised
    assert cluster_total("dvms_schedule_attempts_total", result="scheduled") == 2
    assert total(samples["node2"], "dvms_schedule_attempts_total", result="scheduled") == 1
    assert cluster_total("dvms_scheduling_attempt_duration_seconds_count") == 2
    assert cluster_total("dvms_vjob_launch_duration_seconds_count") == 2
    assert total(samples["node1"], "dvms_events_total", type="overload") >= 1
    # partitions, outcomes and migrations as `partitions --all` reports them
    by_outcome: dict[str, int] = defaultdict(int)
    for p in ended:
        by_outcome[p["outcome"]] += 1
    assert cluster_total("dvms_partition_outcome_total", outcome="solved") == by_outcome["solved"]
    assert cluster_total("dvms_partition_outcome_total") == len(ended), parts
    assert cluster_total("dvms_partition_size_count") == len(ended)
    migrated = sum(p["migrations"] for p in ended if p["outcome"] == "solved")
    assert migrated >= 1
    assert cluster_total("dvms_migrations_total", result="ok") == migrated
    assert total(samples["node1"], "dvms_migrations_total", result="ok") == migrated
    assert cluster_total("dvms_migration_duration_seconds_count") == migrated
    assert cluster_total("dvms_solver_duration_seconds_count") >= len(ended)
    # the leader of each ended partition logged one INFO line with its outcome, events,
    # members, actions and migrations (`cluster up` runs the daemons at info)
    logs = {n: (d / n / "node.log").read_text() for n in socks}
    for p in ended:
        line = (
            f" INFO {p['leader']} dvms.runtime.services.observe: partition {p['pid']} "
            f"{p['outcome']}: events {','.join(p['events']) or '-'}, members "
            f"{','.join(p['members'])}, actions {p['actions']}, migrations {p['migrations']}, "
        )
        assert sum(text.count(f"partition {p['pid']} ") for text in logs.values()) == 1, p
        assert line in logs[p["leader"]], (line, logs[p["leader"]])
    for n, text in logs.items():  # info, not a flood: a few lines per node and partition
        assert len(text.splitlines()) <= 20 + 5 * len(parts), (n, text)
    # node1's violation: ended, timed, and no longer active
    assert total(samples["node1"], "dvms_violation_duration_seconds_count") >= 1
    assert total(samples["node1"], "dvms_violation_duration_seconds_sum") > 0
    assert cluster_total("dvms_violation_active") == 0
    # host gauges while the VMs run: node1 still holds two hot VMs
    assert total(samples["node1"], "dvms_vms", state="running") >= 2
    assert total(samples["node1"], "dvms_host_cpu_demand_cores") == 2 * LOAD
    assert total(samples["node1"], "dvms_host_cpu_capacity_cores") == 8
    assert cluster_total("dvms_vms", state="running") == len(VM_NAMES)
    assert total(samples["node1"], "dvms_overlay_routing_table_peers") == 3
    assert total(samples["node1"], "dvms_overlay_joined") == 1
    for s in samples.values():
        labels = {v for series in s.values() for key in series for _, v in key}
        assert not labels & VM_NAMES, labels & VM_NAMES
        assert NS not in labels

    # clear the namespace and the load: every gauge back to idle on every node
    for vm in ("hot1", "hot2", "hot3"):
        dvms("debug", "load", "--dir", str(d), vm, "0")
    out = dvms("clear", "namespace", NS, sock=socks["node1"], check=False)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while True:
        samples = {n: scrape(u) for n, u in urls.items()}
        busy = {
            (n, g): total(s, g)
            for n, s in samples.items()
            for g, idle in IDLE.items()
            if total(s, g) != idle
        }
        if not busy:
            break
        assert time.monotonic() < deadline, f"gauges not idle: {busy}"
        time.sleep(0.5)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(tmp_path: Path, name: str, listen: str, seed: str | None) -> subprocess.Popen:
    state = tmp_path / name
    state.mkdir(mode=0o700)
    cmd = [sys.executable, "-m", "dvms", "node", "run", "--listen", listen, "--hostname", name,
           "--key", str(tmp_path / "cluster.key"), "--state-dir", str(state),
           "--profile", "local", "--metrics", "127.0.0.1:0", "--log-level", "warning"]  # fmt: skip
    if seed:
        cmd += ["--seed", seed]
    log = open(state / "node.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def metrics_url(state: Path) -> str | None:
    try:
        return json.loads((state / "node.json").read_text()).get("metrics")
    except (OSError, ValueError):
        return None


def test_readyz_fails_before_the_join_and_passes_after(tmp_path):
    write_key(tmp_path / "cluster.key", generate_key())
    port = free_udp_port()
    procs = [start_node(tmp_path, "late", "127.0.0.1:0", f"127.0.0.1:{port}")]
    try:
        url = wait_for(lambda: metrics_url(tmp_path / "late"), 30, "late's node.json")
        base = url.removesuffix("/metrics")
        code, text = status_of(base + "/readyz")
        assert code == 503 and "not joined" in text, (code, text)
        assert status_of(base + "/healthz")[0] == 200  # alive all the same
        scraped = scrape(url)
        assert total(scraped, "dvms_overlay_joined") == 0
        procs.append(start_node(tmp_path, "seed", f"127.0.0.1:{port}", None))
        wait_for(lambda: status_of(base + "/readyz")[0] == 200, 30, "late to join")
        assert total(scrape(url), "dvms_overlay_joined") == 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
