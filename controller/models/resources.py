"""Pydantic mirrors of the four routeserver.dev/v1alpha1 kinds (crds/*.yaml is the source of truth).

RouteServer, RouteServerPeer and RouteTableAssociation are written by people (or read from YAML in
standalone mode); RouteServerSession is written only by agents. Descriptions and the reasons for
each default and limit are in the CRD YAML; here are only the rules that code needs: validation
(mirroring the CEL rules), and the API's inheritance semantics (a peer's bfd overrides, its
allowedPrefixes replacing the route server's importPolicy).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controller.desired import Liveness  # the enum is shared with the desired state
from controller.models.common import (
    MAX_UINT32,
    REASON_PATTERN,
    Asn,
    Condition,
    IPAddress,
    IPAddressValue,
    LabelSelector,
    ObjectMeta,
    ObjectRef,
    PrefixMatch,
    SecretKeyRef,
    SecretRef,
    SpecModel,
    StatusModel,
    parse_ip,
)

Count = Annotated[int, Field(ge=0)]

# -- RouteServer --------------------------------------------------------------------------------


class RouteSelectionMode(enum.StrEnum):
    ACTIVE_PASSIVE = "ActivePassive"
    ECMP = "ECMP"


class PersistState(enum.StrEnum):
    LIVE = "Live"
    HOLDING = "Holding"
    RECOVERING = "Recovering"


def _router_id(value: object) -> object:
    message = "routerID must be a non-zero IPv4 address in dotted-quad form (RFC 6286)"
    try:
        address = parse_ip(value)
    except ValueError as exc:
        raise ValueError(message) from exc
    if isinstance(address, IPv4Address) and int(address) != 0:
        return address
    raise ValueError(message)


class RouteSelection(SpecModel):
    mode: RouteSelectionMode = RouteSelectionMode.ACTIVE_PASSIVE
    max_paths: int = Field(default=8, ge=1, le=64)
    always_compare_med: bool = Field(default=False, alias="alwaysCompareMED")


class PersistRoutes(SpecModel):
    enabled: bool = False
    duration_seconds: int = Field(default=120, ge=60, le=300)


class ImportPolicy(SpecModel):
    allowed_prefixes: tuple[PrefixMatch, ...] | None = Field(default=None, max_length=1024)


class BfdProfile(SpecModel):
    min_tx_interval_milliseconds: int = Field(default=300, ge=10, le=10000)
    min_rx_interval_milliseconds: int | None = Field(default=None, ge=10, le=10000)
    detect_multiplier: int = Field(default=3, ge=1, le=255)
    passive: bool = False

    def effective(self, override: PeerBfd | None = None) -> EffectiveBfd:
        """This profile with a peer's overrides applied field by field.

        minRx, when neither side sets it, follows the effective minTx: lowering minTx alone makes
        detection faster in both directions (RFC 5880 §6.8.4 uses the remote's TX and our RX).
        """
        o = override or PeerBfd()
        min_tx = o.min_tx_interval_milliseconds or self.min_tx_interval_milliseconds
        min_rx = o.min_rx_interval_milliseconds or self.min_rx_interval_milliseconds or min_tx
        return EffectiveBfd(
            min_tx_ms=min_tx,
            min_rx_ms=min_rx,
            detect_multiplier=o.detect_multiplier or self.detect_multiplier,
            passive=self.passive if o.passive is None else o.passive,
            multihop=o.multihop,
            auth=o.auth,
        )


class ServerGracefulRestart(SpecModel):
    restart_time_seconds: int = Field(default=120, ge=1, le=4095)


class RouteServerSpec(SpecModel):
    asn: Asn
    router_id: IPv4Address | None = Field(default=None, alias="routerID")
    listen_port: int = Field(default=179, ge=1, le=65535)
    listen_addresses: tuple[IPAddress, ...] | None = Field(default=None, max_length=16)
    node_selector: LabelSelector | None = None
    route_selection: RouteSelection = Field(default_factory=RouteSelection)
    persist_routes: PersistRoutes = Field(default_factory=PersistRoutes)
    import_policy: ImportPolicy | None = None
    bfd_profile: BfdProfile = Field(default_factory=BfdProfile)
    graceful_restart: ServerGracefulRestart = Field(default_factory=ServerGracefulRestart)

    @field_validator("listen_addresses")
    @classmethod
    def _unique_addresses(cls, value: tuple[IPAddressValue, ...] | None) -> tuple[IPAddressValue, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("listenAddresses entries must be unique")
        return value

    @field_validator("router_id", mode="before")
    @classmethod
    def _router_id_form(cls, value: object) -> object:
        return _router_id(value)


class RouteServerStatus(StatusModel):
    observed_generation: Count | None = None
    conditions: tuple[Condition, ...] | None = Field(default=None, max_length=16)
    endpoints: Count | None = None
    peers: Count | None = None
    peers_up: Count | None = None
    routes: Count | None = None
    persist_state: PersistState | None = None
    lease_holder: str | None = Field(default=None, max_length=253)


# -- RouteServerPeer ----------------------------------------------------------------------------


class BfdAuthType(enum.StrEnum):
    """RFC 5880 §4.2-4.4 authentication types."""

    SIMPLE_PASSWORD = "SimplePassword"
    KEYED_MD5 = "KeyedMD5"
    METICULOUS_KEYED_MD5 = "MeticulousKeyedMD5"
    KEYED_SHA1 = "KeyedSHA1"
    METICULOUS_KEYED_SHA1 = "MeticulousKeyedSHA1"


class MaxPrefixAction(enum.StrEnum):
    WARN = "Warn"
    REJECT = "Reject"
    TEARDOWN = "Teardown"


def _peer_address(value: object) -> object:
    """CEL `ip.isGlobalUnicast() || ip.isLoopback()`: private ranges and loopback pass."""
    message = "peerAddress must be a unicast IPv4 or IPv6 address (not link-local, multicast or unspecified)"
    try:
        address = parse_ip(value)
    except ValueError as exc:
        raise ValueError(message) from exc
    if isinstance(address, IPv4Address | IPv6Address):
        unusable = address.is_multicast or address.is_link_local or address.is_unspecified
        if not unusable and address != IPv4Address("255.255.255.255"):
            return address
    raise ValueError(message)


class Timers(SpecModel):
    hold_time_seconds: int = Field(default=90, ge=0, le=65535)
    keepalive_time_seconds: int | None = Field(default=None, ge=1, le=21845)
    connect_retry_time_seconds: int = Field(default=30, ge=1, le=65535)

    @field_validator("hold_time_seconds")
    @classmethod
    def _hold_time(cls, value: int) -> int:
        if value in (1, 2):  # RFC 4271 §4.2
            raise ValueError("holdTimeSeconds must be 0 or at least 3 (RFC 4271 §4.2)")
        return value

    @field_validator("keepalive_time_seconds")
    @classmethod
    def _keepalive(cls, value: int | None, info: ValidationInfo) -> int | None:
        hold = info.data.get("hold_time_seconds")
        if value is not None and hold is not None and (hold == 0 or value >= hold):
            raise ValueError(
                "keepaliveTimeSeconds must be less than holdTimeSeconds, and unset when holdTimeSeconds is 0"
            )
        return value


class BfdAuth(SpecModel):
    type: BfdAuthType
    key_id: int = Field(alias="keyID", ge=0, le=255)
    secret_ref: SecretKeyRef


class PeerBfd(SpecModel):
    """Overrides of the route server's bfdProfile; None inherits."""

    min_tx_interval_milliseconds: int | None = Field(default=None, ge=10, le=10000)
    min_rx_interval_milliseconds: int | None = Field(default=None, ge=10, le=10000)
    detect_multiplier: int | None = Field(default=None, ge=1, le=255)
    passive: bool | None = None
    multihop: bool = False
    auth: BfdAuth | None = None


@dataclass(frozen=True, slots=True)
class EffectiveBfd:
    """The BFD parameters one peer's sessions run with."""

    min_tx_ms: int
    min_rx_ms: int
    detect_multiplier: int
    passive: bool
    multihop: bool
    auth: BfdAuth | None


class TtlSecurity(SpecModel):
    hops: int = Field(default=1, ge=1, le=254)

    @property
    def min_ttl(self) -> int:
        """Lowest TTL accepted from the peer (RFC 5082 §3)."""
        return 256 - self.hops


class MaxPrefixes(SpecModel):
    limit: int = Field(default=10000, ge=1, le=MAX_UINT32)
    action: MaxPrefixAction = MaxPrefixAction.TEARDOWN
    restart_after_seconds: int | None = Field(default=None, ge=5, le=86400)
    warning_threshold_percent: int = Field(default=75, ge=1, le=100)

    @field_validator("restart_after_seconds")
    @classmethod
    def _restart_after(cls, value: int | None, info: ValidationInfo) -> int | None:
        action = info.data.get("action", MaxPrefixAction.TEARDOWN)  # absent when invalid: refused there
        if value is not None and action is not MaxPrefixAction.TEARDOWN:
            raise ValueError("restartAfterSeconds only applies to action Teardown")
        return value


class PeerGracefulRestart(SpecModel):
    enabled: bool = False
    stale_routes_time_seconds: int = Field(default=360, ge=1, le=3600)


class AddPath(SpecModel):
    receive: bool = False


class RouteServerPeerSpec(SpecModel):
    # Field order matters: cross-field validators read the fields declared before them.
    route_server_ref: ObjectRef
    peer_address: IPAddressValue
    peer_asn: Asn = Field(alias="peerASN")
    local_address: IPAddress | None = None
    port: int = Field(default=179, ge=1, le=65535)
    passive: bool = False
    liveness: Liveness = Liveness.BFD
    timers: Timers = Field(default_factory=Timers)
    bfd: PeerBfd | None = None
    auth_secret_ref: SecretKeyRef | None = None
    ebgp_multihop_ttl: int | None = Field(default=None, alias="ebgpMultihopTTL", ge=1, le=255)
    ttl_security: TtlSecurity | None = None
    allowed_prefixes: tuple[PrefixMatch, ...] | None = Field(default=None, max_length=1024)
    max_prefixes: MaxPrefixes = Field(default_factory=MaxPrefixes)
    graceful_restart: PeerGracefulRestart = Field(default_factory=PeerGracefulRestart)
    add_path: AddPath | None = None

    @field_validator("peer_address", mode="before")
    @classmethod
    def _parse_peer_address(cls, value: object) -> object:
        return _peer_address(value)

    @field_validator("local_address")
    @classmethod
    def _same_family(cls, value: IPAddressValue | None, info: ValidationInfo) -> IPAddressValue | None:
        peer = info.data.get("peer_address")
        if value is not None and peer is not None and value.version != peer.version:
            raise ValueError("localAddress must be of the same address family as peerAddress")
        return value

    @field_validator("timers")
    @classmethod
    def _liveness_needs_hold_time(cls, value: Timers, info: ValidationInfo) -> Timers:
        if info.data.get("liveness") is Liveness.BGP_KEEPALIVE and value.hold_time_seconds == 0:
            raise ValueError("timers.holdTimeSeconds must not be 0 when liveness is BGPKeepalive")
        return value

    @field_validator("bfd")
    @classmethod
    def _bfd_needs_bfd_liveness(cls, value: PeerBfd | None, info: ValidationInfo) -> PeerBfd | None:
        if value is not None and info.data.get("liveness") is not Liveness.BFD:
            raise ValueError("bfd settings require liveness BFD")
        return value

    @field_validator("ttl_security")
    @classmethod
    def _not_with_multihop(cls, value: TtlSecurity | None, info: ValidationInfo) -> TtlSecurity | None:
        if value is not None and info.data.get("ebgp_multihop_ttl") is not None:
            raise ValueError(
                "ebgpMultihopTTL and ttlSecurity are mutually exclusive "
                "(GTSM, RFC 5082, sends TTL 255 and checks the received TTL)"
            )
        return value

    def import_allow_list(self, server: RouteServerSpec) -> tuple[PrefixMatch, ...]:
        """The allow-list applied to this peer: its own when set (even empty), else the server's."""
        if self.allowed_prefixes is not None:
            return self.allowed_prefixes
        if server.import_policy is not None and server.import_policy.allowed_prefixes is not None:
            return server.import_policy.allowed_prefixes
        return ()


class RouteServerPeerStatus(StatusModel):
    observed_generation: Count | None = None
    conditions: tuple[Condition, ...] | None = Field(default=None, max_length=16)
    sessions: Count | None = None
    sessions_established: Count | None = None
    bfd_sessions_up: Count | None = None
    prefixes_accepted: Count | None = None


# -- RouteTableAssociation ----------------------------------------------------------------------


TABLE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
ROUTE_TABLE_ID_PATTERN = r"^rtb-([0-9a-f]{8}|[0-9a-f]{17})$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
URL_PATTERN = r"^https?://[^\s]+$"


class NodeTarget(SpecModel):
    table: int | None = Field(default=None, ge=1, le=MAX_UINT32)
    table_name: str | None = Field(default=None, min_length=1, max_length=63, pattern=TABLE_NAME_PATTERN)
    metric: int | None = Field(default=None, ge=0, le=MAX_UINT32)
    node_selector: LabelSelector | None = None

    @field_validator("table")
    @classmethod
    def _not_local(cls, value: int | None) -> int | None:
        if value == 255:
            raise ValueError("table 255 is the kernel's local table and cannot be written")
        return value

    @field_validator("table_name")
    @classmethod
    def _not_reserved_name(cls, value: str | None) -> str | None:
        if value in ("local", "unspec"):
            raise ValueError("tableName must not be local or unspec")
        return value

    @model_validator(mode="after")
    def _one_table(self) -> NodeTarget:
        if (self.table is None) == (self.table_name is None):
            raise ValueError("target.node must set exactly one of table or tableName")
        return self


class AwsTarget(SpecModel):
    route_table_id: str = Field(alias="routeTableID", max_length=21, pattern=ROUTE_TABLE_ID_PATTERN)
    region: str | None = Field(default=None, max_length=32, pattern=REGION_PATTERN)
    endpoint_url: str | None = Field(default=None, alias="endpointURL", max_length=2048, pattern=URL_PATTERN)
    credentials_secret_ref: SecretRef | None = None


class Target(SpecModel):
    node: NodeTarget | None = None
    aws: AwsTarget | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if self.node is None and self.aws is None:
            raise ValueError("target must set one of target.node or target.aws")
        if self.node is not None and self.aws is not None:
            raise ValueError("target.node and target.aws are mutually exclusive")
        return self


class RouteTableAssociationSpec(SpecModel):
    route_server_ref: ObjectRef
    target: Target
    prefix_filter: tuple[PrefixMatch, ...] | None = Field(default=None, max_length=1024)


class RejectedRoute(StatusModel):
    prefix: str = Field(max_length=43)
    node: str | None = Field(default=None, max_length=253)
    reason: str = Field(min_length=1, max_length=64, pattern=REASON_PATTERN)
    message: str | None = Field(default=None, max_length=1024)


class RouteTableAssociationStatus(StatusModel):
    observed_generation: Count | None = None
    conditions: tuple[Condition, ...] | None = Field(default=None, max_length=16)
    targets: Count | None = None
    targets_in_sync: Count | None = None
    routes_desired: Count | None = None
    routes_installed: Count | None = None
    routes_rejected: Count | None = None
    rejected_routes: tuple[RejectedRoute, ...] | None = Field(default=None, max_length=64)
    last_sync_time: datetime | None = None


# -- RouteServerSession -------------------------------------------------------------------------


class BgpState(enum.StrEnum):
    """RFC 4271 §8.2.2."""

    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


class BfdState(enum.StrEnum):
    """RFC 5880 §4.1 State."""

    ADMIN_DOWN = "AdminDown"
    DOWN = "Down"
    INIT = "Init"
    UP = "Up"


class AddressFamily(enum.StrEnum):
    IPV4_UNICAST = "IPv4Unicast"
    IPV6_UNICAST = "IPv6Unicast"


class RouteServerSessionSpec(SpecModel):
    node: str = Field(min_length=1, max_length=253)
    peer_ref: ObjectRef


class Negotiated(StatusModel):
    hold_time_seconds: int | None = Field(default=None, ge=0, le=65535)
    keepalive_time_seconds: int | None = Field(default=None, ge=0, le=65535)
    peer_router_id: str | None = Field(default=None, alias="peerRouterID", max_length=15)
    four_octet_asn: bool | None = Field(default=None, alias="fourOctetASN")
    address_families: tuple[AddressFamily, ...] | None = Field(default=None, max_length=8)
    add_path_receive: bool | None = None
    graceful_restart: bool | None = None
    bfd_transmit_interval_milliseconds: Count | None = None
    bfd_detection_time_milliseconds: Count | None = None


class RouteServerSessionStatus(StatusModel):
    bgp_state: BgpState | None = None
    bfd_state: BfdState | None = None
    established_time: datetime | None = None
    last_transition_time: datetime | None = None
    last_transition_reason: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=REASON_PATTERN
    )
    last_transition_message: str | None = Field(default=None, max_length=1024)
    established_transitions: Count | None = None
    negotiated: Negotiated | None = None
    prefixes_received: Count | None = None
    prefixes_accepted: Count | None = None
    prefixes_rejected: Count | None = None
    prefixes_installed: Count | None = None
    last_update_time: datetime | None = None


