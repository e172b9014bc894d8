"""The working copy one command runs on, and the word matching shared by all handlers.

``Run`` starts from the ``Context`` and accumulates the new state, session, output and
effects. Handlers raise ``CommandError`` to refuse; ``execute`` then throws the working
copy away, which is why a refusal can never leave a half-changed state behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dvms.namespace.config import CommandError
from dvms.namespace.effects import Context, Effect, Session, Table, Text
from dvms.namespace.state import DEFAULT_NAMESPACE, Namespace, State

__all__ = ["Run", "invalid", "match"]


def invalid(words: Sequence[str]) -> CommandError:
    return CommandError(f"invalid command: `{' '.join(words)}`")


def match(word: str, options: Sequence[str], words: Sequence[str]) -> str:
    """``word`` as one of ``options``: exact, else a unique prefix (minicli accepts
    ``vm config net`` for ``networks``)."""
    if word in options:
        return word
    found = [o for o in options if o.startswith(word)] if word else []
    if len(found) != 1:
        raise invalid(words)
    return found[0]


@dataclass
class Run:
    """Mutable working copy of one ``execute`` call."""

    ctx: Context
    state: State = field(init=False)
    session: Session = field(init=False)
    output: Table | Text | None = None
    effects: list[Effect] = field(default_factory=list)
    #: an error that still commits ``state`` (only ``ns schedule mv``, as minimega)
    partial_error: str | None = None
    depth: int = 0

    def __post_init__(self) -> None:
        self.state = self.ctx.state
        self.session = self.ctx.session

    # -- namespaces ----------------------------------------------------------------------

    def fresh(self, name: str) -> Namespace:
        """A new namespace: every host of the cluster (there is no head node to leave out)."""
        return Namespace(name, hosts=self.ctx.cluster.host_names())

    def ns(self) -> Namespace:
        """The active namespace (created on the fly, not stored, if it does not exist)."""
        return self.state.get(self.session.active) or self.fresh(self.session.active)

    def save(self, ns: Namespace) -> None:
        self.state = self.state.put(ns)

    def update(self, **changes: object) -> Namespace:
        ns = replace(self.ns(), **changes)
        self.save(ns)
        return ns

    def known(self) -> list[str]:
        """Namespaces to list: the stored ones, the default one, the active one."""
        return sorted({*self.state.names(), DEFAULT_NAMESPACE, self.session.active})
