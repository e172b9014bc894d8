"""Node daemon configuration: one frozen dataclass composing every component's config,
loaded from TOML by ``dvms.configfile`` and overridden by flags.

``node.toml`` has top-level keys for the node itself and one table per component; a
table sets only the keys that differ from the profile (``docs/daemon.md`` shows every
key with its default)::

    profile = "lan"                 # the base: lan | wan | local (NodeConfig.lan() ...)
    listen = "0.0.0.0:7400"         # UDP address for peers (host:port)
    seeds = ["10.1.0.1:7400"]       # peers to join through; empty = first node
    key_file = "/etc/dvms/cluster.key"  # default: this, as root (else ~/.config/dvms/)
    operator_keys = []              # public operator keys (hex) whose revocations count
    state_dir = "/var/lib/dvms"     # identity, socket, journal; default: this, as root
    hostname = "node1"              # the name users see (default: the system host name)
    hypervisor = ""                 # libvirt URI; "" = a test:/// host of its own
    network = ""                    # ns bridge backend: pyroute2 | fake; "" = by hypervisor
    metrics = "127.0.0.1:9400"      # /metrics, /healthz, /readyz over HTTP; "" = off
    watchdog = ""                   # stops HA guests of a frozen daemon: process | none
                                    # | memory; "" = none on test:///, else process

    [host]                          # size of the default test:/// host
    cpus = 8
    [overlay]                       # KademliaConfig (dvms/overlay/config.py)
    rpc_timeout_s = 2.0
    [vivaldi]                       # VivaldiConfig (dvms/vivaldi/config.py)
    [partition]                     # PartitionConfig (dvms/partition/config.py)
    lease_s = 4.5
    recruitment = "ring"
    [placement]                     # PlacementConfig (dvms/placement/config.py)
    [runner] [monitor] [state] [vjobs] [namespaces] [namespaces.effects] [vm_driver]
    [control] [tunnels] [observe]   # the daemon's services (dvms/runtime/...)
    [files]                         # FilesConfig (dvms/files/config.py)
    [guests]                        # VM definitions on a real hypervisor (GuestSettings)
    [limits]                        # LimitsConfig: against misbehaving peers (dvms/stack)
    [ha]                            # HaConfig: high availability (dvms/ha/config.py)

Unknown keys, wrong types and values a component refuses are one-line ``ConfigError``s
naming the file, the table and the key.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dvms.configfile import ConfigError, load_table, read_toml
from dvms.files.config import FilesConfig
from dvms.ha.config import HaConfig
from dvms.hypervisor.domxml import GuestSettings
from dvms.hypervisor.net.model import NetConfig
from dvms.overlay.config import KademliaConfig
from dvms.partition.config import PartitionConfig
from dvms.placement.config import PlacementConfig
from dvms.runtime.choices import PROFILES, RECRUITMENT
from dvms.runtime.control.commands import ControlConfig
from dvms.runtime.node import RunnerConfig
from dvms.runtime.services.ha import WATCHDOGS
from dvms.runtime.services.monitor import MonitorConfig
from dvms.runtime.services.namespaces import NamespaceConfig
from dvms.runtime.services.observe import ObserveConfig
from dvms.runtime.services.state import StateConfig
from dvms.runtime.services.vjobs import VjobConfig
from dvms.runtime.services.vm_driver import VmDriverConfig
from dvms.stack.limits import LimitsConfig
from dvms.vivaldi.config import VivaldiConfig

__all__ = [
    "PROFILES",
    "RECRUITMENT",
    "ConfigError",
    "HostConfig",
    "NodeConfig",
    "load_config",
    "parse_hostport",
]

NETWORKS = ("", "pyroute2", "fake")

#: Keys ``node.toml`` no longer reads at the top level, and where they went.
MOVED_KEYS = {
    "recruitment": "[partition] recruitment",
    "host_cpus": "[host] cpus",
    "host_memory_mib": "[host] memory_mib",
}


def parse_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{what} {text!r} must be host:port")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{what} {text!r} must be [ipv6]:port")
    else:
        host, _, port = text.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what} {text!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535 or not host:
        raise ConfigError(f"{what} {text!r}: need a host and a port in 0..65535")
    return host, p


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The default hypervisor's host (``[host]``): a libvirt ``test:///`` host of its own,
    ``<state_dir>/host.xml``, written at each start. Unused with ``hypervisor`` set."""

    #: Logical CPUs (ours: a small server).
    cpus: int = 8
    #: Memory, MiB (ours: 16 GiB).
    memory_mib: int = 16384

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.memory_mib < 1:
            raise ValueError("cpus and memory_mib must be at least 1")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one daemon runs with: its own keys, then one config per component
    and per service. ``lan()`` (the default), ``wan()`` and ``local()`` differ only in
    the overlay's."""

    #: UDP listen address for peer traffic ("host:port"; port 0 = any free port).
    listen: str = "127.0.0.1:7400"
    #: Peers to join through ("host:port" each); empty for the first node of a cluster.
    seeds: tuple[str, ...] = ()
    #: Cluster key file written by ``dvms keygen``. "" (default): the platform's place,
    #: ``default_key_file()`` (``/etc/dvms/cluster.key`` as root).
    key_file: str = ""
    #: Public operator keys (hex, 64 digits each; ``dvms keygen --operator`` prints one)
    #: whose signed revocations this node honours (``dvms node revoke``). Empty
    #: (default): no revocation is honoured. The same list on every node.
    operator_keys: tuple[str, ...] = ()
    #: Directory for the node identity, control socket and journal (created 0700).
    #: "" (default): the platform's place, ``default_state_dir()`` (``/var/lib/dvms`` as
    #: root, the user's data directory otherwise); never the current directory.
    state_dir: str = ""
    #: Host name shown to users and used in placement (default: the system host name).
    hostname: str = ""
    #: libvirt URI of this node's hypervisor. "" (default): a ``test:///`` host of its own
    #: (``[host]``), so every daemon on one machine is an independent simulated host.
    hypervisor: str = ""
    #: Backend of ``ns bridge`` networks: "pyroute2" (Linux bridges and VXLAN/GRE
    #: tunnels, needs root) or "fake" (in memory: test hosts touch no real interface).
    #: "" (default): "fake" on a ``test:///`` hypervisor, else "pyroute2".
    network: str = ""
    #: HTTP address ("host:port"; port 0 = any free port) of this node's Prometheus
    #: ``/metrics``, ``/healthz`` and ``/readyz``; "" (default): no metrics, no endpoint.
    metrics: str = ""
    #: Receive buffer of the peer UDP socket, bytes (``SO_RCVBUF``; the kernel caps it
    #: at ``net.core.rmem_max``). The node that took a big command gets bursts of
    #: hundreds of answers at once (directory puts, name claims, action acks) while it
    #: works: with the system default (208 KiB) its socket dropped tens of thousands
    #: of datagrams in a launch of thousands of VMs, a partition's Dissolve among them.
    udp_receive_buffer: int = 4 * 1024 * 1024
    #: The watchdog that stops this host's HA guests when the daemon stops renewing
    #: their leases (frozen, killed): a name of ``services.ha.WATCHDOGS``: ``process``
    #: (the fencer process, ``dvms.runtime.fencer``), ``none`` or ``memory`` (tests).
    #: "" (default): ``none`` on a ``test:///`` host, whose guests die with the daemon,
    #: else ``process``.
    watchdog: str = ""
    #: The default test host (``[host]``).
    host: HostConfig = field(default_factory=HostConfig)
    #: Kademlia (``[overlay]``): buckets, RPC timeouts, refresh, records, probes.
    overlay: KademliaConfig = field(default_factory=KademliaConfig.lan)
    #: Vivaldi coordinates (``[vivaldi]``), serf's defaults.
    vivaldi: VivaldiConfig = field(default_factory=VivaldiConfig.serf)
    #: The DVMS partition protocol (``[partition]``): lease, recruitment, sizes, retries.
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    #: The placement engine (``[placement]``): load function, overcommit, search budget;
    #: used by the partition solver when this node leads and by the ``ns`` commands.
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    #: The node shell (``[runner]``): control-plane request timeouts, stop grace.
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    #: The host monitor (``[monitor]``): refresh periods.
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    #: Cluster state in DHT records (``[state]``): replicas, arbiter RPCs, retries.
    state: StateConfig = field(default_factory=StateConfig)
    #: Vjobs (``[vjobs]``): keeper period, owner timeouts, launch rounds.
    vjobs: VjobConfig = field(default_factory=VjobConfig)
    #: Namespace commands (``[namespaces]``, and ``[namespaces.effects]`` for the
    #: timeouts of their effects on the hosts).
    namespaces: NamespaceConfig = field(default_factory=NamespaceConfig)
    #: VM driver calls (``[vm_driver]``): emulated and live migration requests.
    vm_driver: VmDriverConfig = field(default_factory=VmDriverConfig)
    #: The control commands (``[control]``): ``rtt`` probes, ``vjob show --wait``.
    control: ControlConfig = field(default_factory=ControlConfig)
    #: Tunnels of ``ns bridge`` networks (``[tunnels]``): VXLAN port, MTU, MAC learning.
    tunnels: NetConfig = field(default_factory=NetConfig)
    #: Event stream, metrics sampling, health and readiness (``[observe]``).
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    #: Files shared between peers (``[files]``): chunk size, store capacity and
    #: watermarks, provider records, swarm limits (dvms/files/config.py).
    files: FilesConfig = field(default_factory=FilesConfig)
    #: How a real (QEMU) hypervisor defines VMs (``[guests]``): console log directory,
    #: TCG cache, domain type.
    guests: GuestSettings = field(default_factory=GuestSettings)
    #: Limits against misbehaving peers (``[limits]``): per-peer request rates, pending
    #: and served requests, replay memory (dvms/stack/limits.py).
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    #: High availability (``[ha]``): guardians, renewal period, lease, fencing margin,
    #: restart batching (dvms/ha/config.py, docs/ha.md).
    ha: HaConfig = field(default_factory=HaConfig)

    def __post_init__(self) -> None:
        parse_hostport(self.listen, what="listen")
        if self.metrics:
            parse_hostport(self.metrics, what="metrics")
        if self.udp_receive_buffer < 65536:
            raise ConfigError("udp_receive_buffer must be at least 65536 bytes")
        for s in self.seeds:
            parse_hostport(s, what="seed")
        if self.watchdog and self.watchdog not in WATCHDOGS:
            names = ", ".join(sorted(WATCHDOGS))
            raise ConfigError(f"watchdog must be one of {names}, not {self.watchdog!r}")
        if self.network not in NETWORKS:
            raise ConfigError(f"network must be pyroute2 or fake, not {self.network!r}")
        for k in self.operator_keys:
            try:
                ok = len(bytes.fromhex(k)) == 32
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ConfigError(f"operator_keys: {k!r} is not a public key (64 hex digits)")

    # -- profiles: each composes the components' own profiles -------------------------

    @classmethod
    def lan(cls) -> NodeConfig:
        """A data-centre LAN (the default): every component's defaults."""
        return cls(
            overlay=KademliaConfig.lan(),
            vivaldi=VivaldiConfig.serf(),
            partition=PartitionConfig(),
            placement=PlacementConfig(),
        )

    @classmethod
    def wan(cls) -> NodeConfig:
        """Nodes across sites: the overlay's longer first timeout and RTO floor."""
        return replace(cls.lan(), overlay=KademliaConfig.wan())

    @classmethod
    def local(cls) -> NodeConfig:
        """Daemons on one machine (tests, ``dvms cluster up``): fast overlay timers."""
        return replace(cls.lan(), overlay=KademliaConfig.local())

    @classmethod
    def profile(cls, name: str) -> NodeConfig:
        if name not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, not {name!r}")
        return {"lan": cls.lan, "wan": cls.wan, "local": cls.local}[name]()

    # -- derived -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.hostname or socket.gethostname()

    @property
    def state_path(self) -> Path:
        """The state directory: ``state_dir``, else the platform's."""
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    @property
    def key_path(self) -> Path:
        """The cluster key file: ``key_file``, else the platform's."""
        return Path(self.key_file) if self.key_file else default_key_file()

    @property
    def operator_public_keys(self) -> frozenset[bytes]:
        return frozenset(bytes.fromhex(k) for k in self.operator_keys)

    @property
    def control_socket(self) -> Path:
        return self.state_path / "dvms.sock"

    @property
    def network_backend(self) -> str:
        if self.network:
            return self.network
        return "fake" if self.hypervisor_uri.startswith("test:") else "pyroute2"

    @property
    def hypervisor_uri(self) -> str:
        if self.hypervisor:
            return self.hypervisor
        return f"test://{self.state_path.resolve() / 'host.xml'}"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_state_dir() -> Path:
    """Where a node keeps its state when the config names no ``state_dir``: the system
    place for a service run as root (``/var/lib/dvms``), otherwise the user's data
    directory (``$XDG_DATA_HOME/dvms``, by default ``~/.local/share/dvms``)."""
    if _is_root():
        return Path("/var/lib/dvms")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dvms"