# -- the resources ------------------------------------------------------------------------------


class _Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    api_version: Literal["routeserver.dev/v1alpha1"] = Field(
        default="routeserver.dev/v1alpha1", alias="apiVersion"
    )
    metadata: ObjectMeta


class RouteServer(_Resource):
    kind: Literal["RouteServer"] = "RouteServer"
    spec: RouteServerSpec
    status: RouteServerStatus | None = None


class RouteServerPeer(_Resource):
    kind: Literal["RouteServerPeer"] = "RouteServerPeer"
    spec: RouteServerPeerSpec
    status: RouteServerPeerStatus | None = None


class RouteTableAssociation(_Resource):
    kind: Literal["RouteTableAssociation"] = "RouteTableAssociation"
    spec: RouteTableAssociationSpec
    status: RouteTableAssociationStatus | None = None


class RouteServerSession(_Resource):
    kind: Literal["RouteServerSession"] = "RouteServerSession"
    spec: RouteServerSessionSpec
    status: RouteServerSessionStatus | None = None


Resource = RouteServer | RouteServerPeer | RouteTableAssociation | RouteServerSession

# Plural names, for the API paths and kopf registrations.
PLURALS: dict[str, str] = {
    "RouteServer": "routeservers",
    "RouteServerPeer": "routeserverpeers",
    "RouteTableAssociation": "routetableassociations",
    "RouteServerSession": "routeserversessions",
}

_ADAPTER: TypeAdapter[Resource] = TypeAdapter(Annotated[Resource, Field(discriminator="kind")])


def parse_resource(obj: Mapping[str, Any]) -> Resource:
    """One object in API form (from the API server or a YAML file), validated as its kind."""
    return _ADAPTER.validate_python(obj)
