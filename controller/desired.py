"""The frozen desired state of one agent: what translation produces and every layer below consumes.

Owns: the value types that flow from a source (files, the API server) through `translate()` to the
runtime, the FIB and the writers -- the node (`NodeContext`), problems (`Problem`, `ProblemReason`),
per route server its speaker, selection and persist settings, its peers (`PeerDesired`,
`BfdSettings`, `Liveness`) and its tables (`TableDesired`: `NodeTable` or `AwsTable`), the whole
`DesiredState`; and the route types the FIB hands to writers (`RouteKey`, `Hops`, `RouteChanges`;
`Backed` next hops carrying their backup; `Prefix` and `Address` for configuration and display).

May not touch: anything. Only frozen dataclasses and enums, importing the protocol packages' pure
configuration types (bgp.api, bgp.rib.policy, bfd.auth) and nothing of the controller; no I/O, no
asyncio, no clock. Everything else in controller/ depends on this module, never the other way round
(import-linter enforces it for the writers).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TypeVar

from bfd.auth import AuthConfig
from bgp.api import PeerConfig
from bgp.rib.policy import ImportPolicy, PrefixRule
from bgp.types import IPAddress, PrefixKey

# -- routes, as the FIB hands them to writers ---------------------------------------------------

Prefix = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# A route on its way from the Loc-RIB to a table is keyed by the Loc-RIB's compact prefix key
# (bgp.types.PrefixKey: an int, (address << 8) | length, IPv6 flagged above bit 136): from the codec
# to the netlink encoder no ipaddress network is built. Convert at the edges (status, logs) with
# bgp.types.key_str / key_to_prefix, and from configuration with bgp.types.prefix_key.
RouteKey = PrefixKey
# What one prefix should point at: one next hop (active/passive) or an ECMP set, in order. The FIB
# interns these tuples, so a million routes share a few objects (one per next-hop set).
Hops = tuple[Address, ...]
# Changes for the writers: key -> next hops, or None to remove.
RouteChanges = Mapping[RouteKey, Hops | None]

_T = TypeVar("_T")


class Backed(tuple[_T, ...]):
    """Next hops with the ones that take over if all of them fail: prefix-independent convergence.

    The FIB hands a prefix `Backed((active,), (standby,))` when the Loc-RIB holds a path through
    another next hop; a writer groups routes by (next hops, backup), so when BFD declares the
    active dead it can point every route of a group at the standby with one message, before the
    RIB has looked at a single prefix (controller/writers/netlink.py `fail_over`). It reads as its
    next hops (iteration, len, str of the members); equality and hashing include the backup, so a
    changed backup is a change. Built only through an interner (one object per distinct pair).
    """

    backup: tuple[_T, ...]

    def __new__(cls, hops: Iterable[_T], backup: tuple[_T, ...]) -> Backed[_T]:
        self = super().__new__(cls, hops)
        self.backup = backup
        return self

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, other) is True and getattr(other, "backup", ()) == self.backup

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((tuple(self), self.backup))

    def __repr__(self) -> str:
        return f"Backed({tuple(self)!r}, backup={self.backup!r})"


# -- FIB settings -------------------------------------------------------------------------------


class SelectionMode(enum.Enum):
    ACTIVE_PASSIVE = "ActivePassive"
    ECMP = "ECMP"


# Sessions that one failure takes down are detected within about one BFD detection time of each other
# (each expires on its own last received packet); the default BFD 300 ms x 3 detects in 0.9 s. Two
# seconds covers that with room for a busy event loop, yet a prefix that lost its only appliance
# lingers in the tables for at most two seconds before a covering route can take over. The runtime
# raises it for slower BFD timers (`persist_config` in the runtime).
DEFAULT_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class PersistConfig:
    """persistRoutes (controller/fib.py explains the semantics)."""

    enabled: bool = False
    duration_seconds: int = 120
    grace_seconds: float = DEFAULT_GRACE_SECONDS  # hold a session's last paths this long (fib.py)


# -- inputs -------------------------------------------------------------------------------------

WILDCARDS: tuple[IPAddress, ...] = (ip_address("0.0.0.0"), ip_address("::"))


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What translation needs to know about the node the agent runs on.

    `labels` select route servers and tables (nodeSelector); `router_id` is used when a route server
    sets none; `addresses` are never accepted as next hops; Secret references without a namespace
    resolve in `namespace`.
    """

    name: str = "standalone"
    labels: tuple[tuple[str, str], ...] = ()
    router_id: IPv4Address | None = None
    addresses: frozenset[IPAddress] = frozenset()
    namespace: str = "default"

    @classmethod
    def of(
        cls,
        name: str,
        labels: Mapping[str, str] | None = None,
        router_id: IPv4Address | None = None,
        addresses: Iterable[IPAddress] = (),
        namespace: str = "default",
    ) -> NodeContext:
        return cls(name, tuple(sorted((labels or {}).items())), router_id, frozenset(addresses), namespace)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


