"""minimega's own test scripts (tests/*.want, tests/distributed/*.want), replayed on the
pure core. Each transcript is minimega's expected output except where the comment says
why dvms differs (docs/namespaces.md)."""

from __future__ import annotations

import textwrap

import pytest

from tests.namespace.conftest import make_console


def replay(transcript: str, hosts: int = 5) -> None:
    """Run the ``## command`` lines and compare the whole transcript."""
    want = textwrap.dedent(transcript).lstrip("\n")
    commands = "\n".join(line[3:] for line in want.splitlines() if line.startswith("## "))
    got = make_console(hosts).script(commands)
    assert got == want


NS_HOSTS = """
## namespace test
## ns hosts
mm[1-5]
## ns del-hosts all
## ns hosts
## ns add-hosts mm[1-3]
## ns hosts
mm[1-3]
## ns add-hosts all
## ns hosts
mm[1-5]
## ns del-hosts mm3
## ns hosts
mm[1-2,4-5]
## ns add-hosts all
## ns hosts
mm[1-5]
"""

NS_SCHEDULE = """
## namespace distributed
## ns queueing true
## # schedule one container per host
## vm config filesystem /root/uminicccfs
## vm config schedule mm1
## vm launch container vm1
## vm config schedule mm2
## vm launch container vm2
## vm config schedule mm3
## vm launch container vm3
## # dry run, dump schedule
## ns schedule dry-run
vm   | dst
vm1  | mm1
vm2  | mm2
vm3  | mm3
## # try invalid moves
## ns schedule mv vm4 mm1
E: reassign vm4: vm not found
## ns schedule mv vm1 mm4
E: new dst host is not in namespace
## # no changes, hopefully
## ns schedule dump
vm   | dst
vm1  | mm1
vm2  | mm2
vm3  | mm3
## # try valid moves
## ns schedule mv vm1 mm2
## ns schedule dump
vm   | dst
vm1  | mm2
vm2  | mm2
vm3  | mm3
## ns schedule mv vm[1-3] mm3
## ns schedule dump
vm   | dst
vm1  | mm3
vm2  | mm3
vm3  | mm3
## # run scheduler
## ns schedule
## # check where VMs ended up
## .annotate true .columns name vm info
host | name
mm3  | vm1
mm3  | vm2
mm3  | vm3
"""

VM_COLOCATE = """
## namespace distributed
## ns queueing false
## vm config schedule mm1
## vm launch kvm a
## clear vm config schedule
## vm config colocate a
## vm launch kvm b
## vm config colocate b
## vm launch kvm c
## .annotate true .columns name vm info
host | name
mm1  | a
mm1  | b
mm1  | c
"""

VM_COLOCATE_QUEUEING = """
## namespace distributed
## ns queueing true
## vm config schedule mm1
## vm launch kvm a
## clear vm config schedule
## vm config colocate a
## vm launch kvm b
## vm config colocate b
## vm launch kvm c
## vm launch
## .annotate true .columns name vm info
host | name
mm1  | a
mm1  | b
mm1  | c
"""

VM_COLOCATE_ERRORS = """
## namespace distributed
## # both schedule and colocate
## vm config schedule mm1
## vm config colocate a
E: cannot specify colocate and schedule in the same config
## clear vm config
## # both colocate and schedule
## vm config colocate a
## vm config schedule mm1
E: cannot specify schedule and colocate in the same config
## clear vm config
## # schedule with non-existent VM with queueing disabled
## ns queueing false
## vm config colocate foo
## vm launch kvm a
E: nonexistent colocate VMs: [foo]
## ns flush
## clear vm config
## # schedule with non-existent VM with queueing enabled
## ns queueing true
## vm config colocate foo
## vm launch kvm a
## vm launch
E: nonexistent colocate VMs: [foo]
## ns flush
## clear vm config
"""

VM_NAMES = """
## namespace distributed
## vm config filesystem /root/uminicccfs
## vm launch container 6
## # should all have a unique name
## .column name vm info
name
vm-0
vm-1
vm-2
vm-3
vm-4
vm-5
"""

