"""Image locality (``dvms/placement/locality.py``): a soft score for hosts that already
hold a VM's images, never stronger than a hard constraint, and no change at all for
VMs without images."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.placement import (
    Host,
    PlacementConfig,
    Snapshot,
    Vm,
    build_constraints,
    locality_score,
    solve_launch,
)
from dvms.placement.modelfile import model_from_dict, solve_model
from dvms.placement.spec import ConstraintSpec

GIB = 1 << 30
MIB = 1 << 20
CFG = PlacementConfig()


def _hosts(held: dict[str, dict[str, float]], n: int = 4) -> tuple[Host, ...]:
    return tuple(
        Host(f"h{i}", cpus=8, memory_mib=32768, images=held.get(f"h{i}", {})) for i in range(n)
    )


def _ready(name: str, images: dict[str, int] | None = None, vcpus: int = 1) -> Vm:
    return Vm(name, vcpus=vcpus, state="ready", images=images or {})


@pytest.mark.parametrize(
    ("size", "held", "score"),
    [
        (2 * GIB, 1.0, 1.0),  # whole image, above the cap: full score
        (2 * GIB, 0.5, 0.5),  # a partial copy scores by the fraction held
        (2 * GIB, 0.0, 0.0),
        (10 * MIB, 1.0, 0.0),  # under the threshold: a kernel alone does not matter
        (23 * MIB + (977 * MIB) // 2, 1.0, 0.5),  # halfway between threshold and cap
    ],
)
def test_the_score_is_the_fraction_held_scaled_by_size(size: int, held: float, score: float):
    host = Host("h", images={"img": held})
    assert locality_score(_ready("v", {"img": size}), host, CFG) == pytest.approx(score, 1e-3)


def test_a_holder_wins_over_a_slightly_less_loaded_host_and_loses_to_a_much_less_loaded_one():
    hosts = _hosts({"h1": {"img": 1.0}}, n=2)
    # h1 carries 2 vCPUs of 8 (load 0.25 < weight 0.5): the holder wins
    snap = Snapshot(hosts, (Vm("a", vcpus=2, host="h1"),))
    result = solve_launch(snap, [_ready("v", {"img": 2 * GIB})])
    assert result.placement == {"v": "h1"}
    (note,) = result.locality
    assert (note.vms, note.host, note.instead) == (("v",), "h1", "h0")
    assert note.holders == (("h1", 1.0, 1.0),)
    # 6 vCPUs of 8 (load 0.75 > 0.5): least load wins, and nothing is noted
    snap = Snapshot(hosts, (Vm("a", vcpus=6, host="h1"),))
    result = solve_launch(snap, [_ready("v", {"img": 2 * GIB})])
    assert result.placement == {"v": "h0"} and result.locality == ()


def test_hard_constraints_win_over_the_score():
    hosts = _hosts({"h1": {"img": 1.0}}, n=3)
    snap = Snapshot(hosts)
    vms = [_ready("v", {"img": 4 * GIB})]
    ban = build_constraints(
        [ConstraintSpec("ban", vms=("v",), hosts=("h1",))], vm_keys=["v"], hosts=["h0", "h1", "h2"]
    )
    assert solve_launch(snap, vms, ban).placement == {"v": "h0"}
    # the holder is full: the VM goes elsewhere, the launch does not fail
    full = Snapshot(hosts, (Vm("big", vcpus=8 * 16, host="h1"),))
    assert solve_launch(full, vms).placement == {"v": "h0"}


def test_load_still_spreads_a_burst_over_holders_and_others():
    hosts = _hosts({"h1": {"img": 1.0}, "h2": {"img": 0.5}})
    vms = [_ready(f"v{i}", {"img": 2 * GIB}) for i in range(8)]
    placed = solve_launch(Snapshot(hosts), vms).placement
    count = {h: list(placed.values()).count(h) for h in ("h0", "h1", "h2", "h3")}
    assert count["h1"] > count["h2"] > count["h0"] >= 1 and sum(count.values()) == 8


def test_weight_zero_is_least_load():
    hosts = _hosts({"h1": {"img": 1.0}})
    vms = [_ready(f"v{i}", {"img": 2 * GIB}) for i in range(6)]
    off = PlacementConfig(image_locality_weight=0.0)
    plain = [_ready(f"v{i}") for i in range(6)]
    result = solve_launch(Snapshot(hosts), vms, (), off)
    assert result.placement == solve_launch(Snapshot(hosts), plain).placement
    assert result.locality == ()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 6), st.integers(1, 12))
def test_vms_without_images_are_placed_as_without_the_score(seed: int, n_hosts: int, n: int):
    rng = random.Random(seed)
    held = {f"h{i}": {"img": rng.random()} for i in range(n_hosts) if rng.random() < 0.5}
    running = tuple(
        Vm(f"r{i}", vcpus=rng.randint(1, 8), host=f"h{rng.randrange(n_hosts)}") for i in range(4)
    )
    vms = [_ready(f"v{i}", vcpus=rng.randint(1, 4)) for i in range(n)]
    with_images = Snapshot(_hosts(held, n_hosts), running)
    without = Snapshot(_hosts({}, n_hosts), running)
    off = PlacementConfig(image_locality_weight=0.0)
    a = solve_launch(with_images, vms, (), CFG)
    b = solve_launch(without, vms, (), off)
    assert (a.ok, dict(a.placement), a.locality) == (b.ok, dict(b.placement), ())


def test_a_model_file_names_image_sizes_and_holders_and_solve_explains():
    model = model_from_dict(
        {
            "images": {"deb": 2048},
            "hosts": [
                {"name": "h1", "cpus": 8, "memory": 32768},
                {"name": "h2", "cpus": 8, "memory": 32768, "images": {"deb": 1.0}},
            ],
            "vjob": {"name": "w", "vms": [{"name": "w1", "disk": "file:deb"}, {"name": "w2"}]},
        },
        where="m",
    )
    out = solve_model(model)
    assert out.launched == {"w1": "h2", "w2": "h1"}
    (note,) = out.locality
    assert note.vms == ("w1",) and note.holders == (("h2", 1.0, 1.0),)
    assert "w1 -> h2, not h1 (load alone)" in str(note)
    with pytest.raises(ValueError, match=r"hosts\[0\].images: 'nope' is not in \[images\]"):
        model_from_dict(
            {"hosts": [{"name": "h1", "images": {"nope": 1.0}}]},
            where="m",
        )
    with pytest.raises(ValueError, match="held must be a fraction"):
        model_from_dict(
            {"images": {"deb": 1}, "hosts": [{"name": "h1", "images": {"deb": 2.0}}]}, where="m"
        )
