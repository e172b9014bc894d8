"""Domain XML generation: structure, escaping of every value, hostile names refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from dvms.hypervisor.domxml import (
    DomainConfig,
    check_vm_name,
    domain_xml,
    parse_ha,
    parse_metadata,
    profile_for_test_uri,
    vm_uuid,
)
from dvms.hypervisor.errors import InvalidSpec
from dvms.partition.messages import LaunchVm
from dvms.placement.hapolicy import HaPolicy
from dvms.placement.spec import VmSpec

HOSTILE_NAMES = [
    "a<b",
    "a>b",
    "a&b",
    "x'y",
    'x"y',
    "vm;rm -rf /",
    "vm$(reboot)",
    "vm`id`",
    "a b",
    "a/b",
    "../etc",
    "-rf",
    ".hidden",
    "vm\n",
    "vm\x00",
    "",
    "é",
    "all",
    "123",
    "x" * 65,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_vm_names_are_refused_with_a_clear_error(name):
    spec = VmSpec(name=name) if name else None
    if spec is None:  # VmSpec itself refuses the empty name
        with pytest.raises(ValueError):
            VmSpec(name=name)
        return
    with pytest.raises(InvalidSpec) as err:
        domain_xml(spec)
    assert "invalid vm name" in str(err.value)


@pytest.mark.parametrize("name", ["web1", "a", "db-2.prod", "_x", "A_b-c.d", "1a", "x" * 64])
def test_ordinary_names_pass(name):
    assert check_vm_name(name) == name


def test_hostile_namespace_is_refused():
    with pytest.raises(InvalidSpec, match="namespace"):
        domain_xml(VmSpec(name="vm1", namespace="ns<script>"))


def test_every_value_is_escaped_and_round_trips():
    nasty = "console=ttyS0 x=\"q\" y='s' <b>&amp; </domain><evil/>"
    spec = VmSpec(
        name="vm1",
        namespace="ns1",
        kernel="/boot/vmlinuz & <x>",
        initrd="/tmp/i'n\"it.gz",
        append=nasty,
        disk="/var/lib/d<1>.qcow2",
        tags=(("owner", "<alice & bob>"), ("k'\"", "v")),
    )
    xml = domain_xml(spec, DomainConfig(serial_log_dir="/tmp/logs"))
    assert "<evil/>" not in xml and "</domain><" not in xml
    root = ET.fromstring(xml)  # well-formed despite the payloads
    assert root.findtext("name") == "ns1:vm1"  # vm_key: one name per namespace and host
    assert root.findtext("os/kernel") == "/boot/vmlinuz & <x>"
    assert root.findtext("os/initrd") == "/tmp/i'n\"it.gz"
    assert root.findtext("os/cmdline") == nasty
    assert root.find("devices/disk/source").get("file") == "/var/lib/d<1>.qcow2"
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    assert parse_metadata(xml) == ("ns1", spec.tags)
    assert root.find("devices/serial/source").get("path") == "/tmp/logs/ns1:vm1.log"
    assert root.find("devices/serial/source").get("append") == "on"


def test_a_cdrom_is_a_read_only_disk_beside_the_boot_disk():
    spec = VmSpec(name="vm1", disk="/d.img", cdrom="/store/<iso>")
    root = ET.fromstring(domain_xml(spec))
    cdroms = root.findall("devices/disk[@device='cdrom']")
    assert len(cdroms) == 1 and cdroms[0].find("source").get("file") == "/store/<iso>"
    assert cdroms[0].find("readonly") is not None
    assert cdroms[0].find("target").get("dev") != root.find("devices/disk/target").get("dev")
    assert not ET.fromstring(domain_xml(VmSpec(name="vm2"))).findall("devices/disk")


def test_control_characters_are_refused():
    with pytest.raises(InvalidSpec, match="control character"):
        domain_xml(VmSpec(name="vm1", kernel="/k", append="a\x01b"))


def test_initrd_without_kernel_is_refused():
    with pytest.raises(InvalidSpec, match="need a kernel"):
        domain_xml(VmSpec(name="vm1", initrd="/i"))


def test_structure_for_tcg_guest():
    spec = VmSpec(name="tiny", vcpus=2, memory_mib=128, kernel="/k", networks=("n1", "n2"))
    root = ET.fromstring(domain_xml(spec, DomainConfig(tb_cache_mib=16)))
    assert root.get("type") == "qemu"
    assert root.find("memory").text == "128" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("cpu/model") == "qemu64"
    assert root.findtext("features/tcg/tb-cache") == "16"
    assert root.find("devices/memballoon").get("model") == "none"
    bridges = [i.find("source").get("bridge") for i in root.findall("devices/interface")]
    assert len(bridges) == 2 and len(set(bridges)) == 1  # both NICs on the namespace bridge
    assert root.findtext("uuid") == vm_uuid(spec)


def test_bad_bridge_name_from_config_is_refused():
    cfg = DomainConfig(bridge_for=lambda spec, net: "br;reboot")
    with pytest.raises(InvalidSpec, match="bridge"):
        domain_xml(VmSpec(name="vm1", networks=("n",)), cfg)


def test_uuid_is_stable_and_distinct_per_namespace():
    a, b = VmSpec(name="vm1", namespace="a"), VmSpec(name="vm1", namespace="b")
    assert vm_uuid(a) == vm_uuid(VmSpec(name="vm1", namespace="a"))
    assert vm_uuid(a) != vm_uuid(b)
    # never the libvirt test driver's built-in 'test' domain (real-infra.md §1)
    assert vm_uuid(VmSpec(name="test")) != "6695eb01-f6a4-8304-79aa-97f2502e193f"


def test_test_driver_profile_has_no_tcg_bits():
    root = ET.fromstring(domain_xml(VmSpec(name="vm1"), profile_for_test_uri()))
    assert root.get("type") == "test"
    assert root.find("cpu") is None and root.find("devices/memballoon") is None


def test_rule_is_the_project_rule_of_dvms_names():
    from dvms.names import is_valid_vm_name

    for name in [*HOSTILE_NAMES, "web1", "a", "_x", "1a", "x" * 64, "a.b-c", "Z9"]:
        try:
            check_vm_name(name)
            ours = True
        except InvalidSpec:
            ours = False
        assert ours == is_valid_vm_name(name), name


@pytest.mark.parametrize("fence", ["destroy", "pause"])
def test_an_ha_copy_carries_its_generation_and_fence_in_its_metadata(fence):
    """The fencing token: a daemon reads back which generation a domain is and what
    fencing it does, from the domain alone (docs/ha.md)."""
    policy = HaPolicy("restart", fence=fence)
    xml = domain_xml(VmSpec("w", namespace="n", ha_policy=policy, ha_generation=7))
    assert parse_ha(xml) == (7, fence)
    assert parse_metadata(xml)[0] == "n"
    assert parse_ha(domain_xml(VmSpec("w", namespace="n"))) is None
    off = domain_xml(VmSpec("w", ha_policy=HaPolicy("off"), ha_generation=3))
    assert parse_ha(off) is None


def test_the_wire_form_keeps_the_policy_and_the_generation():
    policy = HaPolicy("restart", priority="high", restart_attempts=5, fence="pause")
    vm = LaunchVm.from_spec(VmSpec("w", ha_policy=policy, ha_generation=4))
    assert vm.ha is not None and (vm.ha.generation, vm.ha.priority, vm.ha.fence) == (
        4,
        "high",
        "pause",
    )
    back = vm.to_spec()
    assert back.ha_policy == policy and back.ha_generation == 4
    assert LaunchVm.from_spec(VmSpec("w", ha_policy=HaPolicy("off"))).ha is None
