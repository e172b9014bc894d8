"""VmSpec -> libvirt domain XML, with validated names and escaped values.

The document is built with ``xml.etree.ElementTree``, never by string formatting, so every
value (paths, kernel command line, tags) is escaped by the serializer. Names are checked
first with the project-wide rule of ``dvms.names``: a VM or namespace name with XML or
shell metacharacters is refused with ``InvalidSpec`` before anything reaches libvirt.

Host-side choices that are not part of the user's spec (domain type, emulator, where the
serial console is logged, which bridge a NIC joins) come from ``DomainConfig``.
"""

from __future__ import annotations

import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from dvms.hypervisor.errors import InvalidSpec
from dvms.names import InvalidName, validate_namespace_name, validate_vm_name, vm_key
from dvms.placement.spec import VmSpec

__all__ = [
    "METADATA_NS",
    "DomainConfig",
    "GuestSettings",
    "check_bridge_name",
    "check_namespace_name",
    "check_vm_name",
    "domain_xml",
    "parse_ha",
    "parse_metadata",
    "profile_for_test_uri",
    "vm_uuid",
]

#: XML namespace of dvms' <metadata> element (namespace, tags) in the domain definition.
METADATA_NS = "https://dvms.invalid/xmlns/vm/1"

#: Linux interface names: at most 15 bytes, no '/', no whitespace, not "." or "..".
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")


def check_vm_name(name: object) -> str:
    """Return ``name`` if ``dvms.names.validate_vm_name`` accepts it, else ``InvalidSpec``.

    The same rule as the CLI and the vjob parser: 1-64 of ``A-Za-z0-9_.-``, not starting
    with ``-`` or ``.``, not an integer, not ``all``; so XML and shell metacharacters
    never reach a domain definition.
    """
    try:
        return validate_vm_name(name)
    except InvalidName as exc:
        raise InvalidSpec(str(exc), vm=name if isinstance(name, str) else "") from None


def check_namespace_name(name: object) -> str:
    """Namespaces follow ``dvms.names``; the empty string is the default namespace."""
    if name == "":
        return ""
    try:
        return validate_namespace_name(name)
    except InvalidName as exc:
        raise InvalidSpec(str(exc)) from None


def check_bridge_name(name: str) -> str:
    """A Linux interface name libvirt can put a tap on."""
    if not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidSpec(f"invalid bridge name {name!r}: 1-15 of [A-Za-z0-9_.:-]")
    return name


def vm_uuid(spec: VmSpec) -> str:
    """A stable UUID per (namespace, name): the same VM gets the same UUID on every host.

    uuid5 of a dvms-specific namespace, so it never equals the test driver's built-in
    ``test`` domain UUID.
    """
    return str(
        uuidlib.uuid5(
            uuidlib.UUID("4f6d2b8e-3b0a-5c57-9a56-6476d7d5a001"), spec.namespace + "/" + spec.name
        )
    )


def _default_bridge(spec: VmSpec, network: str) -> str:
    # Lazy import: the network package is optional for plain domain XML users.
    from dvms.hypervisor.net.naming import bridge_name, namespace_key

    return bridge_name(namespace_key(spec.namespace or "default"))


@dataclass(frozen=True, slots=True)
class DomainConfig:
    """Host-side parts of a domain definition.

    - ``domain_type``: libvirt ``<domain type>``; ``"qemu"`` = TCG (the only type that boots
      a Linux guest on this machine's KVM-PVM), ``"kvm"``, or ``"test"``
      for the test:/// driver. Default ``"qemu"``.
    - ``arch`` / ``machine``: guest architecture and machine type; defaults ``x86_64`` /
      ``None`` (libvirt picks its default machine, ``pc`` for QEMU 7.2).
    - ``cpu_model``: ``<cpu><model>`` for TCG guests; default ``qemu64``. None = omitted.
    - ``emulator``: path to the QEMU binary; None lets libvirt choose.
    - ``serial_log_dir``: when set, the serial console is appended to
      ``<dir>/<name>.log`` (append='on', so a migrated guest keeps one log); else a pty.
    - ``tb_cache_mib``: TCG translation-block cache size (MiB); None = QEMU's default.
      16 MiB keeps a 96-128 MiB guest at ~157 MB RSS (measured here).
    - ``nic_model``: NIC device model; default ``virtio``.
    - ``bridge_for``: which host bridge a VM's network ``n`` joins; default: the
      namespace bridge of ``dvms.hypervisor.net`` for the VM's namespace.
    - ``graphics``: add a VNC display (default False: headless).
    """

    domain_type: str = "qemu"
    arch: str = "x86_64"
    machine: str | None = None
    cpu_model: str | None = "qemu64"
    emulator: str | None = None
    serial_log_dir: str | None = None
    tb_cache_mib: int | None = None
    nic_model: str = "virtio"
    bridge_for: Callable[[VmSpec, str], str] = _default_bridge
    graphics: bool = False


