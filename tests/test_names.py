"""The naming rule shared by vjobs, the CLI and the drivers (dvms/names.py)."""

import pytest

from dvms.names import (
    InvalidName,
    is_valid_vm_name,
    validate_host_name,
    validate_namespace_name,
    validate_vm_name,
)


@pytest.mark.parametrize(
    "name",
    ["web1", "web-1", "db_primary", "a.b.c", "_x", "1a", "0x10", "1e5", "Z", "a" * 64, "vm-01"],
)
def test_valid_vm_names(name):
    assert validate_vm_name(name) == name
    assert is_valid_vm_name(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("all", "invalid vm name, `all` is a reserved word"),
        ("0", "invalid vm name, `0` is an integer"),
        ("0042", "`0042` is an integer"),
        ("", "the name is empty"),
        ("a" * 65, "65 characters, at most 64"),
        ("a b", "character ' ' at position 2 is not allowed"),
        ("web<1>", "character '<' at position 4"),
        ("x;rm", "character ';' at position 2"),
        ("a$b", "character '\\$' at position 2"),
        ("a/b", "character '/' at position 2"),
        ("a'b", 'character "\'" at position 2'),
        ("wéb", "character 'é' at position 2"),
        ("-rf", "must start with a letter, a digit or '_', not '-'"),
        (".hidden", "not '.'"),
        ("..", "not '.'"),
        (None, "expected a string, got NoneType"),
        (7, "expected a string, got int"),
    ],
)
def test_invalid_vm_names(name, problem):
    with pytest.raises(InvalidName, match=problem):
        validate_vm_name(name)
    assert not is_valid_vm_name(name)


def test_namespace_names_follow_minimega_validname_but_may_be_integers():
    assert validate_namespace_name("prod-1.eu_west") == "prod-1.eu_west"
    assert validate_namespace_name("42") == "42"
    with pytest.raises(InvalidName, match="invalid namespace name `a b`"):
        validate_namespace_name("a b")
    with pytest.raises(InvalidName, match="namespace name: the name is empty"):
        validate_namespace_name("")


def test_host_names():
    long_host = "helios-12.sophia.grid5000.fr"
    assert validate_host_name(long_host) == long_host
    assert validate_host_name("a" * 253)
    with pytest.raises(InvalidName, match="at most 253"):
        validate_host_name("a" * 254)
    with pytest.raises(InvalidName, match="invalid host name `@n1`: character '@'"):
        validate_host_name("@n1")
