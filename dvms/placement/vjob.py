"""vjob files: VMs plus placement constraints, in TOML (format: docs/vjob.md).

::

    name = "shop"
    namespace = "prod"                      # optional

    [[vms]]
    name = "web[1-4]"                       # a range (dvms.ranges) or a single name
    vcpus = 2
    memory = 4096                           # MiB
    disk = "images/web.qcow2"               # "image" is a synonym
    networks = ["100", "lan"]
    coschedule = 3                          # minimega's per-VM fields
    schedule = "host1"
    colocate = "db1"
    ha = "restart"                          # high availability (docs/ha.md):
    ha_priority = "high"                    # high | medium | low
    ha_fence = "destroy"                    # destroy | pause

    [[constraints]]
    kind = "spread"
    vms = "web[1-4]"

    script = '''
    >>ban(web[1..4], {@n1});
    '''

``vjob_from_dict`` validates everything and returns a ``VjobSpec`` or raises
``VjobError`` naming the file, the key path (``vms[1].memory``, ``constraints[0].vms``,
``script:3:5``) and the problem. Nothing partial is ever returned. Constraints come out
in file order: the ``[[constraints]]`` tables first, then the script's statements.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvms.names import InvalidName, validate_host_name, validate_namespace_name, validate_vm_name
from dvms.placement.hapolicy import HA_KEYS, HaPolicyError, parse_policy
from dvms.placement.script import ScriptError, ScriptResult, parse_script
from dvms.placement.signatures import (
    SignatureError,
    check_groups,
    lookup,
    resolve_continuous,
)
from dvms.placement.spec import (
    DEFAULT_MEMORY_MIB,
    DEFAULT_VCPUS,
    ConstraintSpec,
    VjobSpec,
    VmSpec,
)
from dvms.ranges import RangeError, expand

__all__ = ["VjobError", "load_vjob", "vjob_from_dict"]

TOP_KEYS = ("name", "namespace", "description", "vms", "constraints", "script", "meta")
VM_KEYS = (
    "name",
    "vcpus",
    "memory",
    "disk",
    "image",
    "kernel",
    "initrd",
    "cdrom",
    "append",
    "networks",
    "schedule",
    "coschedule",
    "colocate",
    "tags",
    *HA_KEYS,
)
CONSTRAINT_KEYS = (
    "kind",
    "vms",
    "hosts",
    "groups",
    "resource",
    "amount",
    "continuous",
    "soft",
    "weight",
    "comment",
)


class VjobError(ValueError):
    """A vjob is malformed. ``where`` is the file, ``path`` the key path inside it."""

    def __init__(self, where: str, path: str, problem: str) -> None:
        super().__init__(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")
        self.where = where
        self.path = path
        self.problem = problem


class _Ctx:
    """Where we are, for error messages."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> VjobError:
        return VjobError(self.where, path, problem)