@dataclass(frozen=True, slots=True)
class GuestSettings:
    """The daemon's ``[guests]`` table: how a node's real (QEMU) hypervisor defines the
    VMs it creates. Unused on ``test:///`` hosts.

    - ``console_dir``: directory where each VM's serial console is appended to
      ``<namespace>:<name>.log`` (on every host the VM visits: a shared or identical
      path keeps one log across migrations); "" (default) = a pty, no log file.
    - ``tb_cache_mib``: TCG translation-block cache, MiB; 0 (default) = QEMU's own.
    - ``domain_type``: ``qemu`` (TCG, the default) or ``kvm``.
    """

    console_dir: str = ""
    tb_cache_mib: int = 0
    domain_type: str = "qemu"

    def __post_init__(self) -> None:
        if self.domain_type not in ("qemu", "kvm"):
            raise ValueError(f"domain_type must be qemu or kvm, not {self.domain_type!r}")
        if self.tb_cache_mib < 0:
            raise ValueError(f"tb_cache_mib must be >= 0, not {self.tb_cache_mib}")

    def domain_config(self) -> DomainConfig:
        return DomainConfig(
            domain_type=self.domain_type,
            serial_log_dir=self.console_dir or None,
            tb_cache_mib=self.tb_cache_mib or None,
        )


def profile_for_test_uri() -> DomainConfig:
    """The profile for ``test:///`` hosts: type 'test', no CPU model, no emulator."""
    return DomainConfig(domain_type="test", arch="i686", cpu_model=None)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _check_text(value: str, what: str, vm: str) -> str:
    # XML 1.0 cannot carry most control characters at all, escaped or not.
    if any((ord(c) < 0x20 and c not in "\t\n\r") or c in "\ufffe\uffff" for c in value):
        raise InvalidSpec(f"vm {vm!r}: {what} contains a control character", vm=vm)
    return value


def _os(dom: ET.Element, spec: VmSpec, cfg: DomainConfig) -> None:
    os_el = _sub(dom, "os")
    type_attrs = {"arch": cfg.arch}
    if cfg.machine:
        type_attrs["machine"] = cfg.machine
    _sub(os_el, "type", "hvm", **type_attrs)
    if spec.kernel:
        _sub(os_el, "kernel", _check_text(spec.kernel, "kernel path", spec.name))
        if spec.initrd:
            _sub(os_el, "initrd", _check_text(spec.initrd, "initrd path", spec.name))
        if spec.append:
            _sub(os_el, "cmdline", _check_text(spec.append, "kernel command line", spec.name))
    elif spec.initrd or spec.append:
        raise InvalidSpec(f"vm {spec.name!r}: initrd/append need a kernel", vm=spec.name)
    else:
        _sub(os_el, "boot", dev="hd")


