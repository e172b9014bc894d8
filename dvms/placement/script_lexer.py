"""Tokenizer for the btrpsl-style constraint scripts (grammar in ``script.py``).

Lexical rules (btrpsl's, with the dvms choices marked *):

- ``// ...`` and ``/* ... */`` comments; whitespace separates tokens.
- ``$name``: a variable (letter first, then letters, digits, ``_``, ``.``).
- ``@host``: a node; letters, digits, ``_``, ``-`` and ``.``.
- a *word* made of letters, digits, ``_``, ``-`` and ``.`` is a number when it is all
  digits (optionally ``digits.digits``), else an identifier (a VM name, a constraint
  name or a keyword). * ``-`` is part of a word so that ``web-1`` is one VM name: write
  ``$A - web1`` with spaces when ``-`` means set difference after a bare name. A
  trailing ``-`` or ``.`` is never part of a word (``web1-{web1}`` is a difference).
  * Numbers are decimal only (btrpsl also reads octal ``010`` and hex ``0x10``).
- a word, node or variable glued to ``[`` is a *range*: ``VM[1..4]``, ``@n[01..08]``,
  ``@helios-[1..3].sophia.fr`` (a glued suffix after ``]``), ``$R[1..3]``. Parts are
  ``a..b`` (ascending or descending; zero-padded to the width written for ``a``), plain
  numbers and plain names (``@srv-[1..2,frontend]``). Repeats are dropped, order kept.
- ``"..."``: a string with ``\\"``, ``\\\\``, ``\\n``, ``\\t`` escapes.
- operators: ``{ } ( ) , ; : = += -= + - < > >>``; ``* / % # ^ ! & | ==`` are
  recognised only to be refused with a clear message by the parser.

Every token carries its 1-based line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_RANGE", "ScriptError", "Token", "tokenize"]

#: Most elements one range may produce.
MAX_RANGE = 100_000

_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_WORD_START = _WORD - {"-", "."}
_VAR = _WORD - {"-"}
_DIGITS = frozenset("0123456789")
_OPERATORS = ("+=", "-=", ">>", "==", "!=", "&&", "||", "..")
_SINGLE = "{}(),;:=+-<>*/%#^!&|"
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class ScriptError(ValueError):
    """A script is malformed: ``problem`` at ``line``:``column`` of ``source``."""

    def __init__(self, problem: str, line: int, column: int, source: str = "<script>") -> None:
        super().__init__(f"{source}:{line}:{column}: {problem}")
        self.problem = problem
        self.line = line
        self.column = column
        self.source = source


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is one of var, node, ident, number, string, op, eof.

    ``text`` is the name (without ``$``/``@``), the number's digits, the string's value
    or the operator. ``names`` is set for a range: the expanded names, in order.
    """

    kind: str
    text: str
    line: int
    column: int
    names: tuple[str, ...] | None = None

    @property
    def where(self) -> tuple[int, int]:
        return (self.line, self.column)

    def describe(self) -> str:
        if self.kind == "eof":
            return "the end of the script"
        sigil = {"var": "$", "node": "@"}.get(self.kind, "")
        label = {"var": "variable", "node": "node", "ident": "name", "number": "number"}
        if self.kind == "string":
            return f"string {self.text!r}"
        if self.kind == "op":
            return f"'{self.text}'"
        suffix = "[...]" if self.names is not None else ""
        return f"{label[self.kind]} {sigil}{self.text}{suffix}"


