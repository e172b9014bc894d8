"""Benchmark of file sharing: eight loopback daemons, a 256 MiB file added on one, the
seven others fetch it at once.

Two runs in the same cluster, each with its own random file of the same size:

- **single source** (the baseline, minimega's iomeshage way): every fetcher takes the
  whole file from the one node that added it, one chunk at a time
  (``file get --single-source``);
- **swarm**: every fetcher takes chunks from every node holding them (the adder and the
  other fetchers), several in flight per peer, rarest first.

Every daemon's uploads are limited to ``--upload-mib-s`` (``[files] upload_bytes_s``):
on one machine loopback is not a network, so the limit models each host's link (0:
unlimited, then the machine's CPU is the only limit and both runs share it). Then a
third run checks resume: a fetcher is killed (SIGKILL) mid-transfer and started again;
it must not fetch again any chunk its bitmap held.

Printed: wall time of each run (first request to the last copy complete), the speedup,
chunks verified, and two counts that must be 0: chunks of the final copies that differ
from the original (``bad_chunks_accepted``, every copy is hashed chunk by chunk), and
chunks held before the kill but fetched again after the restart
(``resumed_chunks_refetched``).

Usage: ``python bench/files.py [--json] [--size-mib 256] [--nodes 8] [--upload-mib-s 16]
[--chunk-mib 4] [--dir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dvms.runtime.client import call
from dvms.runtime.localcluster import cluster_down, cluster_up, restart_node

MIB = 1024 * 1024
TIMEOUT_S = 1800.0


def _config(upload_mib_s: float, chunk_mib: int) -> str:
    return (
        "[files]\n"
        f"chunk_bytes = {chunk_mib * MIB}\n"
        "reserve_bytes = 0\n"
        f"upload_bytes_s = {upload_mib_s * MIB:.1f}\n"
    )


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


def _chunk_hashes(path: str, chunk: int) -> list[bytes]:
    out = []
    with open(path, "rb") as f:
        while block := f.read(chunk):
            out.append(hashlib.sha256(block).digest())
    return out


def _fetch_all(rows: list[dict[str, Any]], ref: str, single: bool) -> tuple[float, list[Any]]:
    """Every node but the first fetches ``ref`` at once; (seconds, results)."""
    results: list[Any] = [None] * len(rows)

    def get(i: int) -> None:
        body = {"ref": ref, "wait": True, "timeout": TIMEOUT_S, "single_source": single}
        results[i] = call(rows[i]["socket"], "file_get", body, timeout=TIMEOUT_S + 60)

    threads = [threading.Thread(target=get, args=(i,)) for i in range(1, len(rows))]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t0
    missing = [rows[i]["name"] for i in range(1, len(rows)) if results[i] is None]
    if missing:
        raise SystemExit(f"fetch failed on {', '.join(missing)} (see their node.log)")
    return elapsed, results[1:]


def _bad_chunks(results: list[Any], original: list[bytes], chunk: int) -> int:
    bad = 0
    for r in results:
        copy = _chunk_hashes(r["path"], chunk)
        bad += sum(1 for a, b in zip(copy, original, strict=False) if a != b)
        bad += abs(len(copy) - len(original))
    return bad


def _resume(d: Path, rows: list[dict[str, Any]], src: Path, chunk: int) -> dict[str, Any]:
    """A fetcher killed at a third of a transfer and restarted: chunks fetched again."""
    added = call(rows[0]["socket"], "file_add", {"path": str(src), "name": "bench/resume"})
    root, victim = added["root"], rows[-1]
    call(victim["socket"], "file_get", {"ref": root, "wait": False})
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        st = call(victim["socket"], "file_status")["transfers"]
        t = next((t for t in st if t["root"] == root), None)
        if t is not None and (t["chunks_done"] >= added["chunks"] // 3 or t["state"] == "done"):
            break
        time.sleep(0.01)
    os.kill(victim["pid"], signal.SIGKILL)
    time.sleep(0.2)
    bits = Path(victim["state_dir"]) / "files" / "partial" / f"{root}.bits"
    held = sum(bin(b).count("1") for b in bits.read_bytes()) if bits.exists() else added["chunks"]
    victim.update(restart_node(d, victim["name"]))
    got = call(victim["socket"], "file_get", {"ref": root, "wait": True, "timeout": TIMEOUT_S})
    refetched = max(0, held - got["resumed"]) + max(0, got["fetched"] - (got["chunks"] - held))
    ok = _chunk_hashes(got["path"], chunk) == _chunk_hashes(str(src), chunk)
    return {"held_at_kill": held, "refetched": refetched, "resumed_ok": ok}


def run(args: argparse.Namespace) -> dict[str, Any]:
    d = Path(args.dir or tempfile.mkdtemp(prefix="dvms-bench-files-"))
    size, chunk = args.size_mib * MIB, args.chunk_mib * MIB
    work = d / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "node.toml").write_text(_config(args.upload_mib_s, args.chunk_mib))
    for name in ("single", "swarm"):
        _random_file(work / name, size)
    _random_file(work / "resume", max(size // 4, chunk * 8))
    cdir = d / "cluster"
    rows = cluster_up(cdir, args.nodes, config_file=str(work / "node.toml"))
    try:
        seed = rows[0]["socket"]
        call(seed, "file_add", {"path": str(work / "single"), "name": "bench/single"})
        single_s, _ = _fetch_all(rows, "bench/single", single=True)
        call(seed, "file_add", {"path": str(work / "swarm"), "name": "bench/swarm"})
        before = [call(r["socket"], "file_status")["served_chunks"] for r in rows]
        swarm_s, results = _fetch_all(rows, "bench/swarm", single=False)
        after = [call(r["socket"], "file_status")["served_chunks"] for r in rows]
        served = [b - a for a, b in zip(before, after, strict=True)]
        bad = _bad_chunks(results, _chunk_hashes(str(work / "swarm"), chunk), chunk)
        resume = _resume(cdir, rows, work / "resume", chunk)
    finally:
        if not args.keep:
            cluster_down(cdir)
            shutil.rmtree(d, ignore_errors=True)
    return {
        "peers": args.nodes - 1,
        "size_mib": args.size_mib,
        "chunk_mib": args.chunk_mib,
        "upload_mib_s": args.upload_mib_s,
        "swarm_s": round(swarm_s, 2),
        "single_source_s": round(single_s, 2),
        "speedup": round(single_s / swarm_s, 2),
        "target_speedup": 3.0,
        "chunks_verified": sum(r["fetched"] for r in results),
        "swarm_peers_used": [r["peers"] for r in results],
        "swarm_chunks_served_by_node": served,
        "bad_chunks_accepted": bad,
        "resumed_chunks_refetched": resume["refetched"],
        "resume_held_at_kill": resume["held_at_kill"],
        "resume_copy_ok": resume["resumed_ok"],
        "machine": f"{os.cpu_count()} cpus",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--size-mib", type=int, default=256, help="file size, MiB (256)")
    p.add_argument("--nodes", type=int, default=8, help="daemons, one adds the file (8)")
    p.add_argument(
        "--upload-mib-s", type=float, default=16.0, help="each daemon's upload, MiB/s (16)"
    )
    p.add_argument("--chunk-mib", type=int, default=4, help="chunk size, MiB (4)")
    p.add_argument("--dir", help="work directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="leave the cluster up")
    args = p.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>26}  {v}")
    ok = out["bad_chunks_accepted"] == 0 and out["resumed_chunks_refetched"] == 0
    return 0 if ok and out["resume_copy_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
