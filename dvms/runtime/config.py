"""Node daemon configuration: one frozen dataclass, loaded from TOML, overridden by flags.

Example ``node.toml``::

    listen = "0.0.0.0:7400"        # UDP address for peers (host:port)
    seeds = ["10.1.0.1:7400"]      # peers to join through; empty = first node
    key_file = "/etc/dvms/cluster.key"
    state_dir = "/var/lib/dvms"    # identity, control socket, journal
    profile = "lan"                # Kademlia timers: lan | wan | local
    hostname = "node1"             # the name users see (default: the system host name)
    hypervisor = ""                # libvirt URI; "" = a test:/// host of its own
    recruitment = "vivaldi"        # partition recruitment: vivaldi | ring | random
    host_cpus = 8                  # size of the default test:/// host
    host_memory_mib = 16384
    network = ""                   # ns bridge backend: pyroute2 | fake; "" = by hypervisor
"""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dvms.partition.config import RECRUITMENT

__all__ = ["PROFILES", "RECRUITMENT", "ConfigError", "NodeConfig", "load_config", "parse_hostport"]

PROFILES = ("lan", "wan", "local")
NETWORKS = ("", "pyroute2", "fake")


class ConfigError(ValueError):
    """A configuration problem, naming the key and what is wrong."""


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
class NodeConfig:
    #: UDP listen address for peer traffic ("host:port"; port 0 = any free port).
    listen: str = "127.0.0.1:7400"
    #: Peers to join through ("host:port" each); empty for the first node of a cluster.
    seeds: tuple[str, ...] = ()
    #: Cluster key file written by ``dvms keygen``.
    key_file: str = "cluster.key"
    #: Directory for the node identity, control socket and journal (created 0700).
    state_dir: str = "dvms-state"
    #: Kademlia timer profile: "lan" (default), "wan", "local" (fast timers for tests).
    profile: str = "lan"
    #: Host name shown to users and used in placement (default: the system host name).
    hostname: str = ""
    #: libvirt URI of this node's hypervisor. "" (default): a ``test:///`` host of its own,
    #: ``<state_dir>/host.xml`` (written once, ``host_cpus`` x ``host_memory_mib``), so every
    #: daemon on one machine is an independent simulated host.
    hypervisor: str = ""
    #: DVMS partition recruitment order (``dvms.partition.recruit``): vivaldi | ring | random.
    recruitment: str = "vivaldi"
    #: Logical CPUs and memory (MiB) of the default test host.
    host_cpus: int = 8
    host_memory_mib: int = 16384
    #: Backend of ``ns bridge`` networks: "pyroute2" (Linux bridges and VXLAN/GRE
    #: tunnels, needs root) or "fake" (in memory: test hosts touch no real interface).
    #: "" (default): "fake" on a ``test:///`` hypervisor, else "pyroute2".
    network: str = ""

    def __post_init__(self) -> None:
        parse_hostport(self.listen, what="listen")
        for s in self.seeds:
            parse_hostport(s, what="seed")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        if self.recruitment not in RECRUITMENT:
            raise ConfigError(
                f"recruitment must be one of {', '.join(RECRUITMENT)}, not {self.recruitment!r}"
            )
        if self.network not in NETWORKS:
            raise ConfigError(f"network must be pyroute2 or fake, not {self.network!r}")
        if self.host_cpus < 1 or self.host_memory_mib < 1:
            raise ConfigError("host_cpus and host_memory_mib must be at least 1")

    @property
    def name(self) -> str:
        return self.hostname or socket.gethostname()

    @property
    def control_socket(self) -> Path:
        return Path(self.state_dir) / "dvms.sock"

    @property
    def network_backend(self) -> str:
        if self.network:
            return self.network
        return "fake" if self.hypervisor_uri.startswith("test:") else "pyroute2"

    @property
    def hypervisor_uri(self) -> str:
        if self.hypervisor:
            return self.hypervisor
        return f"test://{Path(self.state_dir).resolve() / 'host.xml'}"


def load_config(path: str | None, **overrides: Any) -> NodeConfig:
    """Read ``path`` (if given) and apply non-None ``overrides`` (command-line flags)."""
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    for key, value in data.items():
        expected = {"seeds": tuple, "host_cpus": int, "host_memory_mib": int}.get(key, str)
        if key == "seeds" and isinstance(value, list):
            value = tuple(value)
        if (
            not isinstance(value, expected)
            or isinstance(value, bool)
            or (key == "seeds" and not all(isinstance(s, str) for s in value))
        ):
            what = {tuple: "a list of strings", int: "an integer", str: "a string"}[expected]
            raise ConfigError(f"{path}: {key} must be {what}")
        data[key] = value
    cfg = NodeConfig(**data)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
