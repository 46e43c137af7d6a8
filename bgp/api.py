"""What controller code may depend on of the BGP speaker: configuration, events, status, the protocol.

Owns: `PeerConfig` (one configured neighbour), the events a speaker publishes (`SpeakerEvent`), the
status snapshots (`PeerStatus`, `SpeakerStatus`) and `Speaker`, the protocol the route-server runtime
drives (bgp/speaker.py implements it; unit tests use fakes). No asyncio, no sockets: importing this
module never pulls in the I/O layer, so pure code (controller/translate.py, status views) can build
configurations and read events without the transport.

Must not touch: sessions, sockets or timers; it only describes them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Protocol

from bgp.codec.errors import NotificationCode
from bgp.codec.messages import Notification
from bgp.fsm.config import SessionConfig
from bgp.fsm.events import DownReason, State, TransitionReason
from bgp.rib.adj_rib_in import AdjRibIn
from bgp.rib.loc_rib import LocRib, RibChange
from bgp.rib.policy import ImportPolicy, MaxPrefix, MaxPrefixEvent
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, Family, IPAddress

# -- Configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerConfig:
    """One configured neighbour. Compared as a whole by `update_peer` to decide what must change.

    `import_policy` defaults to deny-all (RFC 8212): nothing is accepted unless a rule allows it.
    `ttl_security_hops` enables GTSM (RFC 5082; 1 for a directly connected peer); `multihop_ttl` is
    the outgoing TTL otherwise (None: the kernel default). `next_hop_ipv4/ipv6` are the next hops
    we put on our own routes of that family when they carry none and the session runs over the
    other family (over a same-family session the session's local address is used).
    """

    peer_address: IPAddress
    peer_asn: int
    peer_id: str = ""  # default: the peer address
    local_address: IPAddress | None = None
    port: int = 179
    local_port: int | None = None
    passive: bool = False
    hold_time: int = 90
    keepalive_time: int | None = None
    connect_retry_time: float = 5.0
    password: str | None = field(default=None, repr=False)
    ttl_security_hops: int | None = None
    multihop_ttl: int | None = None
    families: tuple[Family, ...] = (IPV4_UNICAST, IPV6_UNICAST)
    import_policy: ImportPolicy = field(default_factory=ImportPolicy)
    max_prefix: MaxPrefix | None = None
    graceful_restart: bool = True  # advertise GR as receiving speaker, keep a restarting peer's routes
    graceful_restart_time: int = 120
    stale_path_time: float = 360.0  # after re-establishment: flush stale paths without End-of-RIB
    add_path_receive: tuple[Family, ...] = ()
    next_hop_ipv4: IPv4Address | None = None
    next_hop_ipv6: IPv6Address | None = None
    idle_hold_time: float = 1.0
    max_idle_hold_time: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.peer_address, str):
            object.__setattr__(self, "peer_address", ip_address(self.peer_address))
        if isinstance(self.local_address, str):
            object.__setattr__(self, "local_address", ip_address(self.local_address))
        if not self.peer_id:
            object.__setattr__(self, "peer_id", str(self.peer_address))
        if self.ttl_security_hops is not None and self.multihop_ttl is not None:
            raise ValueError("GTSM (ttl_security_hops) and multihop_ttl are exclusive")
        if self.ttl_security_hops is not None and not 1 <= self.ttl_security_hops <= 255:
            raise ValueError(f"GTSM hops {self.ttl_security_hops} outside 1..255")  # RFC 5082 §3
        if self.multihop_ttl is not None and not 1 <= self.multihop_ttl <= 255:
            raise ValueError("multihop_ttl must be within 1..255")
        if self.local_address is not None and self.local_address.version != self.peer_address.version:
            raise ValueError("local_address and peer_address must be of the same family")
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError("port must be within 1..65535")

    def session_config(self, local_asn: int, router_id: IPv4Address) -> SessionConfig:
        return SessionConfig(
            local_asn=local_asn,
            peer_asn=self.peer_asn,
            router_id=router_id,
            peer_address=self.peer_address,
            hold_time=self.hold_time,
            keepalive_time=self.keepalive_time,
            connect_retry_time=self.connect_retry_time,
            passive=self.passive,
            families=self.families,
            graceful_restart_time=self.graceful_restart_time if self.graceful_restart else None,
            add_path_receive=self.add_path_receive,
            idle_hold_time=self.idle_hold_time,
            max_idle_hold_time=max(self.max_idle_hold_time, self.idle_hold_time),
        )

    def _session_fields(self) -> tuple[object, ...]:
        """Everything that needs a new session when it changes (policy and limits do not)."""
        return tuple(
            getattr(self, name)
            for name in self.__dataclass_fields__
            if name
            not in ("import_policy", "max_prefix", "stale_path_time", "next_hop_ipv4", "next_hop_ipv6")
        )


# -- Events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerStateChanged:
    """A peer's session changed state (RFC 4271 names) and why."""

    peer_id: str
    old: State
    new: State
    reason: TransitionReason
    notification: Notification | None = None
    detail: str = ""
    # Our address on the session's TCP connection, set when `new` is Established (where single-hop
    # BFD must run from, RFC 5881 §4); None otherwise.
    local_address: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class RoutesChanged:
    """Loc-RIB changes caused by one UPDATE, one session loss or one timer (best path / ECMP set).

    `peer_id` is the peer whose routes changed, or "" for a change of the route selection itself.
    """

    peer_id: str
    changes: tuple[RibChange, ...]


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """A TCP connection from an address that is not a configured peer was closed before OPEN."""

    address: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class PrefixLimit:
    """Max-prefix threshold, limit exceeded (Warn), excess refused (Reject) or teardown (Cease 6/1)."""

    peer_id: str
    event: MaxPrefixEvent
    count: int
    limit: int


@dataclass(frozen=True, slots=True)
class EndOfRib:
    """The peer finished sending a family's table (RFC 4724 §2); stale paths of it were flushed."""

    peer_id: str
    family: Family


SpeakerEvent = PeerStateChanged | RoutesChanged | ConnectionRefused | PrefixLimit | EndOfRib


# -- Status ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    code: int
    subcode: int
    name: str  # "Cease/Maximum Number of Prefixes Reached"
    message: str  # RFC 9003 shutdown communication, if any
    at: float  # wall clock (time.time())

    @classmethod
    def of(cls, notification: Notification, at: float) -> NotificationInfo:
        """`at`: wall-clock time of the NOTIFICATION (the caller's clock; this module reads none)."""
        return cls(
            notification.code,
            notification.subcode,
            notification_name(notification.code, notification.subcode),
            notification.shutdown_message() or "",
            at,
        )


@dataclass(frozen=True, slots=True)
class NegotiatedInfo:
    hold_time: int
    keepalive_time: int
    families: tuple[str, ...]
    four_octet_as: bool
    extended_message: bool
    route_refresh: bool
    enhanced_route_refresh: bool
    graceful_restart: bool
    add_path_receive: tuple[str, ...]
    peer_router_id: str
    peer_asn: int


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A snapshot for status objects, metrics and `routeserver status` (DESIGN §3)."""

    peer_id: str
    address: str
    asn: int
    state: str  # RFC 4271 name
    established_at: float | None  # wall clock
    uptime: float | None  # seconds Established
    last_transition: str | None  # TransitionReason value
    last_transition_detail: str
    last_transition_at: float | None  # wall clock
    last_error: str | None  # the last connect/transport failure
    last_notification_sent: NotificationInfo | None
    last_notification_received: NotificationInfo | None
    prefixes_received: int  # announcements received (cumulative)
    prefixes_accepted: int  # paths currently held after import policy
    prefixes_rejected: int  # announcements rejected (cumulative)
    rejected_by_reason: dict[str, int]
    prefixes_stale: int
    established_count: int
    updates_received: int
    connect_attempts: int
    negotiated: NegotiatedInfo | None
    local_address: str | None = None  # our end of the Established connection
    # Held Idle with automatic start off (RFC 4271 §8.1.1), e.g. "MaxPrefixes": a DownReason value;
    # None when the session restarts on its own as usual.
    held_idle_reason: str | None = None
    held_idle_until: float | None = None  # wall clock of the automatic restart; None: until the spec changes


@dataclass(frozen=True, slots=True)
class SpeakerStatus:
    local_asn: int
    router_id: str
    listening: tuple[str, ...]  # "address:port"
    refused: int
    refused_by_address: dict[str, int]
    # TCP-MD5 and GTSM drops the kernel counted in this network namespace: a wrong key or a low TTL
    # leaves no other trace (the peer just never gets through).
    kernel_drops: dict[str, int]
    peers: tuple[PeerStatus, ...]


_CEASE_NAMES = {
    1: "Maximum Number of Prefixes Reached",
    2: "Administrative Shutdown",
    3: "Peer De-configured",
    4: "Administrative Reset",
    5: "Connection Rejected",
    6: "Other Configuration Change",
    7: "Connection Collision Resolution",
    8: "Out of Resources",
    9: "Hard Reset",
    10: "BFD Down",
}
_CODE_NAMES = {
    1: "Message Header Error",
    2: "OPEN Message Error",
    3: "UPDATE Message Error",
    4: "Hold Timer Expired",
    5: "Finite State Machine Error",
    6: "Cease",
    7: "ROUTE-REFRESH Message Error",
}


_SUBCODE_NAMES: dict[int, dict[int, str]] = {
    1: {1: "Connection Not Synchronized", 2: "Bad Message Length", 3: "Bad Message Type"},
    2: {
        1: "Unsupported Version Number",
        2: "Bad Peer AS",
        3: "Bad BGP Identifier",
        4: "Unsupported Optional Parameter",
        6: "Unacceptable Hold Time",
        7: "Unsupported Capability",
        11: "Role Mismatch",
    },
    3: {
        1: "Malformed Attribute List",
        2: "Unrecognized Well-known Attribute",
        3: "Missing Well-known Attribute",
        4: "Attribute Flags Error",
        5: "Attribute Length Error",
        6: "Invalid ORIGIN Attribute",
        8: "Invalid NEXT_HOP Attribute",
        9: "Optional Attribute Error",
        10: "Invalid Network Field",
        11: "Malformed AS_PATH",
    },
    5: {
        1: "Unexpected Message in OpenSent",
        2: "Unexpected Message in OpenConfirm",
        3: "Unexpected Message in Established",
    },
    6: _CEASE_NAMES,
    7: {1: "Invalid Message Length"},
}


def notification_name(code: int, subcode: int) -> str:
    """A readable "Code/Subcode" for logs and status (RFC 4271 §4.5, RFC 4486, RFC 6608, RFC 7313).

    Unknown subcodes keep their number so nothing is hidden: "OPEN Message Error/Bad Peer AS",
    "UPDATE Message Error/42".
    """
    name = _CODE_NAMES.get(code, f"code {code}")
    if not subcode and code != NotificationCode.CEASE:
        return name
    return f"{name}/{_SUBCODE_NAMES.get(code, {}).get(subcode, str(subcode))}"


class GracefulMode(enum.Enum):
    """What `peer_down` does with the peer's routes."""

    FLUSH = "flush"  # withdraw at once (the forwarding path is gone: RFC 5882 §4.3)
    KEEP_STALE = "keep-stale"  # keep them stale for the peer's restart time (only if GR was negotiated)


# -- The protocol the controller drives ---------------------------------------------------------------


class Speaker(Protocol):
    """One BGP router as the route-server runtime uses it (bgp.speaker.Speaker; fakes in unit tests).

    Events reach `add_listener` callbacks synchronously, inside the speaker's own call stack, in the
    order they happen (a session's state change before the withdrawal of its routes).
    """

    loc_rib: LocRib

    async def start(self) -> None: ...

    async def stop(self, message: str = "") -> None: ...

    def listening(self) -> list[tuple[IPAddress, int]]: ...

    async def add_peer(self, config: PeerConfig) -> None: ...

    async def update_peer(self, config: PeerConfig) -> None: ...

    async def remove_peer(self, peer_id: str) -> None: ...

    def peer_down(self, peer_id: str, reason: DownReason = ..., graceful: bool = ...) -> None: ...

    def add_listener(self, callback: Callable[[SpeakerEvent], None]) -> Callable[[], None]: ...

    def set_route_selection(self, max_paths: int, always_compare_med: bool = ...) -> None: ...

    def status(self, peer_id: str) -> PeerStatus: ...

    def adj_rib_in(self, peer_id: str) -> AdjRibIn | None: ...


__all__ = [
    "ConnectionRefused",
    "EndOfRib",
    "GracefulMode",
    "NegotiatedInfo",
    "NotificationInfo",
    "PeerConfig",
    "PeerStateChanged",
    "PeerStatus",
    "PrefixLimit",
    "RoutesChanged",
    "Speaker",
    "SpeakerEvent",
    "SpeakerStatus",
    "notification_name",
]
