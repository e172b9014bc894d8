"""Range expansion and compression (minimega.md §7, with the documented deviations)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvms.ranges import MAX_NAMES, MAX_VALUE, RangeError, compress, expand, natural_key

# Examples from minimega.md §7.1, then the deviations documented in dvms/ranges.py.
EXPAND_TABLE = [
    ("ccc[1-5]", ["ccc1", "ccc2", "ccc3", "ccc4", "ccc5"]),
    ("host[1,3,5]", ["host1", "host3", "host5"]),
    ("foo,bar[0-1],kn[1,2,3]", ["foo", "bar0", "bar1", "kn1", "kn2", "kn3"]),
    ("kn[008-011,100]", ["kn008", "kn009", "kn010", "kn011", "kn100"]),
    ("[1-3,100]", ["1", "2", "3", "100"]),
    ("[8-11]", ["8", "9", "10", "11"]),
    ("[3,1]", ["1", "3"]),  # sorted ascending whatever the written order
    ("n[1-3,2-4]", ["n1", "n2", "n3", "n4"]),  # de-duplicated inside a group
    ("a,a", ["a", "a"]),  # ... but not across items
    ("10", ["10"]),  # a bare number is a literal
    ("all", ["all"]),
    ("foo,", ["foo"]),  # one trailing empty item is dropped
    ("", []),
    ("   ", []),
    ("x[5-5]", ["x5"]),
    ("x[007]", ["x007"]),
    ("[0]", ["0"]),
    # Deviations: per-part padding, suffixes, whitespace.
    ("[1,02]", ["1", "02"]),  # minimega: 1, 2
    ("vm[01-03,5]", ["vm01", "vm02", "vm03", "vm5"]),  # minimega: vm1, vm2, vm3, vm5
    ("a[1,01]", ["a1", "a01"]),  # same value: narrower first
    ("x[98-101]", ["x98", "x99", "x100", "x101"]),
    ("x[098-101]", ["x098", "x099", "x100", "x101"]),
    ("x[001-10]", ["x001", "x002", "x003", "x004", "x005", "x006", "x007", "x008", "x009", "x010"]),
    ("foo[1-2].eth", ["foo1.eth", "foo2.eth"]),
    ("web[1-2], db ,c[ 1 , 3 ]", ["web1", "web2", "db", "c1", "c3"]),
    ("r1n[2-3]", ["r1n2", "r1n3"]),
]


@pytest.mark.parametrize(("text", "names"), EXPAND_TABLE)
def test_expand_table(text, names):
    assert expand(text) == names


EXPAND_ERRORS = [
    ("a[1[2]]", "nested '['", 4),
    ("a]", "unmatched ']'", 2),
    ("a[1-2]]", "unmatched ']'", 7),
    ("a[1", "unterminated '['", 2),
    ("a[1]b[2]", "more than one bracket group", 6),
    ("a[]", "empty range part", 3),
    ("a[1,]", "empty range part", 5),
    ("a[x]", "'x' is not a number", 3),
    ("a[1-x]", "'x' is not a number", 3),
    ("a[1-2-3]", "invalid subrange '1-2-3'", 3),
    ("a[-1-2]", "invalid subrange '-1-2'", 3),
    ("a[1-]", "invalid subrange '1-'", 3),
    ("a[5-3]", "descending subrange '5-3'", 3),
    ("a,,b", "empty item", 3),
    (",a", "empty item", 1),
    ("a, ,b", "empty item", 3),
    ("a[2147483648]", "value out of range: 2147483648", 3),
    ("a[0-2000000]", f"more than {MAX_NAMES} names", 3),
    ("a[²]", "'²' is not a number", 3),
]


@pytest.mark.parametrize(("text", "problem", "position"), EXPAND_ERRORS)
def test_expand_errors_name_problem_and_position(text, problem, position):
    with pytest.raises(RangeError, match=re.escape(problem)) as info:
        expand(text)
    assert info.value.position == position
    assert f"at char {position}" in str(info.value)
    assert repr(text) in str(info.value)


def test_expand_largest_value_is_accepted():
    assert expand("a[2147483647]") == ["a2147483647"]


def test_expand_refuses_non_strings():
    with pytest.raises(TypeError, match="needs a string"):
        expand(["a"])  # type: ignore[arg-type]


COMPRESS_TABLE = [
    (["n1", "n10"], "n[1,10]"),  # minimega loses n1
    (["n1", "n2", "n10", "n11"], "n[1-2,10-11]"),  # minimega: n[2,10-11]
    (["vm01", "vm02"], "vm[01-02]"),  # minimega: vm[1-2]
    (["foo1.eth", "foo2.eth"], "foo[1-2].eth"),
    (["mm1"], "mm1"),
    (["mm3", "mm1"], "mm[1,3]"),
    (["mm1", "mm2", "mm3", "mm1"], "mm[1-3]"),
    (["node0", "n0", "foo0", "n1"], "foo0,n[0-1],node0"),
    (["a9", "a10", "a11"], "a[9-11]"),
    (["a08", "a09", "a10"], "a[08-10]"),
    (["3", "1", "2"], "[1-3]"),
    (["r1n1", "r1n2", "r2n1", "r2n2"], "r1n[1-2],r2n[1-2]"),
    (["r1n5", "r2n5", "r3n5"], "r[1-3]n5"),
    (["x", "y"], "x,y"),
    (["a2147483647", "a2147483646", "a2147483648"], "a[2147483646-2147483647],a2147483648"),
    ([], ""),
]


@pytest.mark.parametrize(("names", "text"), COMPRESS_TABLE)
def test_compress_table(names, text):
    assert compress(names) == text
    assert expand(text) == sorted(set(names), key=natural_key)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty name"),
        ("a[1]", "containing '\\['"),
        ("a]", "containing '\\]'"),
        ("a,b", "containing ','"),
        (" a", "surrounding whitespace"),
    ],
)
def test_compress_refuses_names_it_cannot_write(name, problem):
    with pytest.raises(RangeError, match=problem):
        compress(["ok", name])


def test_natural_order():
    names = ["n10", "n2", "n1", "n01", "m", "n", "n1b", "n1a", "a10b2", "a9b10"]
    assert sorted(names, key=natural_key) == [
        "a9b10", "a10b2", "m", "n", "n1", "n1a", "n1b", "n01", "n2", "n10",
    ]  # fmt: skip


_number = st.one_of(
    st.integers(0, 130).map(str),
    st.integers(MAX_VALUE - 2, MAX_VALUE + 2).map(str),
    st.tuples(st.integers(0, 130), st.integers(1, 4)).map(lambda t: str(t[0]).zfill(t[1])),
)
_text = st.text(alphabet="abz-_.", min_size=1, max_size=3)
_name = st.lists(st.one_of(_text, _number), min_size=1, max_size=4).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_name, max_size=40))
def test_expand_inverts_compress(names):
    assert expand(compress(names)) == sorted(set(names), key=natural_key)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["web", "db-", "x.", ""]), _number), max_size=60))
def test_compress_of_dense_families_round_trips(pairs):
    names = [prefix + number for prefix, number in pairs]
    assert expand(compress(names)) == sorted(set(names), key=natural_key)


@settings(max_examples=100, deadline=None)
@given(st.lists(_name, min_size=1, max_size=40))
def test_compress_is_idempotent_through_expand(names):
    text = compress(names)
    assert compress(expand(text)) == text


def test_compress_refuses_non_strings():
    with pytest.raises(TypeError, match="needs strings, got int"):
        compress(["a", 1])  # type: ignore[list-item]
