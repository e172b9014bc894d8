"""A local cluster: N ``dvms node run`` processes on 127.0.0.1 under one directory.

::

    DIR/cluster.key          one cluster key for all nodes
    DIR/cluster.json         what `up` started: name, pid, socket, address, state dir,
                             metrics URL (each node serves /metrics on a free port)
    DIR/node.toml            settings every node reads (``overlay_k``), if any
    DIR/nodeI/               node I's state dir: dvms.sock, node.json, host.xml, node.log
    DIR/logs/nodeI.log       node I's log once the cluster is down (``down`` keeps them)

``up`` starts node1 first (the seed), then the others through it, and returns once every
node sees all the others in its routing table and knows their host names. With a small
bucket size (``overlay_k``: a few daemons then behave as a large cluster does, no
routing table holds everyone) it returns once every node's crawl of the overlay
(``members``) finds all the others alive and named. Daemons run
in their own session, so they outlive the command. ``down`` stops them by the pids in
cluster.json (SIGTERM, then SIGKILL after a grace period), checking first that each pid
still runs ``dvms node run`` with that state dir (pids are reused), and removes what
``up`` created.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dvms.overlay.messages import MAX_CONTACTS
from dvms.runtime.client import ControlError, call
from dvms.wire.keys import generate_key, write_key

__all__ = [
    "ClusterError",
    "LocalClusterConfig",
    "cluster_down",
    "cluster_status",
    "cluster_up",
    "node_sockets",
    "restart_node",
]

MANIFEST = "cluster.json"
#: Settings every node reads (``--config``), written by ``up`` when it has any.
NODE_TOML = "node.toml"
#: Where ``down`` keeps the node logs, inside the cluster directory.
LOGS = "logs"
#: With ``cprofile=True`` each daemon runs under cProfile and writes ``DIR/nodeI/`` this
#: file when it exits (``cluster down``); ``down`` leaves such a node's directory.
PROFILE = "profile.out"


class ClusterError(Exception):
    """A local cluster could not be started, read or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class LocalClusterConfig:
    """Timing of ``dvms cluster up|status|down``, wall-clock seconds (ours)."""

    #: ``up`` waits this long for each step: a node to start, a node to see all the
    #: others (``--timeout``).
    start_timeout_s: float = 60.0
    #: Poll period while ``up`` waits.
    poll_s: float = 0.1
    #: Timeout of one control-socket query of a node (``peers``, ``status``).
    query_timeout_s: float = 5.0
    #: ``down`` sends SIGTERM, then SIGKILL to daemons still running after this long.
    stop_grace_s: float = 10.0
    #: Poll period while ``down`` waits for the daemons to exit.
    stop_poll_s: float = 0.05


def _start(
    d: Path, name: str, seed: str | None, extra: list[str], cprofile: bool = False
) -> subprocess.Popen:
    state = d / name
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd = [sys.executable]
    if cprofile:  # the main thread only (solver threads are not seen); written on exit
        cmd += ["-m", "cProfile", "-o", str(state / PROFILE)]
    cmd += ["-m", "dvms", "node", "run", "--listen", "127.0.0.1:0"]
    cmd += ["--key", str(d / "cluster.key"), "--state-dir", str(state)]
    cmd += ["--hostname", name, "--log-level", "info", *extra]
    if seed:
        cmd += ["--seed", seed]
    with open(state / "node.log", "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(
    pred: Callable[..., Any],
    cfg: LocalClusterConfig,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
) -> Any:
    """Poll ``pred`` until it returns something true; fail at once if ``proc`` exits."""
    deadline = time.monotonic() + cfg.start_timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (ControlError, OSError, ValueError) as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{what}: the daemon exited with code {proc.returncode}")
        time.sleep(cfg.poll_s)
    raise ClusterError(f"timed out waiting for {what} (last: {last})")


