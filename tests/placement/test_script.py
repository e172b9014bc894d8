"""btrpsl-style scripts: tokens, sets, constraints and every error path."""

import re

import pytest

from dvms.placement.script import ScriptError, parse_script
from dvms.placement.script_lexer import MAX_RANGE, tokenize
from dvms.placement.spec import ConstraintSpec


def one(text):
    """The single constraint a script produces."""
    (constraint,) = parse_script(text).constraints
    return constraint


def var(text, name="x"):
    return parse_script(text).variables[name]


# ------------------------------------------------------------------------ tokens


def test_tokens_carry_positions_and_kinds():
    tokens = tokenize('$a = {web-1, @n.b}; // c\n/* x\n */ >>spread("s\\"q", 2.5)')
    assert [(t.kind, t.text, t.line, t.column) for t in tokens] == [
        ("var", "a", 1, 1),
        ("op", "=", 1, 4),
        ("op", "{", 1, 6),
        ("ident", "web-1", 1, 7),
        ("op", ",", 1, 12),
        ("node", "n.b", 1, 14),
        ("op", "}", 1, 18),
        ("op", ";", 1, 19),
        ("op", ">>", 3, 5),
        ("ident", "spread", 3, 7),
        ("op", "(", 3, 13),
        ("string", 's"q', 3, 14),
        ("op", ",", 3, 20),
        ("number", "2.5", 3, 22),
        ("op", ")", 3, 25),
        ("eof", "", 3, 26),
    ]


def test_trailing_dash_and_dot_are_not_part_of_a_name():
    assert [t.text for t in tokenize("web1-{x}")][:2] == ["web1", "-"]
    assert [t.text for t in tokenize("@n1- x")][:3] == ["n1", "-", "x"]
    assert [t.text for t in tokenize("@n1-x")][:1] == ["n1-x"]
    with pytest.raises(ScriptError, match=r"1:4: unexpected character '\.'"):
        tokenize("@n1. ")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("VM[1..4]", ("VM1", "VM2", "VM3", "VM4")),
        ("VM[3..1]", ("VM3", "VM2", "VM1")),  # descending, as in btrpsl
        ("VM[08..10]", ("VM08", "VM09", "VM10")),  # padded to the width written
        ("VM[8..10]", ("VM8", "VM9", "VM10")),
        ("VM[1, 3, 2..3, a]", ("VM1", "VM3", "VM2", "VMa")),  # order kept, repeats dropped
        ("@helios-[1..2].sophia.fr", ("helios-1.sophia.fr", "helios-2.sophia.fr")),
        ("@srv-[1..2,frontend]", ("srv-1", "srv-2", "srv-frontend")),
        ("$R[1..2]", ("R1", "R2")),
    ],
)
def test_range_tokens(text, names):
    assert tokenize(text)[0].names == names


# ------------------------------------------------------------------ expressions


def test_sets_unions_differences_and_order():
    assert var("$x = {b, a, b};") == ("b", "a")
    assert var("$x = VM[1..4] - {VM2} + VM1 + VM9;") == ("VM1", "VM3", "VM4", "VM9")
    assert var("$x = VM[1..4] - (VM[1..3] - VM2);") == ("VM2", "VM4")
    assert var("$x = @n[1..2] + @n3;") == ("n1", "n2", "n3")
    assert var("$x = web1;") == "web1"
    assert var("$x = {};") == ()
    assert var("$x = {} + VM1;") == ("VM1",)
    assert var("$x = {VM1} - VM1;") == ()
    assert var('$x = "cpu";') == "cpu"
    assert var("$x = 12;") == 12


def test_dash_in_names_and_as_difference():
    assert var("$a = VM[1..3]; $x = $a-VM1;") == ("VM2", "VM3")
    assert var("$x = VM[1..3]-VM2;") == ("VM1", "VM3")
    assert var("$x = web2-web1;") == "web2-web1"
    assert var("$x = web2 - web1;") == ("web2",)


def test_variables_nesting_and_families():
    text = "$R1 = @a[1..2]; $R2 = {@b}; $x = $R[1..2]; $y = {$R1, {}, $R2}; $R1 += @c;"
    result = parse_script(text)
    assert result.variables["x"] == (("a1", "a2"), ("b",))
    assert result.variables["y"] == (("a1", "a2"), (), ("b",))
    assert result.variables["R1"] == ("a1", "a2", "c")
    assert var("$x = VM[1..3]; $x -= VM2;") == ("VM1", "VM3")


