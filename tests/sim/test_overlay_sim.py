"""Whole-overlay simulations: determinism, the wire path, churn, the CLI."""

import json
import subprocess
import sys

from dvms.overlay.config import KademliaConfig
from dvms.sim.overlay import OverlayScenario, run_overlay


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "wall_s"}


def test_same_seed_same_result_different_seed_different_result():
    scn = OverlayScenario(
        nodes=150, seed=7, loss=0.05, jitter=0.02, churn=0.1, duration_s=120, lookups=60
    )
    a, b = run_overlay(scn), run_overlay(scn)
    assert strip(a) == strip(b)
    c = run_overlay(
        OverlayScenario(
            nodes=150, seed=8, loss=0.05, jitter=0.02, churn=0.1, duration_s=120, lookups=60
        )
    )
    assert strip(c) != strip(a)


def test_wire_path_gives_the_same_run_as_direct_objects():
    """Encoding, signing and decoding every message must not change behaviour."""
    kw = dict(nodes=60, seed=3, latency="const:10", duration_s=60, lookups=30)
    direct = run_overlay(OverlayScenario(**kw))
    wired = run_overlay(OverlayScenario(**kw, wire=True))
    assert strip(direct) == strip(wired)
    assert direct["lookup_exact_ratio"] == 1.0


def test_lookups_stay_exact_under_churn_and_loss():
    r = run_overlay(
        OverlayScenario(
            nodes=300,
            seed=5,
            loss=0.05,
            churn=0.1,
            duration_s=200,
            lookups=150,
            kademlia=KademliaConfig(k=10),
        )
    )
    assert r["churn_events"] == 30
    # A lookup whose origin crashes mid-way is aborted, not counted.
    assert r["lookups"] + r["lookups_aborted"] == 150 and r["lookups_unfinished"] == 0
    assert r["lookup_exact_ratio"] >= 0.97, r


def test_cli_prints_the_required_json_keys(tmp_path):
    matrix = tmp_path / "m.txt"
    matrix.write_text("0 10 20\n10 0 15\n20 15 0\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvms",
            "sim",
            "overlay",
            "--nodes",
            "40",
            "--seed",
            "2",
            "--latency-matrix",
            str(matrix),
            "--duration",
            "40",
            "--lookups",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    r = json.loads(out.stdout)
    for key in (
        "nodes",
        "lookups",
        "lookup_exact_ratio",
        "median_hops",
        "vivaldi_median_rel_error",
        "messages",
        "wall_s",
        "virtual_s",
    ):
        assert key in r
    assert r["nodes"] == 40 and r["lookups"] == 20


def test_cli_names_a_bad_matrix(tmp_path):
    matrix = tmp_path / "m.csv"
    matrix.write_text("0,1\n1,x\n")
    out = subprocess.run(
        [sys.executable, "-m", "dvms", "sim", "overlay", "--latency-matrix", str(matrix)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert (
        "m.csv:2, column 2" in out.stderr and "'x'" in out.stderr and "Traceback" not in out.stderr
    )
