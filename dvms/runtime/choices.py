"""The names ``dvms node run`` and ``dvms cluster up`` offer as choices, importable
without loading the runtime (the CLI builds every command's parser at start-up)."""

from __future__ import annotations

from dvms.partition.config import RECRUITMENT

__all__ = ["PROFILES", "RECRUITMENT"]

#: Named node profiles: ``NodeConfig.lan()``, ``wan()``, ``local()`` (``--profile``).
PROFILES = ("lan", "wan", "local")