def test_mentions_are_recorded_in_first_mention_order():
    result = parse_script("$a = {w2};\n$h = @n1;\nspread({w1, w2} + $a);")
    assert result.vms == {"w2": (1, 7), "w1": (3, 9)}
    assert result.nodes == {"n1": (2, 6)}


def test_templates_and_me():
    result = parse_script(
        'namespace app;\nVM[1..2] : small<clone, boot=7, disk="d", os=linux>;\n'
        "@n1 : big;\n$x = $me + VM3;\nspread($me);"
    )
    assert result.namespace == "app"
    assert result.variables["x"] == ("VM1", "VM2", "VM3")
    small = result.templates["VM1"]
    assert (small.template, small.kind, small.where) == ("small", "vm", (2, 1))
    assert small.options == (("clone", True), ("boot", 7), ("disk", "d"), ("os", "linux"))
    assert result.templates["n1"].kind == "node"
    assert result.constraints[0].vms == ("VM1", "VM2")
    assert parse_script("{a, b[1..2]} : t;").templates.keys() == {"a", "b1", "b2"}


# ------------------------------------------------------------------ constraints


def test_every_constraint_kind():
    text = """
    ban(VM1, @n1);
    fence({VM1, VM2}, @n[1..2]);
    spread(VM[1..3]);
    gather(VM1);
    lonely(VM1);
    among(VM1, {@n[1..2], {@n3}});
    root(VM1);
    preserve(VM1, "mem", 512);
    resourceCapacity(@n1, "cpu", 8);
    runningCapacity(@n[1..2], 4);
    capacity(@n1, 2);
    running(VM1);
    ready(VM2);
    """
    got = [(c.kind, c.continuous) for c in parse_script(text).constraints]
    assert got == [
        ("ban", True),
        ("fence", True),
        ("spread", True),
        ("gather", True),
        ("lonely", True),
        ("among", True),
        ("root", True),
        ("preserve", False),
        ("resourcecapacity", True),
        ("runningcapacity", False),
        ("runningcapacity", False),
        ("running", False),
        ("ready", False),
    ]


def test_constraint_fields_and_where():
    assert one("\n  fence(VM[1..2], {@a, @b});") == ConstraintSpec(
        "fence", vms=("VM1", "VM2"), hosts=("a", "b"), where=(2, 3)
    )
    assert one("among(VM1, {@n[1..2], {@m}});").groups == (("n1", "n2"), ("m",))
    c = one('resourceCapacity({@a, @b}, "cpu", 16);')
    assert (c.hosts, c.resource, c.amount) == (("a", "b"), "cpu", 16)
    c = one('preserve(VM1, "mem", 0);')
    assert (c.vms, c.resource, c.amount) == (("VM1",), "mem", 0)


def test_discrete_and_soft_markers():
    c = one(">>ban(VM1, @n1);")
    assert (c.continuous, c.soft, c.where) == (False, False, (1, 3))
    c = one('>>preserve(VM1, "mem", 1);')  # already discrete: accepted
    assert c.continuous is False
    c = one("prefer spread(VM[1..2]);")
    assert (c.soft, c.weight, c.continuous, c.where) == (True, 1.0, False, (1, 8))
    c = one("prefer(2.5) gather(VM1);")
    assert (c.kind, c.soft, c.weight) == ("gather", True, 2.5)
    c = one("prefer (3) fence(VM1, @a);")
    assert (c.kind, c.weight) == ("fence", 3.0)


def test_keywords_are_plain_names_elsewhere():
    assert var("$x = {prefer, namespace, import};") == ("prefer", "namespace", "import")
    assert "prefer" in parse_script("prefer : tiny;").templates


def test_the_plasma_example_from_seed_004():
    text = """
    $R1 = {@WN1, @WN2, @WN3, @WN4};
    $R2 = @WN[5..8];
    $R3 = @WN[9..11] + {@SN1};
    $small = {$R3};
    $medium = $R[1..3];
    $T1 = {VM1, VM2, VM3};
    $T2 = VM[4..7];
    $T3 = VM[8..9];
    $ALL_VMS = $T1 + $T2 + $T3;
    ban($ALL_VMS, {@SN1});
    fence($T2, $R2 + $R3);
    spread($T1);
    among($T3, $small);
    among($T3, $medium);
    """
    result = parse_script(text)
    assert [c.kind for c in result.constraints] == ["ban", "fence", "spread", "among", "among"]
    assert result.constraints[0].vms == tuple(f"VM{i}" for i in range(1, 10))
    assert result.constraints[4].groups[1] == ("WN5", "WN6", "WN7", "WN8")
    assert len(result.nodes) == 12


