"""What a node's services may use of the node: small interfaces, each handed explicitly to
the service that needs it, and the registry through which services answer requests.

The node runner (``dvms.runtime.node``) implements the protocols below; a service names
only those it uses in its constructor, so its dependencies are read off its signature and
a test can hand it a small fake instead of a node::

    Handlers       request type -> the service that answers it (registered at construction)
    Spawn          run a task in the node's nursery
    Requester      control-plane requests to peers: one peer, every peer, a host by name
    Peers          who this node knows: routing-table contacts and their host names
    Dht            records: the ones held here, lookups, get and put in the overlay
    StateStore     versioned cluster state in DHT records (``services.state``)
    Launcher       launch events of the partition protocol
    VmDirectory    the DHT directory of VM names (free, claimed, hosted)
    PartitionStatus  the partition protocol's state, read-only
    NamespaceBook  the namespaces' VM tables, as ``submit`` shares them with ``vm launch``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dvms.effects import Address
from dvms.overlay.crawl import CrawlResult
from dvms.overlay.lookup import LookupResult
from dvms.overlay.messages import Contact, Record
from dvms.overlay.records import RecordStore
from dvms.partition.events import EventDone
from dvms.partition.messages import LaunchVm, WireConstraint

if TYPE_CHECKING:
    from dvms.runtime.services.state import Update, Versioned

__all__ = [
    "Answer",
    "Dht",
    "Handlers",
    "Launcher",
    "NamespaceBook",
    "PartitionStatus",
    "Peers",
    "Requester",
    "Spawn",
    "StateStore",
    "VmDirectory",
]

M = TypeVar("M")

#: How a service answers one request type: the reply message, sent back to the asker.
Answer = Callable[[Any], Awaitable[Any]]


class Handlers:
    """The request types this node answers (``dvms.runtime.messages.REQUESTS``), each by
    the service that registered it. A service registers in its constructor; a service
    built again for the same node takes its types over."""

    def __init__(self) -> None:
        self._answers: dict[type, Answer] = {}

    def register(self, msg_type: type[M], answer: Callable[[M], Awaitable[Any]]) -> None:
        self._answers[msg_type] = answer

    def __contains__(self, msg_type: type) -> bool:
        return msg_type in self._answers

    async def answer(self, msg: Any) -> Any:
        """The reply to ``msg``; a type nobody registered is our bug (``TypeError``)."""
        answer = self._answers.get(type(msg))
        if answer is None:
            raise TypeError(f"no answer for {msg!r}")
        return await answer(msg)


class Spawn(Protocol):
    """Run ``fn(*args)`` as a task of the running node; it ends with the node."""

    def __call__(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None: ...


class Requester(Protocol):
    """Control-plane requests (``dvms.runtime.messages``). ``None`` for a timeout or an
    attempt count takes the node's default (``RunnerConfig``); the first timeout doubles
    at each attempt."""

    async def request(
        self,
        dst: Address,
        msg: Any,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> Any | None:
        """``msg``'s reply from the node at ``dst``; None if it never answers."""
        ...

    async def gather(
        self, msg: Any, *, timeout: float | None = None
    ) -> tuple[list[Any], list[Contact]]:
        """``msg`` answered by every node of the cluster (found by a crawl of the
        overlay, not only this node's routing table) and by this node: (replies, nodes
        that did not answer)."""
        ...

    async def ask_host(
        self,
        host: str,
        msg: Any,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> Any | None:
        """``msg`` answered by the node named ``host`` (this one included); None if it
        is unknown or does not answer."""
        ...


class Peers(Protocol):
    """Who this node knows: the contacts of its routing table and their host names, and
    every node of the cluster by a crawl."""

    @property
    def contact(self) -> Contact: ...

    async def crawl(self) -> CrawlResult:
        """Every node of the overlay, found by reading routing tables: those that
        answered and those some table names that did not."""
        ...

    def known(self) -> dict[int, Contact]:
        """Every peer that ever told this node its host name (live or not)."""
        ...

    def peer_contacts(self) -> list[Contact]: ...

    def hosts(self) -> dict[str, Contact]:
        """Host name -> contact of every peer whose name is known, and of this node."""
        ...

    def host_name(self, node_id: int) -> str | None: ...

    def name_of(self, c: Contact) -> str:
        """``c``'s host name, else its address."""
        ...


class Dht(Protocol):
    """The overlay's records: those replicated here, and any by lookup."""

    @property
    def contact(self) -> Contact: ...

    @property
    def store(self) -> RecordStore:
        """The records this node holds as a replica (read them; writes go through put)."""
        ...

    async def closest_nodes(self, key: int) -> list[Contact]:
        """This node and the nodes closest to ``key`` it can find (its routing table when
        that holds the whole cluster, else a lookup), in no particular order."""
        ...

    async def lookup(self, target: int) -> LookupResult: ...

    async def get(self, name: str) -> Record | None: ...

    async def put(self, record: Record) -> int:
        """Store ``record`` on its closest nodes; returns how many acknowledged."""
        ...


class StateStore(Protocol):
    """Versioned cluster state in DHT records (``dvms.runtime.services.state``)."""

    async def read(self, name: str) -> Versioned: ...

    async def write(self, name: str, value: Any, seq: int) -> bool:
        """Write ``value`` as version ``seq + 1``; False if the version moved on."""
        ...

    async def update(self, name: str, fn: Update) -> tuple[Any, Any]:
        """Read, ``fn(value)`` -> (new value, result), compare-and-swap; again on a lost
        race. Returns (the value now stored, ``fn``'s result)."""
        ...


class Launcher(Protocol):
    """Launch events of the partition protocol, started from this node."""

    async def launch(
        self, vms: tuple[LaunchVm, ...], constraints: tuple[WireConstraint, ...]
    ) -> EventDone:
        """Place and create ``vms``; returns when the event ends (placed or refused)."""
        ...

    async def wait_joined(self) -> None:
        """Until this node has joined the overlay."""
        ...


class VmDirectory(Protocol):
    """The DHT directory of VM names (``dvms.partition.directory``)."""

    async def forget(self, namespace: str, name: str) -> None:
        """``namespace/name`` was removed from this host for good: free its name."""
        ...

    async def located(self, namespace: str, name: str, host: str, node_id: int) -> None:
        """``namespace/name`` now runs on ``host`` (node ``node_id``), moved outside a
        partition: record where."""
        ...

    async def free_claim(self, namespace: str, name: str, claimer: int) -> None:
        """Free ``namespace/name`` if node ``claimer`` (dead) still claims it."""
        ...


class PartitionStatus(Protocol):
    """The partition protocol on this node, as the control commands show it."""

    @property
    def stats(self) -> Any: ...

    def busy(self) -> bool: ...

    def overloaded(self) -> bool: ...


class NamespaceBook(Protocol):
    """The namespaces' VM tables (``services.namespaces``): the one model of which VMs a
    namespace holds, whether ``vm launch`` or ``submit`` placed them."""

    async def names_in_use(self, namespace: str, names: list[str]) -> list[str]:
        """Those of ``names`` that ``namespace`` already holds or queues."""
        ...

    async def adopt(self, namespace: str, placed: list[tuple[LaunchVm, str]]) -> None:
        """VMs placed in ``namespace`` (each with its host) join its table."""
        ...
