"""How the suite is spread over pytest-xdist workers (``make test`` runs two).

Each test file is one unit of work, so a module's daemons and clusters start once, in
one worker. The tests of ``tests/real/`` are one unit together: they boot QEMU guests
and libvirtd in namespaces and are timed against a guest's boot, so they run one after
the other and never beside each other. They are queued first, as the longest unit.
Without xdist (a plain ``pytest``) only the order changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REAL_DIR = Path(__file__).parent / "real"
#: the nodeid prefix of those tests (node ids are relative to the repository)
REAL_PREFIX = "tests/real/"


def _is_real(item: pytest.Item) -> bool:
    return REAL_DIR in item.path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not _is_real(item))  # stable: file order is kept


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # plain pytest: one process, nothing to split
    pass
else:

    class _FilesAndRealTogether(LoadScopeScheduling):
        """``--dist loadfile``, except that all of ``tests/real/`` is one unit."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return REAL_PREFIX if path.startswith(REAL_PREFIX) else path

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        return _FilesAndRealTogether(config, log)
