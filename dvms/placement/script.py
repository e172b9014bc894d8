"""btrpsl-style constraint scripts: parse, evaluate, and return ``ConstraintSpec``s.

The language is the subset of BtrPlace's btrpsl that dvms
needs; the tokens are described in ``script_lexer.py``. Grammar::

    script      = [ "namespace" NAME ";" ] { statement } EOF
    statement   = VAR ( "=" | "+=" | "-=" ) expr ";"             (* variables *)
                | element_list ":" NAME [ "<" option { "," option } ">" ] ";"
                | [ "prefer" [ "(" NUMBER ")" ] ] [ ">>" ] NAME "(" expr { "," expr } ")" ";"
    element_list= IDENT | IDENT[...] | NODE | NODE[...] | "{" element_list { "," ... } "}"
    option      = NAME [ "=" ( NUMBER | STRING | NAME ) ]
    expr        = term { ( "+" | "-" ) term }                    (* union, difference *)
    term        = "(" expr ")" | "{" [ expr { "," expr } ] "}" | VAR | VAR[...]
                | IDENT | IDENT[...] | NODE | NODE[...] | NUMBER | STRING

Semantics (btrpsl's):

- a bare name is a VM, ``@name`` a node; sets are homogeneous (VMs, nodes, or sets of
  one kind); ``+`` is union (order of first appearance kept), ``-`` difference; a single
  element is accepted where a set is expected, an empty set is refused;
- ``VM[1..3]`` is ``{VM1, VM2, VM3}``; ``$R[1..3]`` is ``{$R1, $R2, $R3}``;
- ``x : tpl<opt, k=v>;`` declares VMs (or ``@`` nodes) from a template; the VMs so
  declared form the read-only set ``$me``;
- constraints are continuous when they support it; ``>>`` asks for the discrete form.

dvms additions: ``prefer spread(...)`` (and ``prefer(2.5) gather(...)`` with a weight)
marks a soft constraint, allowed for spread, gather and fence (``signatures.py``);
``capacity`` is accepted for ``runningCapacity``. Not supported (clear error): import,
export, for, if, decomposition, and the operators ``* / % # ^`` and comparisons.
Errors raise ``ScriptError`` with the line and column and what was expected; the first
error stops the parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dvms.placement.script_lexer import ScriptError, Token, tokenize
from dvms.placement.signatures import (
    Signature,
    SignatureError,
    check_groups,
    lookup,
    resolve_continuous,
)
from dvms.placement.spec import ConstraintSpec

__all__ = ["ScriptError", "ScriptResult", "Template", "parse_script"]

_UNSUPPORTED_STATEMENTS = {
    "import": "import is not supported: a vjob script stands alone",
    "export": "export is not supported: a vjob script stands alone",
    "for": "for loops are not supported",
    "if": "if statements are not supported",
}
_UNSUPPORTED_OPS = frozenset({"*", "/", "%", "#", "^", "!", "&", "|", "==", "!=",
                              "&&", "||", "..", "<", ">"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Elem:
    """One VM or node."""

    kind: str  # "vm" or "node"
    name: str


@dataclass(frozen=True, slots=True)
class SetV:
    """A homogeneous set; ``of`` is the element type ("" while empty)."""

    of: str
    items: tuple[Elem | SetV, ...]


Value = Elem | SetV | int | float | str


def type_name(value: Value) -> str:
    if isinstance(value, Elem):
        return value.kind
    if isinstance(value, SetV):
        return f"set<{value.of}>" if value.of else "empty set"
    if isinstance(value, str):
        return "string"
    return "number"


def _plain(value: Value) -> object:
    if isinstance(value, Elem):
        return value.name
    if isinstance(value, SetV):
        return tuple(_plain(item) for item in value.items)
    return value


@dataclass(frozen=True, slots=True)
class Template:
    """A ``x : template<options>;`` declaration."""

    template: str
    kind: str  # "vm" or "node"
    options: tuple[tuple[str, object], ...]
    where: tuple[int, int]


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What a script says.

    ``vms`` and ``nodes`` map every name the script mentions (nodes without ``@``) to
    the (line, column) of its first mention, in order of first mention. ``templates``
    maps each element declared from a template to its declaration. ``variables`` holds
    the final value of each variable as plain data (a name, a tuple of names, nested
    tuples, a number or a string).
    """

    constraints: tuple[ConstraintSpec, ...]
    vms: Mapping[str, tuple[int, int]]
    nodes: Mapping[str, tuple[int, int]]
    templates: Mapping[str, Template] = field(default_factory=dict)
    variables: Mapping[str, object] = field(default_factory=dict)
    namespace: str | None = None