def default_key_file() -> Path:
    """Where a node reads the cluster key when the config names no ``key_file``:
    ``/etc/dvms/cluster.key`` as root, otherwise ``$XDG_CONFIG_HOME/dvms/cluster.key``
    (by default ``~/.config/dvms/cluster.key``)."""
    if _is_root():
        return Path("/etc/dvms/cluster.key")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dvms" / "cluster.key"


def load_config(
    path: str | None,
    *,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """The profile (``profile``, else the file's ``profile`` key, else lan), the file's
    keys and tables on top, then ``overrides`` (command-line flags, by dotted key:
    ``{"listen": ..., "partition.recruitment": ...}``; None values are skipped)."""
    data: dict[str, Any] = dict(read_toml(path)) if path else {}
    source = str(path or "")
    in_file = data.pop("profile", "lan")
    if not isinstance(in_file, str):
        raise ConfigError(f"{source}: profile: expected a string, got {in_file!r}")
    try:
        base = NodeConfig.profile(profile or in_file)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source and not profile else str(exc)) from None
    cfg = load_table(NodeConfig, data, source=source, base=base, moved=MOVED_KEYS)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return cfg
    return load_table(NodeConfig, _nest(given), source="command line", base=cfg)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"partition.lease_s": 4.5}`` -> ``{"partition": {"lease_s": 4.5}}``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *tables, key = dotted.split(".")
        table = out
        for name in tables:
            table = table.setdefault(name, {})
        table[key] = value
    return out
