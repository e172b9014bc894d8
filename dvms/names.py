"""Name rules shared by vjob files, the CLI and the hypervisor drivers.

A VM name ends up in many places: libvirt domain names and XML, file names under the
image directory, shell command lines of helper tools, log lines and range expressions
(``web[1-4]``). The rule is therefore deliberately narrow:

- 1 to 64 characters from ``A-Z a-z 0-9 - _ .``;
- the first character is a letter, a digit or ``_`` (never ``-`` or ``.``, so a name is
  never read as a command-line option or a hidden / relative path such as ``..``);
- not purely an integer: minimega reads integer targets as VM *ids* and refuses such
  names with ``invalid vm name, `0` is an integer`` (minimega);
- not a reserved word: ``all`` (minimega's only reserved word, it means "every VM").

Namespace names follow minimega's ``validName``: one or more letters, digits, ``-``,
``_`` or ``.``, here also capped at 64 characters and without a leading ``-`` or ``.``.
Host names accept the same character set (DNS names plus ``_``) up to 253 characters.

Each validator returns the name unchanged when it is valid and raises ``InvalidName``
(a ``ValueError``) with a message naming the offending character and its position.
"""

from __future__ import annotations

__all__ = [
    "MAX_HOST_NAME",
    "MAX_NAME",
    "RESERVED_VM_NAMES",
    "InvalidName",
    "is_valid_namespace_name",
    "is_valid_vm_name",
    "validate_host_name",
    "validate_namespace_name",
    "validate_vm_name",
    "vm_key",
]

#: Longest VM or namespace name accepted.
MAX_NAME = 64
#: Longest host name accepted (the DNS limit).
MAX_HOST_NAME = 253
#: Names a VM may not take (minimega: ``all`` selects every VM).
RESERVED_VM_NAMES = frozenset({"all"})

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_FIRST = _ALLOWED - {"-", "."}


class InvalidName(ValueError):
    """A VM, namespace or host name breaks the naming rule; the message says how."""


def _check_chars(name: object, what: str, limit: int) -> str:
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} name: expected a string, got {type(name).__name__}")
    if not name:
        raise InvalidName(f"invalid {what} name: the name is empty")
    if len(name) > limit:
        raise InvalidName(
            f"invalid {what} name `{name[:20]}...`: {len(name)} characters, at most {limit}"
        )
    for pos, char in enumerate(name, start=1):
        if char not in _ALLOWED:
            raise InvalidName(
                f"invalid {what} name `{name}`: character {char!r} at position {pos} is not "
                "allowed (use letters, digits, '-', '_' and '.')"
            )
    if name[0] not in _FIRST:
        raise InvalidName(
            f"invalid {what} name `{name}`: it must start with a letter, a digit or '_', "
            f"not {name[0]!r}"
        )
    return name


def validate_vm_name(name: object) -> str:
    """Return ``name`` if it is a valid VM name, else raise ``InvalidName``."""
    checked = _check_chars(name, "vm", MAX_NAME)
    if checked in RESERVED_VM_NAMES:
        raise InvalidName(f"invalid vm name, `{checked}` is a reserved word")
    if checked.isdigit():
        raise InvalidName(f"invalid vm name, `{checked}` is an integer")
    return checked


def is_valid_vm_name(name: object) -> bool:
    """True when ``validate_vm_name`` would accept ``name``."""
    try:
        validate_vm_name(name)
    except InvalidName:
        return False
    return True


def validate_namespace_name(name: object) -> str:
    """Return ``name`` if it is a valid namespace name, else raise ``InvalidName``."""
    return _check_chars(name, "namespace", MAX_NAME)


def is_valid_namespace_name(name: object) -> bool:
    """True when ``validate_namespace_name`` would accept ``name``."""
    try:
        validate_namespace_name(name)
    except InvalidName:
        return False
    return True


def validate_host_name(name: object) -> str:
    """Return ``name`` if it is a plausible host name, else raise ``InvalidName``."""
    return _check_chars(name, "host", MAX_HOST_NAME)


def vm_key(name: str, namespace: str = "") -> str:
    """The name a hypervisor knows a VM by: ``NAMESPACE:NAME`` (``:`` is not allowed in
    VM or namespace names), or ``NAME`` outside namespaces. The same VM name may so
    exist in two namespaces on one host."""
    return f"{namespace}:{name}" if namespace else name
