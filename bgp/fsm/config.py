"""Per-peer session configuration, validated once so the state machine can trust it."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from bgp.types import IPV4_UNICAST, IPV6_UNICAST, Family, IPAddress

MAX_ASN = 0xFFFFFFFF
MAX_RESTART_TIME = 0x0FFF  # 12-bit field of the graceful restart capability (RFC 4724 §3)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What we are, who the peer must be, and the timers and capabilities we offer.

    Timers are seconds. `hold_time` is what we put in our OPEN (0 disables keepalives and hold,
    otherwise at least 3, RFC 4271 §4.2); `keepalive_time` None means a third of the negotiated hold
    time, a configured value is capped at that third. `open_hold_time` is the large hold timer used
    while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes). After an error-driven
    drop the session stays Idle `idle_hold_time` seconds before it reconnects, doubling on each
    further drop up to `max_idle_hold_time` (RFC 4271 §8.1.1 DampPeerOscillations); the backoff
    starts over once a session has stayed Established for `idle_hold_reset_time`.
    """

    local_asn: int
    peer_asn: int
    router_id: IPv4Address
    peer_address: IPAddress
    hold_time: int = 90
    keepalive_time: int | None = None
    connect_retry_time: float = 5.0
    passive: bool = False
    families: tuple[Family, ...] = (IPV4_UNICAST, IPV6_UNICAST)
    # We advertise graceful restart as a receiving speaker (no forwarding state kept) when set.
    graceful_restart_time: int | None = 120
    # RFC 8538 N bit: when both sides set it, a NOTIFICATION other than Hard Reset keeps routes stale.
    # Off by default: for fast failover a peer that says goodbye has its routes withdrawn at once.
    graceful_restart_notification: bool = False
    extended_message: bool = True
    add_path_receive: tuple[Family, ...] = ()
    idle_hold_time: float = 1.0
    max_idle_hold_time: float = 60.0
    idle_hold_reset_time: float = 60.0
    open_hold_time: int = 240

    def __post_init__(self) -> None:
        for name, asn in (("local_asn", self.local_asn), ("peer_asn", self.peer_asn)):
            if not 1 <= asn <= MAX_ASN:
                raise ValueError(f"{name} {asn} is not a valid 4-octet ASN")
        if self.hold_time != 0 and not 3 <= self.hold_time <= 0xFFFF:
            raise ValueError(f"hold_time {self.hold_time}: must be 0 or 3..65535 (RFC 4271 §4.2)")
        if self.keepalive_time is not None and self.keepalive_time < 1:
            raise ValueError(f"keepalive_time {self.keepalive_time}: must be at least 1")
        if self.connect_retry_time <= 0:
            raise ValueError("connect_retry_time must be positive")
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError("families must be non-empty and without duplicates")
        if not set(self.add_path_receive) <= set(self.families):
            raise ValueError("add_path_receive must be a subset of families")
        if self.graceful_restart_time is not None and not 0 <= self.graceful_restart_time <= MAX_RESTART_TIME:
            raise ValueError(f"graceful_restart_time must be 0..{MAX_RESTART_TIME}")
        if self.idle_hold_time < 0 or self.max_idle_hold_time < self.idle_hold_time:
            raise ValueError("need 0 <= idle_hold_time <= max_idle_hold_time")
        if self.idle_hold_reset_time < 0:
            raise ValueError("idle_hold_reset_time must not be negative")
        if self.open_hold_time < 3:
            raise ValueError("open_hold_time must be at least 3")

    @property
    def ibgp(self) -> bool:
        return self.local_asn == self.peer_asn
