"""minimega's namespace API as a pure core: state, interpreter, scheduling, rendering.

    ctx = Context(state, Cluster(hosts, vms, local="node1"), Session("foo"), now=time())
    result = execute("vm launch kvm vm[1-3]", ctx)
    # result.state / result.session: keep them; result.effects: carry them out;
    # result.output: Table or Text (render_text / render_json); result.error: refusal.

See dvms/namespace/README.md for the data flow and docs/namespaces.md for semantics
and every difference from minimega.
"""

from __future__ import annotations

from dvms.namespace.commands import execute as execute
from dvms.namespace.config import CommandError as CommandError
from dvms.namespace.config import NamespaceRecordError as NamespaceRecordError
from dvms.namespace.config import VmConfig as VmConfig
from dvms.namespace.effects import SOURCE_MESHAGE as SOURCE_MESHAGE
from dvms.namespace.effects import SOURCE_USER as SOURCE_USER
from dvms.namespace.effects import ClearNamespace as ClearNamespace
from dvms.namespace.effects import Cluster as Cluster
from dvms.namespace.effects import Context as Context
from dvms.namespace.effects import DelBridge as DelBridge
from dvms.namespace.effects import Effect as Effect
from dvms.namespace.effects import Flush as Flush
from dvms.namespace.effects import Kill as Kill
from dvms.namespace.effects import Launch as Launch
from dvms.namespace.effects import Migrate as Migrate
from dvms.namespace.effects import PlacedVm as PlacedVm
from dvms.namespace.effects import Result as Result
from dvms.namespace.effects import RunOnHosts as RunOnHosts
from dvms.namespace.effects import Session as Session
from dvms.namespace.effects import SetBridge as SetBridge
from dvms.namespace.effects import Start as Start
from dvms.namespace.effects import Stop as Stop
from dvms.namespace.effects import Table as Table
from dvms.namespace.effects import Text as Text
from dvms.namespace.render import Console as Console
from dvms.namespace.render import render_json as render_json
from dvms.namespace.render import render_table as render_table
from dvms.namespace.render import render_text as render_text
from dvms.namespace.schedule import adopt_vms as adopt_vms
from dvms.namespace.schedule import forget_vms as forget_vms
from dvms.namespace.schedule import interrupt as interrupt
from dvms.namespace.schedule import launch_finished as launch_finished
from dvms.namespace.schedule import launch_token as launch_token
from dvms.namespace.schedule import report_vms as report_vms
from dvms.namespace.state import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from dvms.namespace.state import Namespace as Namespace
from dvms.namespace.state import State as State
from dvms.namespace.state import VmRecord as VmRecord

__all__ = [
    "DEFAULT_NAMESPACE",
    "SOURCE_MESHAGE",
    "SOURCE_USER",
    "ClearNamespace",
    "Cluster",
    "CommandError",
    "Console",
    "Context",
    "DelBridge",
    "Effect",
    "Flush",
    "Kill",
    "Launch",
    "Migrate",
    "Namespace",
    "NamespaceRecordError",
    "PlacedVm",
    "Result",
    "RunOnHosts",
    "Session",
    "SetBridge",
    "Start",
    "State",
    "Stop",
    "Table",
    "Text",
    "VmConfig",
    "VmRecord",
    "adopt_vms",
    "execute",
    "forget_vms",
    "interrupt",
    "launch_finished",
    "launch_token",
    "render_json",
    "render_table",
    "render_text",
    "report_vms",
]
