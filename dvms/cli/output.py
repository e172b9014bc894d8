"""One JSON shape for every command's ``--json``.

- The document is one JSON object: a command that lists things puts the list under a
  plural key (``{"nodes": [...]}``, ``{"vjobs": [...]}``).
- Values are typed: numbers are numbers, flags are ``true``/``false``, nothing absent
  is an empty string; sizes and durations carry their unit in the key (``memory_mib``,
  ``duration_s``) where the key alone would be ambiguous.
- Times are ISO-8601 in UTC with milliseconds (``2026-12-06T21:25:01.123Z``) under the
  keys of ``TIME_KEYS``; the control socket itself carries seconds since the epoch.
- Keys are sorted, the document indented by two spaces, on stdout, one per command.

``docs/cli.md`` states the same rules; ``tests/e2e/test_json_shape.py`` runs every
command with ``--json`` against a cluster and checks them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: Keys whose numeric values are times (seconds since the epoch on the control socket).
TIME_KEYS = frozenset(
    {"started", "ended", "submitted", "updated", "created", "ts", "time", "last_used"}
)


def iso(t: float) -> str:
    """Seconds since the epoch as ISO-8601 UTC with milliseconds."""
    text = datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def shaped(value: Any, key: str = "") -> Any:
    """``value`` with every time under a ``TIME_KEYS`` key written as ISO-8601."""
    if isinstance(value, Mapping):
        return {str(k): shaped(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shaped(v, key) for v in value]
    if key in TIME_KEYS and isinstance(value, int | float) and not isinstance(value, bool):
        return iso(float(value))
    return value


def event_doc(event: Mapping[str, Any]) -> dict[str, Any]:
    """A node event (``dvms events``) as --json shows it: its time once, under ``time``
    (the control socket sends seconds as ``ts`` and a text copy as ``time``)."""
    out = {k: v for k, v in event.items() if k not in ("ts", "time")}
    out["time"] = event["ts"]
    return out


def emit(document: Mapping[str, Any]) -> None:
    """Print one command's JSON document (see the module docstring)."""
    if not isinstance(document, Mapping):  # a list must be named by its command
        raise TypeError(f"a --json document is an object, not {type(document).__name__}")
    print(json.dumps(shaped(document), indent=2, sort_keys=True))
