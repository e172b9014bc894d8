"""Control requests the fuzzer (bench/fuzz.py) found to end a daemon or to answer
with an internal error: each is now a one-line refusal, and the node lives on."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dvms.runtime.client import ControlError, call
from dvms.runtime.localcluster import cluster_down, cluster_up

pytest.importorskip("libvirt", reason="libvirt-python not installed (needs libvirt-dev)")


@pytest.fixture(scope="module")
def sock() -> Iterator[str]:
    d = Path(tempfile.mkdtemp(prefix="dvms-inputs-"))
    try:
        yield cluster_up(d / "c", 1, metrics=False)[0]["socket"]
    finally:
        cluster_down(d / "c")
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("target", ["-1", "1" + "0" * 40, "zz", ""])
def test_a_lookup_target_outside_the_id_space_is_refused(sock: str, target: str) -> None:
    # a negative target used to reach the wire, and its retransmission ended the node
    with pytest.raises(ControlError, match="a hex node id of at most 160 bits"):
        call(sock, "lookup", {"target": target})


def test_a_file_path_the_system_cannot_take_is_refused(sock: str) -> None:
    with pytest.raises(ControlError, match=r"cannot read 'xxx.*File name too long"):
        call(sock, "file_add", {"path": "x" * 5000})
    with pytest.raises(ControlError, match="no such file"):
        call(sock, "file_add", {"path": "a\0b"})


def test_the_node_lives_on(sock: str) -> None:
    time.sleep(2.0)  # past the overlay's first retransmission
    assert call(sock, "status")["name"] == "node1"
    assert call(sock, "lookup", {"target": "ab"}) is not None