def load_vjob(path: str | Path) -> VjobSpec:
    """Read and validate a vjob TOML file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise VjobError(where, "", f"cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise VjobError(where, "", f"the file is not UTF-8 text: {exc.reason}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VjobError(where, "", f"invalid TOML: {exc}") from exc
    return vjob_from_dict(data, where=where)


def vjob_from_dict(d: Mapping[str, Any], *, where: str) -> VjobSpec:
    """Validate a parsed vjob table (e.g. the ``[vjob]`` part of a model file)."""
    ctx = _Ctx(where)
    if not isinstance(d, Mapping):
        raise ctx.fail("", f"a vjob must be a table, got {_type(d)}")
    _check_keys(ctx, "", d, TOP_KEYS)
    name = _name(ctx, "name", _required(ctx, "", d, "name", str), validate_namespace_name)
    namespace = ""
    if "namespace" in d:
        namespace = _name(ctx, "namespace", _typed(ctx, "namespace", d["namespace"], str),
                          validate_namespace_name)  # fmt: skip
    vms = _load_vms(ctx, d, namespace)
    known = {vm.name for vm in vms}
    constraints = _load_tables(ctx, d, known)
    if "script" in d:
        script = _typed(ctx, "script", d["script"], str)
        result = _parse(ctx, script)
        namespace = _script_namespace(ctx, namespace, result)
        constraints.extend(_script_constraints(ctx, result, known))
        if namespace and any(vm.namespace != namespace for vm in vms):
            vms = [_with_namespace(vm, namespace) for vm in vms]
    meta = _meta(ctx, d)
    return VjobSpec(
        name=name, vms=tuple(vms), constraints=tuple(constraints), namespace=namespace, meta=meta
    )


# ------------------------------------------------------------------------ helpers


def _type(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a float", bool: "a boolean"}
    if isinstance(value, Mapping | dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def _typed(ctx: _Ctx, path: str, value: object, kind: type) -> Any:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        wanted = _type(kind())
        raise ctx.fail(path, f"expected {wanted}, got {_type(value)} ({value!r})")
    return value


def _required(ctx: _Ctx, base: str, table: Mapping[str, Any], key: str, kind: type) -> Any:
    path = f"{base}.{key}" if base else key
    if key not in table:
        raise ctx.fail(path, "missing (required)")
    return _typed(ctx, path, table[key], kind)


def _check_keys(ctx: _Ctx, base: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            path = f"{base}.{key}" if base else str(key)
            if base and key in TOP_KEYS:
                hint = (
                    f"TOML puts every key after a [[table]] header into that table: move "
                    f"{key} = ... above the first [[...]] header; "
                )
            raise ctx.fail(path, f"unknown key ({hint}allowed: {', '.join(allowed)})")


def _name(ctx: _Ctx, path: str, value: str, rule: Any) -> str:
    try:
        return rule(value)
    except InvalidName as exc:
        raise ctx.fail(path, str(exc)) from None


def _expand(ctx: _Ctx, path: str, value: object, *, repeats_ok: bool = True) -> list[str]:
    """A range string or an array of range strings -> names, in order, each once."""
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]" if isinstance(value, list) else path
        text = _typed(ctx, item_path, item, str)
        try:
            names.extend(expand(text))
        except RangeError as exc:
            raise ctx.fail(item_path, str(exc)) from None
    seen: set[str] = set()
    for name in names:
        if name in seen and not repeats_ok:
            raise ctx.fail(path, f"`{name}` is specified twice in {value!r}")
        seen.add(name)
    return list(dict.fromkeys(names))


def _with_namespace(vm: VmSpec, namespace: str) -> VmSpec:
    fields = {slot: getattr(vm, slot) for slot in VmSpec.__slots__}
    fields["namespace"] = namespace
    return VmSpec(**fields)


def _meta(ctx: _Ctx, d: Mapping[str, Any]) -> dict[str, str]:
    meta: dict[str, str] = {}
    if "description" in d:
        meta["description"] = _typed(ctx, "description", d["description"], str)
    if "meta" in d:
        table = _typed(ctx, "meta", d["meta"], dict)
        for key, value in table.items():
            meta[key] = _typed(ctx, f"meta.{key}", value, str)
    return meta


# ---------------------------------------------------------------------------- VMs


def _load_vms(ctx: _Ctx, d: Mapping[str, Any], namespace: str) -> list[VmSpec]:
    entries = d.get("vms", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ctx.fail("vms", f"expected an array of tables ([[vms]]), got {_type(entries)}")
    if not entries:
        raise ctx.fail("vms", "a vjob needs at least one VM ([[vms]] with a name)")
    vms: list[VmSpec] = []
    origin: dict[str, str] = {}
    for index, entry in enumerate(entries):
        base = f"vms[{index}]"
        for vm in _load_vm_entry(ctx, base, entry, namespace):
            if vm.name in origin:
                raise ctx.fail(
                    f"{base}.name",
                    f"duplicate VM name `{vm.name}` (already defined by {origin[vm.name]})",
                )
            origin[vm.name] = f"{base}.name"
            vms.append(vm)
    _check_colocate(ctx, vms, origin)
    return vms


def _load_vm_entry(ctx: _Ctx, base: str, entry: Mapping[str, Any], namespace: str) -> list[VmSpec]:
    _check_keys(ctx, base, entry, VM_KEYS)
    text = _required(ctx, base, entry, "name", str)
    names = _expand(ctx, f"{base}.name", text, repeats_ok=False)
    if not names:
        raise ctx.fail(f"{base}.name", f"{text!r} names no VM")
    for name in names:
        _name(ctx, f"{base}.name", name, validate_vm_name)
    fields = _vm_fields(ctx, base, entry)
    return [VmSpec(name=name, namespace=namespace, **fields) for name in names]


def _positive(ctx: _Ctx, path: str, value: object, minimum: int) -> int:
    number = _typed(ctx, path, value, int)
    if number < minimum:
        raise ctx.fail(path, f"must be >= {minimum}, got {number}")
    return number


def _vm_fields(ctx: _Ctx, base: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    get = entry.get
    fields: dict[str, Any] = {
        "vcpus": _positive(ctx, f"{base}.vcpus", get("vcpus", DEFAULT_VCPUS), 1),
        "memory_mib": _positive(ctx, f"{base}.memory", get("memory", DEFAULT_MEMORY_MIB), 1),
        "coschedule": _positive(ctx, f"{base}.coschedule", get("coschedule", -1), -1),
    }
    if "disk" in entry and "image" in entry:
        raise ctx.fail(f"{base}.image", "give either disk or image (synonyms), not both")
    for key, target in (("disk", "disk"), ("image", "disk"), ("kernel", "kernel"),
                        ("initrd", "initrd"), ("cdrom", "cdrom"),
                        ("append", "append")):  # fmt: skip
        if key in entry:
            fields[target] = _typed(ctx, f"{base}.{key}", entry[key], str)
    networks = _typed(ctx, f"{base}.networks", get("networks", []), list)
    fields["networks"] = tuple(
        _typed(ctx, f"{base}.networks[{i}]", net, str) for i, net in enumerate(networks)
    )
    tags = _typed(ctx, f"{base}.tags", get("tags", {}), dict)
    fields["tags"] = tuple(
        sorted((k, _typed(ctx, f"{base}.tags.{k}", v, str)) for k, v in tags.items())
    )
    if "schedule" in entry and "colocate" in entry:
        raise ctx.fail(base, "cannot specify schedule and colocate in the same config")
    if "schedule" in entry:
        host = _typed(ctx, f"{base}.schedule", entry["schedule"], str)
        fields["schedule"] = _name(ctx, f"{base}.schedule", host, validate_host_name)
    if "colocate" in entry:
        target = _typed(ctx, f"{base}.colocate", entry["colocate"], str)
        fields["colocate"] = _name(ctx, f"{base}.colocate", target, validate_vm_name)
    if any(key in entry for key in HA_KEYS):
        try:
            policy = parse_policy(entry)
        except HaPolicyError as exc:
            key, _, problem = str(exc).partition(": ")
            raise ctx.fail(f"{base}.{key}", problem) from None
        if policy.enabled:
            fields["ha_policy"] = policy
    return fields


def _check_colocate(ctx: _Ctx, vms: list[VmSpec], origin: dict[str, str]) -> None:
    """Refuse self-colocation and colocate cycles among this vjob's VMs.

    A target outside the vjob is allowed: it may be a VM already running in the
    namespace (minimega resolves such targets to that VM's host).
    """
    follows = {vm.name: vm.colocate for vm in vms if vm.colocate}
    for start in follows:
        chain = [start]
        while (nxt := follows.get(chain[-1])) is not None:
            if nxt == chain[0]:
                path = f"{origin[start].removesuffix('.name')}.colocate"
                if len(chain) == 1:
                    raise ctx.fail(path, f"`{start}` cannot colocate with itself")
                cycle = " -> ".join([*chain, nxt])
                raise ctx.fail(path, f"colocate cycle: {cycle}")
            if nxt in chain:
                break  # a cycle not through start: reported when start is on it
            chain.append(nxt)


# -------------------------------------------------------------------- constraints


def _load_tables(ctx: _Ctx, d: Mapping[str, Any], known: set[str]) -> list[ConstraintSpec]:
    tables = d.get("constraints", [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ctx.fail(
            "constraints", f"expected an array of tables ([[constraints]]), got {_type(tables)}"
        )
    return [_load_table(ctx, f"constraints[{i}]", t, known) for i, t in enumerate(tables)]


def _load_table(ctx: _Ctx, base: str, table: Mapping[str, Any], known: set[str]) -> ConstraintSpec:
    _check_keys(ctx, base, table, CONSTRAINT_KEYS)
    kind = _required(ctx, base, table, "kind", str)
    try:
        sig = lookup(kind)
    except SignatureError as exc:
        raise ctx.fail(f"{base}.kind", str(exc)) from None
    for key in ("vms", "hosts", "groups", "resource", "amount"):
        if key in table and key not in sig.params:
            raise ctx.fail(f"{base}.{key}", f"does not apply to {sig.usage}")
        if key not in table and key in sig.params:
            raise ctx.fail(f"{base}.{key}", f"missing: {sig.usage} needs it")
    args: dict[str, Any] = {"kind": sig.kind}
    if "vms" in table:
        args["vms"] = _vm_set(ctx, f"{base}.vms", table["vms"], known)
    if "hosts" in table:
        args["hosts"] = _host_set(ctx, f"{base}.hosts", table["hosts"])
    if "groups" in table:
        args["groups"] = _groups(ctx, f"{base}.groups", table["groups"])
    if "resource" in table:
        args["resource"] = _typed(ctx, f"{base}.resource", table["resource"], str)
        if not args["resource"]:
            raise ctx.fail(f"{base}.resource", 'must name a resource (e.g. "cpu")')
    if "amount" in table:
        args["amount"] = _positive(ctx, f"{base}.amount", table["amount"], 0)
    args.update(_mode(ctx, base, table, sig))
    return ConstraintSpec(**args)


def _mode(ctx: _Ctx, base: str, table: Mapping[str, Any], sig: Any) -> dict[str, Any]:
    soft = _typed(ctx, f"{base}.soft", table.get("soft", False), bool)
    continuous = None
    if "continuous" in table:
        continuous = _typed(ctx, f"{base}.continuous", table["continuous"], bool)
    try:
        mode = resolve_continuous(sig, continuous=continuous, soft=soft)
    except SignatureError as exc:
        key = "soft" if soft and not sig.soft_ok else "continuous"
        raise ctx.fail(f"{base}.{key}", str(exc)) from None
    weight = 1.0
    if "weight" in table:
        if not soft:
            raise ctx.fail(f"{base}.weight", "a weight only applies to a soft constraint")
        raw = table["weight"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0:
            raise ctx.fail(f"{base}.weight", f"must be a number > 0, got {raw!r}")
        weight = float(raw)
    return {"continuous": mode, "soft": soft, "weight": weight}


def _vm_set(ctx: _Ctx, path: str, value: object, known: set[str]) -> tuple[str, ...]:
    names = _expand(ctx, path, value)
    if not names:
        raise ctx.fail(path, "must name at least one VM")
    for name in names:
        if name not in known:
            raise ctx.fail(path, f"unknown VM `{name}` (not declared in this vjob's [[vms]])")
    return tuple(names)


def _host_set(ctx: _Ctx, path: str, value: object) -> tuple[str, ...]:
    names = _expand(ctx, path, value)
    if not names:
        raise ctx.fail(path, "must name at least one host")
    for name in names:
        _name(ctx, path, name.removeprefix("@"), validate_host_name)
    return tuple(name.removeprefix("@") for name in names)


def _groups(ctx: _Ctx, path: str, value: object) -> tuple[tuple[str, ...], ...]:
    groups = _typed(ctx, path, value, list)
    result = tuple(_host_set(ctx, f"{path}[{i}]", g) for i, g in enumerate(groups))
    try:
        check_groups(result)
    except SignatureError as exc:
        raise ctx.fail(path, str(exc)) from None
    return result


# ------------------------------------------------------------------------- script


def _parse(ctx: _Ctx, script: str) -> ScriptResult:
    try:
        return parse_script(script, source="script")
    except ScriptError as exc:
        raise ctx.fail(f"script:{exc.line}:{exc.column}", exc.problem) from None


def _script_namespace(ctx: _Ctx, namespace: str, result: ScriptResult) -> str:
    if result.namespace is None:
        return namespace
    if namespace and result.namespace != namespace:
        raise ctx.fail(
            "script",
            f"the script's namespace `{result.namespace}` differs from the vjob's "
            f"namespace `{namespace}`",
        )
    return _name(ctx, "script", result.namespace, validate_namespace_name)


def _script_constraints(ctx: _Ctx, result: ScriptResult, known: set[str]) -> list[ConstraintSpec]:
    for name, template in result.templates.items():
        line, col = template.where
        raise ctx.fail(
            f"script:{line}:{col}",
            f"`{name}` is declared from a template in the script; declare the VMs of a "
            "vjob in [[vms]]",
        )
    for name, (line, col) in result.vms.items():
        if name not in known:
            raise ctx.fail(f"script:{line}:{col}", f"unknown VM `{name}` (not declared in [[vms]])")
        _name(ctx, f"script:{line}:{col}", name, validate_vm_name)
    for name, (line, col) in result.nodes.items():
        _name(ctx, f"script:{line}:{col}", name, validate_host_name)
    return list(result.constraints)
