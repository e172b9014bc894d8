"""A VM's high-availability policy: what happens to it when its host fails.

    ha                   "restart" (guardians restart it elsewhere) or "off" (default)
    ha_priority          "high" | "medium" | "low": restarts of many VMs go out high first
    ha_restart_attempts  launches tried before the guardians give up (>= 1)
    ha_restart_backoff_s seconds before the second attempt, doubled for each further one
    ha_fence             "destroy" | "pause": what a copy that lost its lease does

The same keys are accepted in a vjob's ``[[vms]]`` tables and by ``vm config`` (values
as text there). ``parse_policy`` turns them into one ``HaPolicy`` or raises
``HaPolicyError`` with a one-line message naming the key and the accepted values.
``docs/ha.md`` describes the protocol that carries the policy out (``dvms.ha``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FENCES",
    "HA_KEYS",
    "MODES",
    "PRIORITIES",
    "HaPolicy",
    "HaPolicyError",
    "parse_policy",
    "priority_rank",
]

MODES = ("off", "restart")
PRIORITIES = ("high", "medium", "low")
FENCES = ("destroy", "pause")
#: The per-VM keys this module reads (vjob TOML and ``vm config``).
HA_KEYS = ("ha", "ha_priority", "ha_restart_attempts", "ha_restart_backoff_s", "ha_fence")
#: Upper bounds that keep a typo from meaning "retry for a day".
MAX_ATTEMPTS = 100
MAX_BACKOFF_S = 3600.0


class HaPolicyError(ValueError):
    """A policy key has a value outside its accepted set (message: one line)."""


@dataclass(frozen=True, slots=True)
class HaPolicy:
    mode: str = "off"
    priority: str = "medium"
    #: Launch attempts per restart (the first included).
    restart_attempts: int = 3
    #: Seconds before the second attempt, doubled before each further one.
    restart_backoff_s: float = 5.0
    fence: str = "destroy"

    def __post_init__(self) -> None:
        _choice("ha", self.mode, MODES)
        _choice("ha_priority", self.priority, PRIORITIES)
        _choice("ha_fence", self.fence, FENCES)
        a = self.restart_attempts
        if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= MAX_ATTEMPTS:
            raise HaPolicyError(
                f"ha_restart_attempts: expected an integer from 1 to {MAX_ATTEMPTS}, got {a!r}"
            )
        b = self.restart_backoff_s
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= MAX_BACKOFF_S:
            raise HaPolicyError(
                f"ha_restart_backoff_s: expected seconds from 0 to {MAX_BACKOFF_S:g}, got {b!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.mode == "restart"

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed attempts (1, 2, ...)."""
        return float(self.restart_backoff_s) * 2.0 ** max(0, failures - 1)


def priority_rank(priority: str) -> int:
    """0 for high, 1 medium, 2 low (restarts go out in this order)."""
    return PRIORITIES.index(priority) if priority in PRIORITIES else 1


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise HaPolicyError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")


def parse_policy(values: Mapping[str, Any], *, base: HaPolicy | None = None) -> HaPolicy:
    """The policy the HA keys among ``values`` describe, over ``base`` (default: HA off).
    Values may be typed (TOML) or text (``vm config``); other keys are ignored."""
    cur = base or HaPolicy()
    fields: dict[str, Any] = {
        "mode": cur.mode,
        "priority": cur.priority,
        "restart_attempts": cur.restart_attempts,
        "restart_backoff_s": cur.restart_backoff_s,
        "fence": cur.fence,
    }
    for key, field in (
        ("ha", "mode"),
        ("ha_priority", "priority"),
        ("ha_fence", "fence"),
    ):
        if key in values:
            fields[field] = values[key]
    if "ha_restart_attempts" in values:
        fields["restart_attempts"] = _number("ha_restart_attempts", values, int)
    if "ha_restart_backoff_s" in values:
        fields["restart_backoff_s"] = _number("ha_restart_backoff_s", values, float)
    return HaPolicy(**fields)


def _number(key: str, values: Mapping[str, Any], kind: type) -> Any:
    raw = values[key]
    if isinstance(raw, str):
        try:
            return kind(raw.strip())
        except ValueError:
            what = "an integer" if kind is int else "a number of seconds"
            raise HaPolicyError(f"{key}: expected {what}, got {raw!r}") from None
    return raw