VM_LIFECYCLE = """
## namespace distributed
## vm config filesystem /root/uminicccfs
## vm config coschedule 0
## vm launch container vm[1-3]
## .columns name,state vm info
name | state
vm1  | BUILDING
vm2  | BUILDING
vm3  | BUILDING
## # change VM states
## vm start all
## .columns name,state vm info
name | state
vm1  | RUNNING
vm2  | RUNNING
vm3  | RUNNING
## vm kill vm[1-2]
## .columns name,state vm info
name | state
vm1  | QUIT
vm2  | QUIT
vm3  | RUNNING
## vm stop all
## .columns name,state vm info
name | state
vm1  | QUIT
vm2  | QUIT
vm3  | PAUSED
## vm start all
## .columns name,state vm info
name | state
vm1  | QUIT
vm2  | QUIT
vm3  | RUNNING
## vm flush
## .columns name,state vm info
name | state
vm3  | RUNNING
## vm kill all
## .columns name,state vm info
name | state
vm3  | QUIT
## vm flush
## .columns name,state vm info
"""

# tests/namespace.want, on one host. That script predates "ns queueing false" as the
# default, so minimega's bare "vm launch" after "vm launch kvm foo" now finds an empty
# queue, as here. "namespace ns3" twice and "clear namespace" twice are no-ops in
# current minimega (reference §1), older releases printed "already in namespace".
NAMESPACE = """
## # Launch three foos, one in default namespace, others in ns1 and ns2
## vm launch kvm foo
## vm launch
E: namespace must contain at least one queued VM to launch VMs
## .columns name,state vm info
name | state
foo  | BUILDING
## namespace ns1
## .columns name,state vm info
## vm launch kvm foo
## .columns name,state vm info
name | state
foo  | BUILDING
## namespace ns2
## vm launch kvm foo
## .columns name,state vm info
name | state
foo  | BUILDING
## clear namespace
## # Change VM states, all should only apply within a given namespace
## namespace ns1 vm start all
## .columns name,state vm info
name | state
foo  | BUILDING
## namespace ns1 .columns name,state vm info
name | state
foo  | RUNNING
## namespace ns2 .columns name,state vm info
name | state
foo  | BUILDING
## namespace ns2 vm kill all
## namespace ns1 .columns name,state vm info
name | state
foo  | RUNNING
## namespace ns2 .columns name,state vm info
name | state
foo  | QUIT
## namespace ns2 vm flush
## .columns name,state vm info
name | state
foo  | BUILDING
## namespace ns2 .columns name,state vm info
## namespace ns3
## namespace ns3
## clear namespace
## clear namespace
"""

NESTED = """
## namespace with-local
## ns add-hosts localhost
## ns run ns run host
E: cannot run `ns run host` using `ns run`
## ns run read foo
E: cannot run `read foo` using `ns run`
## ns run mesh send all host
E: cannot run `mesh send all host` using `ns run`
## clear namespace with-local
## namespace without-local
## ns run ns run host
E: cannot run `ns run host` using `ns run`
## clear namespace without-local
"""

READ_NAMESPACE = """
## .columns namespace,active namespace
namespace | active
minimega  | true
## namespace foo
## .columns namespace,active namespace
namespace | active
foo       | true
minimega  | false
## namespace bar
## .columns namespace,active namespace
namespace | active
bar       | true
foo       | false
minimega  | false
## namespace foo .columns namespace,active namespace
namespace | active
bar       | false
foo       | true
minimega  | false
## .columns namespace,active namespace
namespace | active
bar       | true
foo       | false
minimega  | false
"""


CASES = {
    "ns_hosts": (NS_HOSTS, 5),
    "ns_schedule": (NS_SCHEDULE, 3),
    "vm_colocate": (VM_COLOCATE, 3),
    "vm_colocate_queueing": (VM_COLOCATE_QUEUEING, 3),
    "vm_colocate_errors": (VM_COLOCATE_ERRORS, 3),
    "vm_names": (VM_NAMES, 3),
    "vm_lifecycle": (VM_LIFECYCLE, 3),
    "namespace": (NAMESPACE, 1),
    "nested": (NESTED, 3),
    "read_namespace": (READ_NAMESPACE, 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_minimega_transcript(name: str) -> None:
    transcript, hosts = CASES[name]
    replay(transcript, hosts)