def _log_tail(state: Path, lines: int = 3) -> str:
    try:
        text = (state / "node.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def cluster_up(
    d: Path,
    nodes: int,
    *,
    hypervisor: str = "test",
    profile: str = "local",
    recruitment: str | None = None,
    host_cpus: int | None = None,
    host_memory_mib: int | None = None,
    cprofile: bool = False,
    metrics: bool = True,
    overlay_k: int | None = None,
    config: LocalClusterConfig | None = None,
    config_file: str | None = None,
) -> list[dict[str, Any]]:
    """Start ``nodes`` daemons under ``d``; returns the manifest rows. ``host_cpus`` and
    ``host_memory_mib`` (MiB) size every test host (default: the daemon's, 8 and 16384).
    With ``metrics`` each node serves ``/metrics`` on a free 127.0.0.1 port (its row's
    ``metrics`` URL); ``config_file``: a node TOML every daemon reads (``--config``);
    ``overlay_k``: every node's bucket size (default the overlay's, 20), not with
    ``config_file`` (set ``[overlay] k`` there)."""
    cfg = config or LocalClusterConfig()
    if nodes < 1:
        raise ClusterError("--nodes must be at least 1")
    if host_cpus is not None and host_cpus < 1:
        raise ClusterError(f"--host-cpus must be at least 1, got {host_cpus}")
    if host_memory_mib is not None and host_memory_mib < 1:
        raise ClusterError(f"--host-memory must be at least 1 MiB, got {host_memory_mib}")
    if overlay_k is not None and not 1 <= overlay_k <= MAX_CONTACTS:
        raise ClusterError(f"--overlay-k must be in [1, {MAX_CONTACTS}], got {overlay_k}")
    if config_file is not None and overlay_k is not None:
        raise ClusterError("give the bucket size in the config file ([overlay] k), not both")
    if hypervisor != "test":
        raise ClusterError(f"hypervisor {hypervisor!r}: only 'test' (libvirt test:/// hosts)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ClusterError(f"--dir {d} exists and is not a directory") from None
    except OSError as exc:
        raise ClusterError(f"--dir {d}: cannot create it ({exc.strerror or exc})") from None
    if (d / MANIFEST).exists() and any(_alive(r) for r in _manifest(d)):
        raise ClusterError(f"a cluster is already running in {d} (dvms cluster down --dir {d})")
    write_key(d / "cluster.key", generate_key())
    extra = ["--profile", profile]
    if recruitment:
        extra += ["--recruitment", recruitment]
    if host_cpus is not None:
        extra += ["--host-cpus", str(host_cpus)]
    if host_memory_mib is not None:
        extra += ["--host-memory", str(host_memory_mib)]
    if metrics:
        extra += ["--metrics", "127.0.0.1:0"]
    if config_file is not None:
        extra += ["--config", str(Path(config_file).resolve())]
    if overlay_k is not None:
        (d / NODE_TOML).write_text(f"[overlay]\nk = {overlay_k}\n")
        extra += ["--config", str(d / NODE_TOML)]
    rows: list[dict[str, Any]] = []
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(d, "node1", None, extra, cprofile))
        seed = _wait(lambda: _node_json(d / "node1"), cfg, "node1 to start", procs[0])
        procs += [
            _start(d, f"node{i}", seed["address"], extra, cprofile) for i in range(2, nodes + 1)
        ]
        for i, p in enumerate(procs, 1):
            name = f"node{i}"
            info = _wait(lambda name=name: _node_json(d / name), cfg, f"{name} to start", p)
            rows.append(
                {
                    "extra": extra,
                    "name": name,
                    "pid": p.pid,
                    "address": info["address"],
                    "node_id": info["node_id"],
                    "socket": str(d / name / "dvms.sock"),
                    "state_dir": str(d / name),
                    "metrics": info.get("metrics", ""),
                }
            )
        (d / MANIFEST).write_text(json.dumps(rows, indent=2) + "\n")
        for r, p in zip(rows, procs, strict=True):
            check = _sees_all if overlay_k is None else _crawl_finds_all
            sees_all = partial(check, r["socket"], nodes, cfg.query_timeout_s)
            _wait(sees_all, cfg, f"{r['name']} to see all", p)
    except ClusterError as exc:
        failed = [f"node{i}" for i, p in enumerate(procs, 1) if p.poll() is not None]
        _kill_all(procs)
        if failed:
            tail = _log_tail(d / failed[0])
            raise ClusterError(f"{exc}; {failed[0]}/node.log: {tail}") from None
        raise
    except BaseException:
        _kill_all(procs)
        raise
    return rows