# ----------------------------------------------------------------------- errors

ERRORS = [
    # lexer
    ("spread(VM1); /* open", 1, 14, "unterminated '/\\*' comment"),
    ("$x = VM1 ? VM2;", 1, 10, "unexpected character '\\?'"),
    ("ban(VM1, @ );", 1, 11, "expected a host name after @"),
    ("$1 = VM1;", 1, 2, "expected a letter after \\$"),
    ("$x = 12[1..2];", 1, 8, "a name cannot be a number followed by '\\['"),
    ("$x = VM[1..2;\n", 1, 8, "unterminated '\\[' \\(a range ends with '\\]' on the same line"),
    ("$x = VM[1,,2];", 1, 11, "empty part in a range"),
    ("$x = VM[1, a b];", 1, 12, "invalid range part 'a b'"),
    ("$x = VM[1..x];", 1, 9, "invalid range part '1..x' \\(expected number..number\\)"),
    (f"$x = VM[0..{MAX_RANGE}];", 1, 9, "range '0..100000' is too large"),
    ('$x = "abc;', 1, 6, "unterminated string"),
    ('$x = "ab\nc";', 1, 6, "unterminated string"),
    ('$x = "a\\qb";', 1, 8, "unknown escape '\\\\q'"),
    # statements
    ("namespace ;", 1, 11, "expected a namespace name, got ';'"),
    ("namespace a b;", 1, 13, "expected ';' after the namespace name, got name b"),
    ("spread(VM1);\nnamespace a;", 2, 1, "namespace must be the first statement"),
    ("import a.b;", 1, 1, "import is not supported"),
    ("export $x to *;", 1, 1, "export is not supported"),
    ("for $x in $y { }", 1, 1, "for loops are not supported"),
    ("if 1 { }", 1, 1, "if statements are not supported"),
    ("x = VM1;", 1, 1, "a variable name starts with '\\$': write \\$x = \\.\\.\\."),
    ("12;", 1, 1, "expected a statement .* got number 12"),
    ("; spread(VM1);", 1, 1, "expected a statement"),
    # variables
    ("$x VM1;", 1, 4, "expected '=' after \\$x, got name VM1"),
    ("$x = VM1", 1, 9, "expected ';' after the value of \\$x, got the end of the script"),
    ('$x = VM1 "s";', 1, 10, "expected ';' after the value of \\$x, got string 's'"),
    ("$x = $y;", 1, 6, "undefined variable \\$y"),
    ("$x += VM1;", 1, 1, "undefined variable \\$x"),
    ("$a1 = VM1; $x = $a[1..2];", 1, 17, "undefined variable \\$a2"),
    ("$me = VM1;", 1, 1, "\\$me is read-only"),
    ("$R[1..2] = VM1;", 1, 1, "assigning to a family of variables is not supported"),
    # expressions
    ("$x = ;", 1, 6, "expected a value \\(a VM name, an @node, a \\$variable"),
    ("$x = VM1 * VM2;", 1, 10, "operator '\\*' is not supported"),
    ("$x = #VM1;", 1, 6, "operator '#' is not supported"),
    ("$x = (VM1;", 1, 10, "expected '\\)' to close '\\(', got ';'"),
    ("$x = {VM1 VM2};", 1, 11, "expected '}' to close the set \\(or ',' between items\\)"),
    ("$x = {VM1, 3};", 1, 12, "a set holds VMs, @nodes or sets, not a number"),
    ("$x = {VM1, @n1};", 1, 12, "a set cannot mix VMs and @nodes"),
    ("$x = {VM1, {VM2}};", 1, 12, "a set cannot mix VMs and set<vm> values"),
    ("$x = 3 + VM1;", 1, 8, "'\\+' works on sets, not on a number"),
    ('$x = VM1 - "a";', 1, 10, "'-' works on sets, not on a string"),
    ("$x = VM1 - @n1;", 1, 10, "cannot subtract VMs and @nodes"),
    ("$x = VM1; $x += @n1;", 1, 14, "cannot unite VMs and @nodes"),
    # declarations
    ("@n1 spread(VM1);", 1, 5, "expected ':' in a template declaration"),
    ("VM[1..2] : ;", 1, 12, "expected a template name, got ';'"),
    ("VM1 : t<=3>;", 1, 9, "expected a template option name, got '='"),
    ("VM1 : t<a=;>;", 1, 11, "expected a number, a string or a name, got ';'"),
    ("VM1 : t<a b>;", 1, 11, "expected '>' to close the template options"),
    ("VM1 : t", 1, 8, "expected ';' after the template declaration"),
    ("VM1 : t; {VM1} : u;", 1, 11, "`VM1` is already declared at 1:1"),
    ("{VM1, $x} : t;", 1, 7, "expected a VM name or an @node to declare, got variable \\$x"),
    ("{VM1 VM2} : t;", 1, 6, "expected '}' to close the set of declared names"),
    # constraints
    (">> $x;", 1, 4, "expected a constraint name, got variable \\$x"),
    ("spred(VM1);", 1, 1, "unknown constraint 'spred' \\(known: ban, fence, spread"),
    ("latency(VM1, {{@a}});", 1, 1, "not supported by dvms: use among"),
    (
        "split({{VM1}});",
        1,
        1,
        "'split' is not supported by dvms: it is read from BtrPlace instances only",
    ),
    ("spread VM1;", 1, 8, "expected '\\(' after the constraint name spread, got name VM1"),
    ("spread(VM1;", 1, 11, "expected '\\)' to close the arguments of spread"),
    ("spread(VM1)", 1, 12, "expected ';' after spread\\(...\\), got the end of the script"),
    ("spread(VM1, VM2);", 1, 1, "spread takes 1 argument\\(s\\), spread\\(vms\\), got 2"),
    ("ban(VM1);", 1, 1, "ban takes 2 argument\\(s\\), ban\\(vms, hosts\\), got 1"),
    ("spread(@n1);", 1, 8, "argument 1 of spread must be a VM or a set of VMs, got node"),
    ("ban(VM1, VM2);", 1, 10, "argument 2 of ban must be a @node or a set of @nodes, got vm"),
    ("ban(VM1, {{@a}});", 1, 10, "got set<set<node>>"),
    ("spread({});", 1, 8, "argument 1 of spread is an empty set"),
    ("spread(VM1 - VM1);", 1, 8, "argument 1 of spread is an empty set"),
    ("among(VM1, {@a, @b});", 1, 12, "must be a set of @node sets .* got set<node>"),
    ("among(VM1, {});", 1, 12, "must be a set of @node sets .* got empty set"),
    ("among(VM1, {{@a}, {@a, @b}});", 1, 12, "host 'a' is in group 1 and group 2"),
    ("among(VM1, {{}, {@b}});", 1, 12, "among: group 1 is empty"),
    ("preserve(VM1, 3, 3);", 1, 15, "argument 2 of preserve must be a resource name"),
    ('preserve(VM1, "", 3);', 1, 15, "must be a resource name"),
    ('preserve(VM1, "m", "3");', 1, 20, "argument 3 of preserve must be an integer >= 0, got '3'"),
    ('preserve(VM1, "m", 1.5);', 1, 20, "must be an integer >= 0, got 1.5"),
    ("runningCapacity(@n, VM1);", 1, 21, "argument 2 of runningCapacity must be an integer"),
    (">>root(VM1);", 1, 3, "root has no discrete mode"),
    ("prefer ban(VM1, @a);", 1, 8, "ban has no soft form \\(only fence, gather, spread do\\)"),
    ("prefer >>spread(VM1);", 1, 8, "a preference is scored on the final placement: drop '>>'"),
    ("prefer(0) spread(VM1);", 1, 8, "expected a weight > 0, got number 0"),
    ("prefer(x) spread(VM1);", 1, 8, "expected a weight > 0, got name x"),
    ("prefer(2 spread(VM1);", 1, 10, "expected '\\)' after the weight"),
]


@pytest.mark.parametrize(("text", "line", "column", "problem"), ERRORS)
def test_errors_name_line_column_and_problem(text, line, column, problem):
    with pytest.raises(ScriptError) as info:
        parse_script(text, source="t.btrp")
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert re.search(problem, error.problem), str(error)
    assert str(error) == f"t.btrp:{line}:{column}: {error.problem}"


def test_errors_on_later_lines_count_lines_and_columns():
    text = "// header\n$a = VM[1..3];\n\n   spread($a + @n1);\n"
    with pytest.raises(ScriptError, match=r"^<script>:4:14: cannot unite VMs and @nodes"):
        parse_script(text)


def test_parse_script_needs_a_string():
    with pytest.raises(TypeError, match="needs a string"):
        parse_script(b"spread(VM1);")  # type: ignore[arg-type]


def test_empty_script_is_fine():
    result = parse_script("  // nothing\n")
    assert result.constraints == () and result.vms == {} and result.namespace is None
