"""``bench/fuzz.py`` run small against a live daemon: malformed datagrams of every kind
and malformed control requests; no crash, every datagram read and counted, every
control request answered, memory bounded, the daemon still answering its peer."""

from __future__ import annotations

import pytest

from bench.fuzz import BAD_OUTCOMES, BEFORE, CONTROL_KINDS, KINDS, run

pytest.importorskip("psutil")
pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


def test_a_small_fuzz_run_finds_no_crash_and_counts_every_drop() -> None:
    res = run(datagrams=len(KINDS) * 400, control=len(CONTROL_KINDS) * 30, seed=3, window=32)
    assert res["crashes"] == 0 and res["still_answers"]
    udp = res["udp"]
    assert udp["others_read"] >= 0, udp  # every datagram sent was accepted or counted
    assert set(udp["kinds"]) == set(KINDS)
    # each kind of damage was caught by its own check
    for reason in ("bad_mac", "truncated", "malformed", "schema", "bad_version",
                   "unknown_type", "stale", "replayed"):  # fmt: skip
        assert udp["dropped"].get(reason, 0) > 0, (reason, udp["dropped"])
    assert set(udp["dropped"]) <= BEFORE | {"rate_request", "rate_lookup", "rate_store",
                                            "rate_partition", "busy"}  # fmt: skip
    outcomes = res["control"]["outcomes"]
    assert not [k for k in outcomes if k.startswith(BAD_OUTCOMES)], outcomes
    assert outcomes.get("error: bad request", 0) > 0
    rss = res["rss_mib"]
    assert rss["peak"] - rss["start"] < 64, rss