SecretKey = tuple[str, str]  # (namespace, name)
Secrets = Mapping[SecretKey, Mapping[str, bytes]]


# -- outputs ------------------------------------------------------------------------------------


class ProblemReason(enum.Enum):
    """Why an object (or part of it) cannot be applied; bounded, usable as a condition reason."""

    MISSING_ROUTE_SERVER = "RouteServerNotFound"
    MISSING_SECRET = "SecretNotFound"
    INVALID_SECRET = "InvalidSecret"
    NO_ROUTER_ID = "NoRouterID"
    LISTEN_CONFLICT = "ListenAddressConflict"
    DUPLICATE_PEER = "DuplicatePeerAddress"
    TABLE_CONFLICT = "TableConflict"
    INVALID = "Invalid"
    NOT_SELECTED = "NodeNotSelected"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    name: str
    field: str  # API path, like spec.authSecretRef
    reason: ProblemReason
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.field}: {self.message}"


class Liveness(enum.StrEnum):
    """How a peer's failure is detected (RouteServerPeer spec.liveness; the API model uses this enum)."""

    BFD = "BFD"
    BGP_KEEPALIVE = "BGPKeepalive"


@dataclass(frozen=True, slots=True)
class BfdSettings:
    """The BFD parameters one peer's session runs with (RFC 5880 §6.8.1 variables, in ms)."""

    min_tx_ms: int
    min_rx_ms: int
    detect_multiplier: int
    passive: bool = False
    multihop: bool = False
    auth: AuthConfig | None = None


@dataclass(frozen=True, slots=True)
class PeerDesired:
    name: str
    route_server: str
    config: PeerConfig
    liveness: Liveness
    bfd: BfdSettings | None  # set exactly when liveness is BFD


@dataclass(frozen=True, slots=True)
class NodeTable:
    """A Linux kernel table on this node (a number, or a name from iproute2's rt_tables)."""

    table: int | str
    metric: int | None = None

    def __str__(self) -> str:
        return f"table {self.table}" + (f" metric {self.metric}" if self.metric is not None else "")


@dataclass(frozen=True, slots=True)
class AwsTable:
    route_table_id: str
    region: str | None = None
    endpoint_url: str | None = None
    credentials_secret: SecretKey | None = None

    def __str__(self) -> str:
        return f"aws {self.route_table_id}"


TableTarget = NodeTable | AwsTable


@dataclass(frozen=True, slots=True)
class TableDesired:
    name: str
    route_server: str
    target: TableTarget
    prefix_filter: tuple[PrefixRule, ...] | None = None  # None: every prefix of the FIB

    def filter_policy(self) -> ImportPolicy | None:
        """The prefix filter compiled for per-prefix checks (`check_prefix(key) is None`: passes)."""
        return None if self.prefix_filter is None else ImportPolicy(allowed=self.prefix_filter)


@dataclass(frozen=True, slots=True)
class SpeakerSettings:
    """Everything that needs a new speaker (every session restarts) when it changes."""

    asn: int
    router_id: IPv4Address
    listen_addresses: tuple[IPAddress, ...] = WILDCARDS
    listen_port: int = 179


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    mode: SelectionMode = SelectionMode.ACTIVE_PASSIVE
    max_paths: int = 8
    always_compare_med: bool = False

    @property
    def rib_max_paths(self) -> int:
        """The Loc-RIB's multipath width: one best path unless ECMP is wanted."""
        return self.max_paths if self.mode is SelectionMode.ECMP else 1


@dataclass(frozen=True, slots=True)
class RouteServerDesired:
    name: str
    speaker: SpeakerSettings
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    persist: PersistConfig = field(default_factory=PersistConfig)
    peers: tuple[PeerDesired, ...] = ()  # sorted by name
    tables: tuple[TableDesired, ...] = ()  # sorted by name

    def peer(self, name: str) -> PeerDesired | None:
        return next((p for p in self.peers if p.name == name), None)

    def table(self, name: str) -> TableDesired | None:
        return next((t for t in self.tables if t.name == name), None)


@dataclass(frozen=True, slots=True)
class DesiredState:
    node: NodeContext = field(default_factory=NodeContext)
    route_servers: tuple[RouteServerDesired, ...] = ()  # sorted by name
    problems: tuple[Problem, ...] = ()
    skipped: tuple[Problem, ...] = ()  # valid, but not for this node

    def route_server(self, name: str) -> RouteServerDesired | None:
        return next((rs for rs in self.route_servers if rs.name == name), None)


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "WILDCARDS",
    "Address",
    "AwsTable",
    "Backed",
    "BfdSettings",
    "DesiredState",
    "Hops",
    "Liveness",
    "NodeContext",
    "NodeTable",
    "PeerDesired",
    "PersistConfig",
    "Prefix",
    "Problem",
    "ProblemReason",
    "RouteChanges",
    "RouteKey",
    "RouteServerDesired",
    "SecretKey",
    "Secrets",
    "SelectionMode",
    "SelectionSettings",
    "SpeakerSettings",
    "TableDesired",
    "TableTarget",
]
