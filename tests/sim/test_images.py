"""Image transfers in the simulated datacenter (``dvms/sim/images.py``): a creation on a
host without the VM's image waits for one transfer from a holder, at the link's
bandwidth, in line behind the holder's other uploads; the host keeps the image (a
bounded cache that never evicts an image in use); and the image-locality score cuts
transfers and start latency in a launch (``dvms`` against ``dvms-nolocality``)."""

from __future__ import annotations

from typing import Any

import pytest

from dvms.sim.run import run_scenario
from dvms.sim.scenario import ScenarioError, scenario_from_dict
from dvms.sim.world import World

RTT = 0.001


def world(hosts: int = 4, **images: Any) -> World:
    cfg = {"count": 2, "size_mib": 1000, "seeds": 1, "bandwidth_mib_s": 100.0,
           "cache_mib": 2000, **images}  # fmt: skip
    data = {"duration_s": 200.0, "hosts": {"count": hosts}, "vms": {"per_host": 0},
            "topology": {"lan_rtt_s": RTT}, "images": cfg}  # fmt: skip
    return World(scenario_from_dict(data))


def create(w: World, name: str, host: int, image: str, done: dict[str, float]) -> None:
    def on_done(ok: bool, reason: str) -> None:
        assert ok, reason
        done[name] = w.engine.now

    w.create_vm(name, w.hosts[host].name, vcpus=1, memory_mib=512, create_s=5.0,
                image=image, on_done=on_done)  # fmt: skip


def test_seeds_hold_each_image_and_report_it() -> None:
    w = world(hosts=8, seeds=2)
    assert w.images is not None
    assert w.images.holders == {"img0": {0, 4}, "img1": {1, 5}}
    (held,) = w.images.reported(4)
    assert held.held == held.size == 1000 << 20


def test_a_host_without_the_image_waits_for_one_transfer_then_keeps_it() -> None:
    w = world()
    done: dict[str, float] = {}
    create(w, "a", 0, "img0", done)  # host 0 holds img0: only the boot
    create(w, "b", 2, "img0", done)  # 1000 MiB at 100 MiB/s + RTT, then the boot
    create(w, "c", 2, "img0", done)  # waits for the same transfer
    w.engine.run_until(100.0)
    assert done["a"] == pytest.approx(5.0)
    assert done["b"] == done["c"] == pytest.approx(10.0 + RTT + 5.0)
    create(w, "d", 2, "img0", done)  # held now: a cache hit
    w.engine.run_until(200.0)
    assert done["d"] == pytest.approx(100.0 + 5.0)
    assert w.images is not None
    s = w.images.summary()
    assert (s["image_transfers"], s["image_mib_transferred"], s["image_cache_hits"]) == (1, 1000, 2)
    assert 2 in w.images.holders["img0"]


def test_a_holder_sends_one_image_at_a_time_and_fetchers_pick_the_first_free() -> None:
    w = world()
    done: dict[str, float] = {}
    create(w, "a", 2, "img0", done)  # from host 0: ends at 10 s
    create(w, "b", 3, "img0", done)  # host 0's uplink is busy until 10 s: ends at 20 s
    w.engine.run_until(100.0)
    assert done["b"] - done["a"] == pytest.approx(10.0)
    # a later fetch takes the holder that is free first (host 2 got it at 10 s)
    w2 = world()
    assert w2.images is not None
    done2: dict[str, float] = {}
    create(w2, "a", 2, "img0", done2)
    create(w2, "b", 3, "img0", done2)
    w2.engine.run_until(11.0)
    create(w2, "c", 1, "img0", done2)
    w2.engine.run_until(100.0)
    assert done2["c"] == pytest.approx(11.0 + 10.0 + RTT + 5.0)


def test_the_cache_is_bounded_and_never_evicts_an_image_in_use() -> None:
    w = world(count=3, cache_mib=2000)  # two images of 1000 MiB per host
    assert w.images is not None
    for name in ("img0", "img1", "img2"):
        w.images._hold(3, name)  # three held, over the cap of two
    w.images.vm_image["x"] = "img0"  # a VM on host 3 boots from img0
    w.vm_names.append("x")
    w.host_vms[3][len(w.vm_names) - 1] = None
    w.images._evict(3)
    assert list(w.images.held[3]) == ["img0", "img2"]  # LRU img1 went, img0 is in use
    assert w.images.evictions == 1 and 3 not in w.images.holders["img1"]


def test_images_section_is_checked() -> None:
    with pytest.raises(ScenarioError, match=r"images\.seeds"):
        scenario_from_dict({"hosts": {"count": 4}, "images": {"count": 1, "seeds": 5}})
    with pytest.raises(ScenarioError, match=r"images\.cache_mib"):
        scenario_from_dict({"images": {"count": 1, "size_mib": 4096, "cache_mib": 1024}})


def test_the_image_locality_score_cuts_transfers_and_start_latency() -> None:
    data = {
        "duration_s": 200.0,
        "hosts": {"count": 32},
        "vms": {"per_host": 0},
        "images": {"count": 2, "size_mib": 2048, "seeds": 4, "cache_mib": 4096},
        "launches": [{"at_s": 10.0, "entries": 8, "vjobs_per_entry": 2, "vms": 4, "create_s": 5.0}],
        "scheduler": {"partition": {"lease_s": 4.5, "min_partition_size": 4}},
    }
    scn = scenario_from_dict(data)
    runs = {s: run_scenario(scn, s)[0] for s in ("dvms", "dvms-nolocality")}
    for r in runs.values():
        assert r["launch_vms_placed"] == 64 and r["invariant_violations"] == 0
    on, off = runs["dvms"], runs["dvms-nolocality"]
    assert on["image_transfers"] < off["image_transfers"]
    assert on["image_cache_hits"] > off["image_cache_hits"]
    assert on["vm_start_p50_s"] < off["vm_start_p50_s"]
