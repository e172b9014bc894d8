"""``dvms.configfile``: TOML tables -> frozen dataclasses, one table test per field type."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from dvms.configfile import NOT_IN_FILE, ConfigError, as_table, load_table


@dataclass(frozen=True, slots=True)
class Leaf:
    n: int = 1
    x: float = 0.5

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


@dataclass(frozen=True, slots=True)
class Root:
    name: str = "r"
    on: bool = False
    mode: Literal["a", "b"] = "a"
    limit: float | None = None
    tags: tuple[str, ...] = ()
    leaves: tuple[Leaf, ...] = ()
    leaf: Leaf = field(default_factory=lambda: Leaf(n=7))
    extra: Mapping[str, Any] = field(default_factory=dict)
    filled_in: str = field(default="", metadata=NOT_IN_FILE)


class MyError(ConfigError):
    pass


def test_every_field_type_is_converted() -> None:
    table: dict[str, Any] = {
        "name": "x",
        "on": True,
        "mode": "b",
        "limit": 3,
        "tags": ["p", "q"],
        "leaves": [{"n": 2}, {}],
        "leaf": {"x": 1},
        "extra": {"anything": [1]},
    }
    got = load_table(Root, table)
    assert got == Root(
        "x", True, "b", 3.0, ("p", "q"), (Leaf(2), Leaf()), Leaf(7, 1.0), table["extra"]
    )
    assert isinstance(got.limit, float) and isinstance(got.leaf.x, float)
    assert load_table(Root, as_table(got)) == got


def test_keys_left_out_keep_the_base() -> None:
    base = Root(name="base", leaf=Leaf(n=3, x=2.0))
    assert load_table(Root, {"leaf": {"n": 4}}, base=base) == Root(name="base", leaf=Leaf(4, 2.0))
    assert load_table(Root, {"leaf": {"n": 4}}).leaf == Leaf(4, 0.5)  # the field's default


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"nme": 1}, "f.toml: unknown key 'nme' (known: extra, leaf, leaves, limit, mode, name,"),
        ({"filled_in": "x"}, "unknown key 'filled_in'"),
        ({"leaf": {"m": 1}}, "f.toml: [leaf] unknown key 'm' (known: n, x)"),
        ({"leaf": {"n": True}}, "f.toml: [leaf] n: expected an integer, got True"),
        ({"leaf": {"x": "1"}}, "f.toml: [leaf] x: expected a number, got '1'"),
        ({"leaf": {"n": -1}}, "f.toml: [leaf] n must be >= 0"),
        ({"leaves": [{}, {"n": -1}]}, "f.toml: [leaves[1]] n must be >= 0"),
        ({"leaves": [{}, {"n": "2"}]}, "f.toml: [leaves[1]] n: expected an integer"),
        ({"on": 1}, "f.toml: on: expected true or false, got 1"),
        ({"mode": "c"}, "f.toml: mode: expected one of a, b, got 'c'"),
        ({"tags": "p"}, "f.toml: tags: expected an array, got 'p'"),
        ({"tags": ["p", 2]}, "f.toml: tags[1]: expected a string, got 2"),
        ({"leaf": 3}, "f.toml: leaf: expected a table, got 3"),
        ({"old": 3}, "f.toml: old: now [leaf] n"),
    ],
)
def test_errors_name_the_table_and_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(MyError, match=re.escape(message)):
        load_table(Root, table, source="f.toml", moved={"old": "[leaf] n"}, error=MyError)
