"""Shared guards for the real-infrastructure tests: they skip with the reason, never pass."""

from __future__ import annotations

import os
import shutil

import pytest


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root ({what})")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/debian-packages.txt)")


@pytest.fixture
def run_tag() -> str:
    """A short per-run prefix for namespaces and links, so parallel runs never collide."""
    return f"dv{os.getpid() % 100000:05d}"
