"""Name ranges: ``web[1-4]`` <-> ``web1, web2, web3, web4``.

The grammar is minimega's (its ``pkg/ranges``)::

    list   := item ( "," item )*           ; commas inside [...] do not split
    item   := literal | prefix "[" spec "]" suffix
    spec   := part ( "," part )*
    part   := number | number "-" number     ; decimal digits, leading zeros allowed

``expand`` follows minimega where its behaviour is sane:

- items are expanded in the order written and are *not* de-duplicated against each
  other (``a,a`` gives ``a, a``: the caller decides whether a repeat is an error);
- inside one bracket group the numbers are de-duplicated and sorted ascending, whatever
  the order of the parts (``[3,1]`` gives 1 then 3);
- a trailing empty item is dropped (``foo,`` is ``foo``) and ``""`` expands to ``[]``;
- an item without ``[`` is taken literally (``10`` stays ``10``, ``all`` stays ``all``);
- numbers must lie in 0 .. 2**31-1;
- bracket errors: nested ``[``, unmatched ``]``, unterminated ``[``.

Deviations from minimega, each deliberate:

1. A **suffix** after the bracket group is allowed: ``foo[1-2].eth`` gives ``foo1.eth,
   foo2.eth`` (minimega refuses it, yet its own compressor prints such suffixes).
2. **Zero padding is per part**: a subrange ``a-b`` pads every number to the number of
   digits written for ``a`` (``008-011`` -> 008..011, ``8-11`` -> 8..11), and a single
   part keeps exactly the digits written (``02`` stays ``02``). minimega drops padding
   for the whole group as soon as widths are mixed (``[1,02]`` gives 1, 2); here it gives
   1, 02, which is what makes ``compress`` lossless. Numbers are ordered by value, then
   by width (``1`` before ``01``).
3. A **descending subrange** (``5-3``) is an error; minimega silently yields nothing.
4. An **empty item** at the start or in the middle (``,a`` or ``a,,b``) is an error;
   minimega yields an empty name, which later becomes an auto-named VM.
5. Whitespace around items and parts is ignored (``web[1-2], db``).
6. A list may expand to at most ``MAX_NAMES`` names, so a typo such as ``[0-2147483647]``
   is refused instead of exhausting memory.

``compress`` is the inverse and, unlike minimega's ``UnsplitList``, is lossless: leading
zeros survive (``vm01,vm02`` -> ``vm[01-02]``), ``{n1, n10}`` -> ``n[1,10]`` (minimega
loses ``n1``), and suffixes round-trip. Its output expands to the unique input names in
**natural order** (``natural_key``): names are compared as sequences of text and number
runs; text compares as strings, a digit run by numeric value and then by width. So
``expand(compress(names)) == sorted(set(names), key=natural_key)`` for every list of
names ``compress`` accepts (non-empty, no ``[``, ``]`` or ``,``, no surrounding spaces).

Error positions in ``RangeError`` messages count characters from 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MAX_NAMES", "MAX_VALUE", "RangeError", "compress", "expand", "natural_key"]

#: Largest number a range may produce (minimega's limit).
MAX_VALUE = 2**31 - 1
#: Most names one ``expand`` call may produce.
MAX_NAMES = 1_000_000

_DIGITS = frozenset("0123456789")
_RUNS = re.compile(r"([0-9]+)")


class RangeError(ValueError):
    """A malformed range list; ``position`` (1-based) points at the problem if known."""

    def __init__(self, problem: str, text: str, position: int | None = None) -> None:
        where = f" at char {position}" if position is not None else ""
        super().__init__(f"{problem}{where} in {text!r}")
        self.problem = problem
        self.text = text
        self.position = position


# ---------------------------------------------------------------------------- expand


def expand(text: str) -> list[str]:
    """Expand a range list such as ``"web[1-4],db[01-02].lan"`` into names."""
    if not isinstance(text, str):
        raise TypeError(f"expand() needs a string, got {type(text).__name__}")
    _check_brackets(text)
    out: list[str] = []
    budget = [MAX_NAMES]
    for start, item in _split_items(text):
        out.extend(_expand_item(text, start, item, budget))
    return out


def _check_brackets(text: str) -> None:
    open_at: int | None = None
    for index, char in enumerate(text):
        if char == "[":
            if open_at is not None:
                raise RangeError("nested '['", text, index + 1)
            open_at = index
        elif char == "]":
            if open_at is None:
                raise RangeError("unmatched ']'", text, index + 1)
            open_at = None
    if open_at is not None:
        raise RangeError("unterminated '['", text, open_at + 1)


def _split_items(text: str) -> list[tuple[int, str]]:
    """Split on commas outside brackets; return (offset, stripped item) pairs."""
    pieces: list[tuple[int, str]] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append((start, text[start:index]))
            start = index + 1
    pieces.append((start, text[start:]))
    if not pieces[-1][1].strip():
        pieces.pop()  # minimega drops one trailing empty item ("foo," and "")
    items = []
    for offset, raw in pieces:
        item = raw.strip()
        if not item:
            raise RangeError("empty item", text, offset + 1)
        items.append((offset + len(raw) - len(raw.lstrip()), item))
    return items


def _expand_item(text: str, start: int, item: str, budget: list[int]) -> list[str]:
    if "[" not in item:
        _spend(budget, 1, text, start)
        return [item]
    open_idx = item.index("[")
    close_idx = item.index("]")
    prefix, spec, suffix = item[:open_idx], item[open_idx + 1 : close_idx], item[close_idx + 1 :]
    if "[" in suffix:
        second = close_idx + 1 + suffix.index("[")
        raise RangeError("more than one bracket group in one item", text, start + second + 1)
    numbers = _expand_spec(text, start + open_idx + 1, spec, budget)
    return [prefix + number + suffix for number in numbers]


def _expand_spec(text: str, offset: int, spec: str, budget: list[int]) -> list[str]:
    """Expand the inside of ``[...]`` (``offset`` = index of its first char in text)."""
    found: dict[str, int] = {}
    part_start = 0
    for raw in spec.split(","):
        pos = offset + part_start + (len(raw) - len(raw.lstrip())) + 1
        part_start += len(raw) + 1
        part = raw.strip()
        if not part:
            raise RangeError("empty range part", text, pos)
        if "-" not in part:
            value = _number(part, text, pos)
            _spend(budget, 1, text, pos)
            found[part] = value
            continue
        ends = part.split("-")
        if len(ends) != 2 or not ends[0] or not ends[1]:
            raise RangeError(f"invalid subrange {part!r} (expected a-b)", text, pos)
        low, high = _number(ends[0], text, pos), _number(ends[1], text, pos)
        if low > high:
            raise RangeError(f"descending subrange {part!r}", text, pos)
        _spend(budget, high - low + 1, text, pos)
        width = len(ends[0])
        for value in range(low, high + 1):
            found[str(value).zfill(width)] = value
    return sorted(found, key=lambda s: (found[s], len(s)))


def _number(digits: str, text: str, pos: int) -> int:
    if not digits or not _DIGITS.issuperset(digits):
        raise RangeError(f"{digits!r} is not a number", text, pos)
    value = int(digits)
    if value > MAX_VALUE:
        raise RangeError(f"value out of range: {digits} (largest is {MAX_VALUE})", text, pos)
    return value


def _spend(budget: list[int], count: int, text: str, pos: int) -> None:
    budget[0] -= count
    if budget[0] < 0:
        raise RangeError(f"expands to more than {MAX_NAMES} names", text, pos)


# -------------------------------------------------------------------------- compress


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key: text runs as strings, digit runs by (value, width). Total on strings."""
    tokens = _RUNS.split(name)
    return tuple((int(tok), len(tok)) if index % 2 else tok for index, tok in enumerate(tokens))


