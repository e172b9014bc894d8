"""The figure functions draw from plain data (the Vivaldi map is fed by DVMS runs)."""

from __future__ import annotations

from pathlib import Path

from dvms.sim import figures


def test_vivaldi_map_and_partition_sizes(tmp_path: Path) -> None:
    coords = [(float(i % 4) * 10, float(i // 4) * 10) for i in range(16)]
    site_of = [i // 4 for i in range(16)]
    figures.vivaldi_map(
        coords, site_of, ["a", "b", "c", "d"], [[0, 1, 5], [10, 11]], tmp_path / "m.png"
    )
    figures.partition_sizes({"dvms": [4, 4, 5, 7], "centralized": []}, tmp_path / "p.png")
    figures.partition_sizes({"static": []}, tmp_path / "empty.png")
    for name in ("m.png", "p.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