def parse_script(text: str, *, source: str = "<script>") -> ScriptResult:
    """Parse and evaluate a script; raise ``ScriptError`` on the first problem."""
    if not isinstance(text, str):
        raise TypeError(f"parse_script() needs a string, got {type(text).__name__}")
    return _Parser(tokenize(text, source), source).run()


class _Parser:
    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.source = source
        self.vars: dict[str, Value] = {}
        self.vms: dict[str, tuple[int, int]] = {}
        self.nodes: dict[str, tuple[int, int]] = {}
        self.templates: dict[str, Template] = {}
        self.me: list[Elem] = []
        self.constraints: list[ConstraintSpec] = []
        self.namespace: str | None = None

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.tok
        if token.kind != "eof":
            self.index += 1
        return token

    def is_op(self, text: str, token: Token | None = None) -> bool:
        token = token or self.tok
        return token.kind == "op" and token.text == text

    def error(self, problem: str, token: Token | None = None) -> ScriptError:
        token = token or self.tok
        return ScriptError(problem, token.line, token.column, self.source)

    def expect_op(self, text: str, context: str) -> Token:
        if not self.is_op(text):
            raise self.error(f"expected '{text}' {context}, got {self.tok.describe()}")
        return self.next()

    def expect_name(self, what: str) -> Token:
        if self.tok.kind != "ident" or self.tok.names is not None:
            raise self.error(f"expected {what}, got {self.tok.describe()}")
        return self.next()

    # -- statements
    def run(self) -> ScriptResult:
        if self.tok.kind == "ident" and self.tok.text == "namespace":
            self.next()
            self.namespace = self.expect_name("a namespace name").text
            self.expect_op(";", "after the namespace name")
        while self.tok.kind != "eof":
            self.statement()
        return ScriptResult(
            constraints=tuple(self.constraints),
            vms=dict(self.vms),
            nodes=dict(self.nodes),
            templates=dict(self.templates),
            variables={name: _plain(value) for name, value in self.vars.items()},
            namespace=self.namespace,
        )

    def statement(self) -> None:
        token = self.tok
        if token.kind == "var":
            self.assignment()
        elif self.is_op(">>"):
            self.constraint(soft=False, weight=1.0)
        elif token.kind == "ident" and token.names is None and not self.is_op(":", self.peek()):
            self.keyword_or_constraint(token)
        elif token.kind in ("ident", "node") or self.is_op("{"):
            self.declaration()
        else:
            raise self.error(
                "expected a statement (a $variable assignment, a constraint such as "
                f"spread(...), or a template declaration), got {token.describe()}"
            )

    def keyword_or_constraint(self, token: Token) -> None:
        if token.text in _UNSUPPORTED_STATEMENTS:
            raise self.error(_UNSUPPORTED_STATEMENTS[token.text])
        if token.text == "namespace":
            raise self.error("namespace must be the first statement of the script")
        if self.is_op("=", self.peek()) or self.is_op("+=", self.peek()):
            raise self.error(f"a variable name starts with '$': write ${token.text} = ...")
        if token.text == "prefer":
            self.next()
            weight = 1.0
            if self.is_op("("):
                self.next()
                number = self.tok
                if number.kind != "number" or float(number.text) <= 0:
                    raise self.error(f"expected a weight > 0, got {number.describe()}")
                weight = float(self.next().text)
                self.expect_op(")", "after the weight")
            if self.is_op(">>"):
                raise self.error("a preference is scored on the final placement: drop '>>'")
            self.constraint(soft=True, weight=weight)
            return
        self.constraint(soft=False, weight=1.0)

    def assignment(self) -> None:
        target = self.next()
        if target.names is not None:
            raise self.error("assigning to a family of variables is not supported", target)
        if target.text == "me":
            raise self.error("$me is read-only (it holds the VMs declared by templates)", target)
        op = self.tok
        if not (self.is_op("=") or self.is_op("+=") or self.is_op("-=")):
            raise self.error(f"expected '=' after ${target.text}, got {op.describe()}")
        self.next()
        value = self.expr()
        if op.text != "=":
            if target.text not in self.vars:
                raise self.error(f"undefined variable ${target.text}", target)
            value = self.set_op(op, self.vars[target.text], value)
        self.expect_op(";", f"after the value of ${target.text}")
        self.vars[target.text] = value

    def declaration(self) -> None:
        elems = self.element_list()
        self.expect_op(":", "in a template declaration ('names : template;')")
        template = self.expect_name("a template name")
        options: list[tuple[str, object]] = []
        if self.is_op("<"):
            self.next()
            while True:
                options.append(self.option())
                if not self.is_op(","):
                    break
                self.next()
            self.expect_op(">", "to close the template options (or ',' between options)")
        self.expect_op(";", "after the template declaration")
        for token, elem in elems:
            if elem.name in self.templates:
                line, col = self.templates[elem.name].where
                raise self.error(f"`{elem.name}` is already declared at {line}:{col}", token)
            where = (token.line, token.column)
            self.templates[elem.name] = Template(template.text, elem.kind, tuple(options), where)
            if elem.kind == "vm":
                self.me.append(elem)

    def element_list(self) -> list[tuple[Token, Elem]]:
        token = self.tok
        if self.is_op("{"):
            self.next()
            elems = self.element_list()
            while self.is_op(","):
                self.next()
                elems.extend(self.element_list())
            self.expect_op("}", "to close the set of declared names (or ',')")
            return elems
        if token.kind in ("ident", "node"):
            self.next()
            return [(token, self.element(token, name)) for name in token.names or (token.text,)]
        raise self.error(f"expected a VM name or an @node to declare, got {token.describe()}")

    def option(self) -> tuple[str, object]:
        key = self.expect_name("a template option name").text
        if not self.is_op("="):
            return (key, True)
        self.next()
        value = self.next()
        if value.kind == "number":
            return (key, _number(value.text))
        if value.kind == "string" or (value.kind == "ident" and value.names is None):
            return (key, value.text)
        raise self.error(f"expected a number, a string or a name, got {value.describe()}", value)

    # -- constraints
    def constraint(self, *, soft: bool, weight: float) -> None:
        discrete = self.is_op(">>")
        if discrete:
            self.next()
        name = self.tok
        if name.kind != "ident" or name.names is not None:
            raise self.error(f"expected a constraint name, got {name.describe()}")
        try:
            sig = lookup(name.text)
        except SignatureError as exc:
            raise self.error(str(exc), name) from None
        self.next()
        self.expect_op("(", f"after the constraint name {name.text}")
        args: list[tuple[Token, Value]] = []
        if not self.is_op(")"):
            args.append((self.tok, self.expr()))
            while self.is_op(","):
                self.next()
                args.append((self.tok, self.expr()))
        self.expect_op(")", f"to close the arguments of {name.text} (or ',' between them)")
        self.expect_op(";", f"after {name.text}(...)")
        if len(args) != len(sig.params):
            raise self.error(
                f"{sig.spelling} takes {len(sig.params)} argument(s), {sig.usage}, got {len(args)}",
                name,
            )
        fields: dict[str, object] = {}
        for position, ((token, value), param) in enumerate(zip(args, sig.params, strict=True)):
            fields[param] = self.argument(sig, position + 1, param, token, value)
        try:
            continuous = resolve_continuous(sig, continuous=False if discrete else None, soft=soft)
        except SignatureError as exc:
            raise self.error(str(exc), name) from None
        spec = ConstraintSpec(
            kind=sig.kind,
            continuous=continuous,
            soft=soft,
            weight=weight,
            where=name.where,
            **fields,  # type: ignore[arg-type]
        )
        self.constraints.append(spec)

    def argument(self, sig: Signature, n: int, param: str, token: Token, value: Value) -> object:
        context = f"argument {n} of {sig.spelling}"
        if param in ("vms", "hosts"):
            kind = "vm" if param == "vms" else "node"
            word = "VM" if kind == "vm" else "@node"
            if isinstance(value, Elem) and value.kind == kind:
                return (value.name,)
            if isinstance(value, SetV) and value.of == kind:
                return tuple(item.name for item in value.items if isinstance(item, Elem))
            if isinstance(value, SetV) and not value.of:
                raise self.error(f"{context} is an empty set (it needs at least one {word})", token)
            raise self.error(
                f"{context} must be a {word} or a set of {word}s, got {type_name(value)}", token
            )
        if param == "groups":
            return self.groups(context, token, value)
        if param == "resource":
            if not isinstance(value, str) or not value:
                raise self.error(f'{context} must be a resource name such as "cpu"', token)
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(f"{context} must be an integer >= 0, got {value!r}", token)
        return value

    def groups(self, context: str, token: Token, value: Value) -> tuple[tuple[str, ...], ...]:
        if not (
            isinstance(value, SetV)
            and value.items
            and all(isinstance(g, SetV) and g.of in ("node", "") for g in value.items)
        ):
            raise self.error(
                f"{context} must be a set of @node sets such as {{@n[1..4], @n[5..8]}}, "
                f"got {type_name(value)}",
                token,
            )
        groups = tuple(
            tuple(e.name for e in g.items if isinstance(e, Elem))
            for g in value.items
            if isinstance(g, SetV)
        )
        try:
            check_groups(groups)
        except SignatureError as exc:
            raise self.error(str(exc), token) from None
        return groups

    # -- expressions
    def expr(self) -> Value:
        value = self.term()
        while self.is_op("+") or self.is_op("-"):
            op = self.next()
            value = self.set_op(op, value, self.term())
        if self.tok.kind == "op" and self.tok.text in _UNSUPPORTED_OPS - {"<", ">"}:
            raise self.error(f"operator '{self.tok.text}' is not supported in dvms scripts")
        return value

    def term(self) -> Value:
        token = self.tok
        if self.is_op("("):
            self.next()
            value = self.expr()
            self.expect_op(")", "to close '('")
            return value
        if self.is_op("{"):
            return self.set_literal()
        if token.kind == "var":
            self.next()
            return self.variable(token)
        if token.kind in ("ident", "node"):
            self.next()
            elems = [self.element(token, name) for name in token.names or (token.text,)]
            return elems[0] if token.names is None else SetV(elems[0].kind, tuple(elems))
        if token.kind in ("number", "string"):
            self.next()
            return _number(token.text) if token.kind == "number" else token.text
        if token.kind == "op" and token.text in _UNSUPPORTED_OPS:
            raise self.error(f"operator '{token.text}' is not supported in dvms scripts")
        raise self.error(
            "expected a value (a VM name, an @node, a $variable, a set {...}, a number or "
            f"a string), got {token.describe()}"
        )

    def set_literal(self) -> SetV:
        self.next()  # "{"
        items: list[tuple[Token, Value]] = []
        if not self.is_op("}"):
            items.append((self.tok, self.expr()))
            while self.is_op(","):
                self.next()
                items.append((self.tok, self.expr()))
        self.expect_op("}", "to close the set (or ',' between items)")
        return self.make_set(items)

    def variable(self, token: Token) -> Value:
        values: list[tuple[Token, Value]] = []
        for name in token.names or (token.text,):
            if name == "me":
                values.append((token, SetV("vm" if self.me else "", tuple(self.me))))
            elif name in self.vars:
                values.append((token, self.vars[name]))
            else:
                raise self.error(f"undefined variable ${name}", token)
        return values[0][1] if token.names is None else self.make_set(values)

    def element(self, token: Token, name: str) -> Elem:
        if token.kind == "node":
            self.nodes.setdefault(name, token.where)
            return Elem("node", name)
        self.vms.setdefault(name, token.where)
        return Elem("vm", name)

    def make_set(self, items: list[tuple[Token, Value]]) -> SetV:
        of = ""
        out: dict[Elem | SetV, None] = {}
        for token, value in items:
            if not isinstance(value, Elem | SetV):
                raise self.error(
                    f"a set holds VMs, @nodes or sets, not a {type_name(value)}", token
                )
            kind = value.kind if isinstance(value, Elem) else f"set<{value.of}>"
            if of and not _compatible(of, kind):
                raise self.error(f"a set cannot mix {_plural(of)} and {_plural(kind)}", token)
            if not of or of == "set<>":
                of = kind
            out[value] = None
        return SetV(of, tuple(out))

    def set_op(self, op: Token, left: Value, right: Value) -> SetV:
        verb = "unite" if op.text in ("+", "+=") else "subtract"
        sets = []
        for value in (left, right):
            if isinstance(value, Elem):
                value = SetV(value.kind, (value,))
            if not isinstance(value, SetV):
                raise self.error(f"'{op.text}' works on sets, not on a {type_name(value)}", op)
            sets.append(value)
        a, b = sets
        if a.of and b.of and a.of != b.of:
            raise self.error(f"cannot {verb} {_plural(a.of)} and {_plural(b.of)}", op)
        if verb == "unite":
            items = tuple(dict.fromkeys(a.items + b.items))
        else:
            drop = set(b.items)
            items = tuple(item for item in a.items if item not in drop)
        return SetV((a.of or b.of) if items else "", items)


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _compatible(have: str, kind: str) -> bool:
    """Can an item of type ``kind`` join a set whose items are of type ``have``?"""
    if have == kind:
        return True
    # An empty set ("set<>") fits in a set of sets of any kind, and vice versa.
    return have.startswith("set<") and kind.startswith("set<") and "set<>" in (have, kind)


def _plural(kind: str) -> str:
    words = {"vm": "VMs", "node": "@nodes"}
    return words.get(kind, f"{kind} values")