def _devices(dom: ET.Element, spec: VmSpec, cfg: DomainConfig) -> None:
    dev = _sub(dom, "devices")
    if cfg.emulator:
        _sub(dev, "emulator", _check_text(cfg.emulator, "emulator path", spec.name))
    if spec.disk:
        disk = _sub(dev, "disk", type="file", device="disk")
        fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
        _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", file=_check_text(spec.disk, "disk path", spec.name))
        _sub(disk, "target", dev="vda", bus="virtio")
    if spec.cdrom:
        cdrom = _sub(dev, "disk", type="file", device="cdrom")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "source", file=_check_text(spec.cdrom, "cdrom path", spec.name))
        _sub(cdrom, "target", dev="sda", bus="sata")
        _sub(cdrom, "readonly")
    for network in spec.networks:
        _check_text(network, "network name", spec.name)
        iface = _sub(dev, "interface", type="bridge")
        _sub(iface, "source", bridge=check_bridge_name(cfg.bridge_for(spec, network)))
        _sub(iface, "model", type=cfg.nic_model)
    if cfg.serial_log_dir:
        serial = _sub(dev, "serial", type="file")
        path = f"{cfg.serial_log_dir.rstrip('/')}/{vm_key(spec.name, spec.namespace)}.log"
        _sub(serial, "source", path=_check_text(path, "serial log path", spec.name), append="on")
        _sub(serial, "target", port="0")
    else:
        serial = _sub(dev, "serial", type="pty")
        _sub(serial, "target", port="0")
    if cfg.graphics:
        _sub(dev, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    if cfg.domain_type != "test":
        _sub(dev, "memballoon", model="none")


def domain_xml(spec: VmSpec, cfg: DomainConfig | None = None) -> str:
    """The libvirt domain definition of ``spec``; raises ``InvalidSpec`` on bad input."""
    cfg = cfg or DomainConfig()
    check_vm_name(spec.name)
    check_namespace_name(spec.namespace)
    dom = ET.Element("domain", {"type": cfg.domain_type})
    _sub(dom, "name", vm_key(spec.name, spec.namespace))
    _sub(dom, "uuid", vm_uuid(spec))
    meta = _sub(dom, "metadata")
    vm_meta = ET.SubElement(meta, f"{{{METADATA_NS}}}vm", {"namespace": spec.namespace})
    for key, value in spec.tags:
        _check_text(key, "tag key", spec.name)
        _check_text(value, "tag value", spec.name)
        ET.SubElement(vm_meta, f"{{{METADATA_NS}}}tag", {"key": key, "value": value})
    policy = spec.ha_policy
    if policy is not None and policy.enabled:
        # the fencing token: a daemon that finds this copy at its start, or whose lease
        # ran out, compares this generation with its guardians' (docs/ha.md)
        gen = str(max(1, spec.ha_generation))
        ET.SubElement(vm_meta, f"{{{METADATA_NS}}}ha", {"generation": gen, "fence": policy.fence})
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    _os(dom, spec, cfg)
    if cfg.cpu_model and cfg.domain_type == "qemu":
        cpu = _sub(dom, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", cfg.cpu_model, fallback="allow")
    if cfg.tb_cache_mib and cfg.domain_type == "qemu":
        features = _sub(dom, "features")
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(cfg.tb_cache_mib), unit="MiB")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(dom, spec, cfg)
    ET.register_namespace("dvms", METADATA_NS)
    return ET.tostring(dom, encoding="unicode")


def parse_metadata(xml: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(namespace, tags) from a domain XML written by ``domain_xml``; ("", ()) if absent."""
    root = ET.fromstring(xml)
    vm_meta = root.find(f"metadata/{{{METADATA_NS}}}vm")
    if vm_meta is None:
        return "", ()
    tags = tuple(
        (t.get("key", ""), t.get("value", "")) for t in vm_meta.findall(f"{{{METADATA_NS}}}tag")
    )
    return vm_meta.get("namespace", ""), tags


def parse_ha(xml: str) -> tuple[int, str] | None:
    """(generation, fence action) of an HA copy from a domain XML written by
    ``domain_xml`` (``<dvms:ha>`` in its ``<dvms:vm>``); None for a VM without HA or an
    unreadable element."""
    root = ET.fromstring(xml)
    ha = root.find(f"metadata/{{{METADATA_NS}}}vm/{{{METADATA_NS}}}ha")
    if ha is None:
        return None
    try:
        gen = int(ha.get("generation", ""))
    except ValueError:
        return None
    fence = ha.get("fence", "destroy")
    return (gen, fence if fence in ("destroy", "pause") else "destroy") if gen >= 1 else None