@dataclass(slots=True)
class _Group:
    """Consecutive names (in natural order) that differ only in digit run ``index``."""

    template: list[str]
    index: int | None = None
    numbers: list[str] = field(default_factory=list)

    def accepts(self, tokens: list[str]) -> bool:
        if len(tokens) != len(self.template):
            return False
        differ = [i for i, (a, b) in enumerate(zip(tokens, self.template, strict=True)) if a != b]
        if self.index is None:
            ok = len(differ) == 1 and differ[0] % 2 == 1
        else:
            ok = differ == [self.index]
        # A number too large for a range stays a literal name of its own.
        return ok and max(int(tokens[differ[0]]), int(self.template[differ[0]])) <= MAX_VALUE

    def add(self, tokens: list[str]) -> None:
        if self.index is None:
            self.index = next(i for i, tok in enumerate(tokens) if tok != self.template[i])
            self.numbers.append(self.template[self.index])
        self.numbers.append(tokens[self.index])

    def render(self) -> str:
        if self.index is None:
            return "".join(self.template)
        prefix = "".join(self.template[: self.index])
        suffix = "".join(self.template[self.index + 1 :])
        return f"{prefix}[{','.join(_parts(self.numbers))}]{suffix}"


@dataclass(slots=True)
class _Run:
    first: str  # digits as written; every member is str(value).zfill(len(first))
    last: int

    def render(self) -> str:
        if int(self.first) == self.last:
            return self.first
        return f"{self.first}-{str(self.last).zfill(len(self.first))}"


def _parts(numbers: list[str]) -> list[str]:
    """Range parts for digit strings given in (value, width) order; exact inverse."""
    runs: list[_Run] = []
    waiting: dict[str, _Run] = {}  # the next string a run would produce -> that run
    for digits in numbers:
        value = int(digits)
        run = waiting.pop(digits, None)
        if run is None:
            run = _Run(first=digits, last=value)
            runs.append(run)
        run.last = value
        waiting[str(value + 1).zfill(len(run.first))] = run
    return [run.render() for run in runs]


def compress(names: Iterable[str]) -> str:
    """The shortest-ish range list whose ``expand`` is the sorted unique ``names``."""
    unique = sorted({_compressible(name) for name in names}, key=natural_key)
    groups: list[_Group] = []
    for name in unique:
        tokens = _RUNS.split(name)
        if groups and groups[-1].accepts(tokens):
            groups[-1].add(tokens)
        else:
            groups.append(_Group(template=tokens))
    return ",".join(group.render() for group in groups)


def _compressible(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"compress() needs strings, got {type(name).__name__}")
    if not name:
        raise RangeError("cannot compress an empty name", "")
    for index, char in enumerate(name):
        if char in "[],":
            raise RangeError(f"cannot compress a name containing {char!r}", name, index + 1)
    if name != name.strip():
        raise RangeError("cannot compress a name with surrounding whitespace", name)
    return name