class _Lexer:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.tokens: list[Token] = []

    # -- positions
    def col(self, pos: int | None = None) -> int:
        return (self.pos if pos is None else pos) - self.line_start + 1

    def error(self, problem: str, pos: int | None = None) -> ScriptError:
        return ScriptError(problem, self.line, self.col(pos), self.source)

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.text[self.pos] == "\n":
                self.line += 1
                self.line_start = self.pos + 1
            self.pos += 1

    def run(self) -> list[Token]:
        while True:
            self.skip_space()
            if self.pos >= len(self.text):
                self.tokens.append(Token("eof", "", self.line, self.col()))
                return self.tokens
            self.tokens.append(self.token())

    def skip_space(self) -> None:
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t\r\n\f":
                self.advance()
            elif char == "/" and self.peek(1) == "/":
                while self.pos < len(self.text) and self.peek() != "\n":
                    self.advance()
            elif char == "/" and self.peek(1) == "*":
                line, col = self.line, self.col()
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise ScriptError("unterminated '/*' comment", line, col, self.source)
                self.advance(end + 2 - self.pos)
            else:
                return

    # -- tokens
    def token(self) -> Token:
        char = self.peek()
        line, col = self.line, self.col()
        if char == "$":
            return self.sigil_word("var", _VAR, line, col)
        if char == "@":
            return self.sigil_word("node", _WORD, line, col)
        if char in _WORD_START:
            return self.word(line, col)
        if char == '"':
            return self.string(line, col)
        for op in _OPERATORS:
            if self.text.startswith(op, self.pos):
                self.advance(len(op))
                return Token("op", op, line, col)
        if char in _SINGLE:
            self.advance()
            return Token("op", char, line, col)
        raise self.error(f"unexpected character {char!r}")

    def take(self, allowed: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        # A trailing '-' or '.' belongs to what follows, unless a range starts there.
        if self.peek() != "[":
            while self.pos > start and self.text[self.pos - 1] in "-.":
                self.pos -= 1
        return self.text[start : self.pos]

    def sigil_word(self, kind: str, allowed: frozenset[str], line: int, col: int) -> Token:
        self.advance()  # the sigil
        if self.peek() not in (_WORD_START if kind == "node" else _VAR - _DIGITS - {"_", "."}):
            what = "a host name" if kind == "node" else "a letter"
            raise self.error(f"expected {what} after {'@' if kind == 'node' else '$'}")
        name = self.take(allowed)
        return self.maybe_range(kind, name, line, col)

    def word(self, line: int, col: int) -> Token:
        name = self.take(_WORD)
        head, dot, tail = name.partition(".")
        if _DIGITS.issuperset(head) and (not dot or (tail and _DIGITS.issuperset(tail))):
            if self.peek() == "[":
                raise self.error("a name cannot be a number followed by '['")
            return Token("number", name, line, col)
        return self.maybe_range("ident", name, line, col)

    def maybe_range(self, kind: str, name: str, line: int, col: int) -> Token:
        if self.peek() != "[":
            return Token(kind, name, line, col)
        close = self.text.find("]", self.pos)
        newline = self.text.find("\n", self.pos)
        if close < 0 or (0 <= newline < close):
            raise self.error("unterminated '[' (a range ends with ']' on the same line)")
        body_col = self.col() + 1
        body = self.text[self.pos + 1 : close]
        self.pos = close + 1
        parts = _range_parts(body, line, body_col, self.source)
        suffix = ""
        if kind != "var" and self.peek() in _WORD_START | {"."}:
            suffix = self.take(_WORD)
        return Token(kind, name, line, col, tuple(f"{name}{p}{suffix}" for p in parts))

    def string(self, line: int, col: int) -> Token:
        self.advance()  # opening quote
        chars: list[str] = []
        while True:
            char = self.peek()
            if char in ("", "\n"):
                raise ScriptError("unterminated string", line, col, self.source)
            self.advance()
            if char == '"':
                return Token("string", "".join(chars), line, col)
            if char == "\\":
                escaped = self.peek()
                if escaped not in _ESCAPES:
                    raise self.error(f"unknown escape '\\{escaped}' in a string", self.pos - 1)
                chars.append(_ESCAPES[escaped])
                self.advance()
            else:
                chars.append(char)


def _range_parts(body: str, line: int, col: int, source: str) -> list[str]:
    """Expand the inside of ``[...]``; ``col`` is the column of its first character."""
    out: dict[str, None] = {}
    offset = 0
    for raw in body.split(","):
        part_col = col + offset + len(raw) - len(raw.lstrip())
        offset += len(raw) + 1
        part = raw.strip()
        if not part:
            raise ScriptError("empty part in a range", line, part_col, source)
        low, dots, high = part.partition("..")
        if not dots:
            if not _WORD.issuperset(part) or part[0] not in _WORD_START:
                raise ScriptError(f"invalid range part {part!r}", line, part_col, source)
            out[part] = None
            continue
        low, high = low.strip(), high.strip()
        if not (low and high and _DIGITS.issuperset(low) and _DIGITS.issuperset(high)):
            raise ScriptError(
                f"invalid range part {part!r} (expected number..number)", line, part_col, source
            )
        start, stop = int(low), int(high)
        if abs(stop - start) + 1 + len(out) > MAX_RANGE:
            raise ScriptError(f"range {part!r} is too large", line, part_col, source)
        step = 1 if stop >= start else -1
        for value in range(start, stop + step, step):
            out[str(value).zfill(len(low))] = None
    return list(out)


def tokenize(text: str, source: str = "<script>") -> list[Token]:
    """The tokens of ``text``, ending with an ``eof`` token."""
    return _Lexer(text, source).run()