def restart_node(d: Path, name: str, config: LocalClusterConfig | None = None) -> dict[str, Any]:
    """Start node ``name`` of the cluster in ``d`` again (after it died or was killed),
    with its state dir and flags, through another node; returns its new manifest row."""
    cfg = config or LocalClusterConfig()
    rows = _manifest(d)
    row = next((r for r in rows if r["name"] == name), None)
    if row is None:
        raise ClusterError(f"no node {name} in {d}")
    if _alive(row):
        raise ClusterError(f"{name} (pid {row['pid']}) is still running")
    seed = next((r["address"] for r in rows if r["name"] != name and _alive(r)), None)
    (Path(row["state_dir"]) / "node.json").unlink(missing_ok=True)
    proc = _start(d, name, seed, list(row.get("extra", [])))
    info = _wait(lambda: _node_json(Path(row["state_dir"])), cfg, f"{name} to start", proc)
    row.update(pid=proc.pid, address=info["address"])
    (d / MANIFEST).write_text(json.dumps(rows, indent=2) + "\n")
    sees_all = partial(_sees_all, row["socket"], len(rows), cfg.query_timeout_s)
    _wait(sees_all, cfg, f"{name} to see all", proc)
    return row


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def _sees_all(sock: str, nodes: int, timeout: float) -> bool:
    """Every other node is in this node's routing table, and it knows their names."""
    peers = call(sock, "peers", timeout=timeout)
    return len(peers) >= nodes - 1 and all(p["name"] for p in peers)


def _crawl_finds_all(sock: str, nodes: int, timeout: float) -> bool:
    """This node's crawl finds every node alive and it knows their names."""
    members = call(sock, "members", timeout=timeout)["members"]
    return len(members) == nodes and all(m["state"] == "alive" and m["name"] for m in members)


def _node_json(state: Path) -> dict[str, Any] | None:
    path = state / "node.json"
    if not path.exists() or not (state / "dvms.sock").exists():
        return None
    return json.loads(path.read_text())


def _manifest(d: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster in {d} (no {MANIFEST})") from None
    except (json.JSONDecodeError, OSError) as exc:
        raise ClusterError(f"{d / MANIFEST}: {exc}") from None


def _alive(row: dict[str, Any]) -> bool:
    """The pid still runs *our* daemon (its command line names its state dir)."""
    try:
        cmdline = Path(f"/proc/{row['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"dvms" in b" ".join(cmdline) and row["state_dir"].encode() in cmdline


def node_sockets(d: Path) -> dict[str, str]:
    return {r["name"]: r["socket"] for r in _manifest(d)}


def cluster_status(d: Path, config: LocalClusterConfig | None = None) -> list[dict[str, Any]]:
    cfg = config or LocalClusterConfig()
    out = []
    for r in _manifest(d):
        row = {
            "name": r["name"],
            "pid": r["pid"],
            "address": r["address"],
            "socket": r["socket"],
            "metrics": r.get("metrics", ""),
        }
        if not _alive(r):
            out.append({**row, "state": "dead"})
            continue
        try:
            st = call(r["socket"], "status", timeout=cfg.query_timeout_s)
            out.append(
                {
                    **row,
                    "state": "up",
                    "peers": st["peers"],
                    "vms": st["vms"],
                    "partition": st["partition"],
                }
            )
        except ControlError as exc:
            out.append({**row, "state": f"not answering: {exc}"})
    return out


def cluster_down(d: Path, config: LocalClusterConfig | None = None) -> list[str]:
    """Stop every node of the cluster in ``d`` and remove its files; returns what it did."""
    cfg = config or LocalClusterConfig()
    grace = cfg.stop_grace_s
    rows = _manifest(d)
    done = []
    running = [r for r in rows if _alive(r)]
    for r in running:
        os.kill(r["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(r) for r in running) and time.monotonic() < deadline:
        time.sleep(cfg.stop_poll_s)
    for r in running:
        if _alive(r):
            os.kill(r["pid"], signal.SIGKILL)
            done.append(f"{r['name']} (pid {r['pid']}) killed after {grace:g} s")
        else:
            done.append(f"{r['name']} (pid {r['pid']}) stopped")
    logs = d / LOGS
    kept = False
    for r in rows:
        if r not in running:
            done.append(f"{r['name']} (pid {r['pid']}) was not running")
        state = Path(r["state_dir"])
        if (state / "node.log").exists():
            logs.mkdir(exist_ok=True)
            shutil.move(state / "node.log", logs / f"{r['name']}.log")
            kept = True
        if not (state / PROFILE).exists():
            shutil.rmtree(state, ignore_errors=True)
    (d / "cluster.key").unlink(missing_ok=True)
    (d / NODE_TOML).unlink(missing_ok=True)
    (d / MANIFEST).unlink(missing_ok=True)
    if kept:
        done.append(f"node logs kept in {logs}/ (NAME.log)")
    with contextlib.suppress(OSError):
        d.rmdir()  # only if empty: the user's own files stay
    return done
