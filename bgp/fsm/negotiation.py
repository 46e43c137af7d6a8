"""Our OPEN, the checks on the peer's OPEN, and what the two OPENs negotiate.

Pure functions of the configuration and the decoded OPEN, so the rules are testable without a
session: RFC 4271 §6.2 (peer AS, BGP identifier, optional parameters), RFC 6793 (4-octet AS and
AS_TRANS), RFC 4760 §8 (no multiprotocol capability means IPv4 unicast), RFC 5492 (capabilities),
RFC 8654, RFC 7911, RFC 2918/7313, RFC 4724/8538.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from bgp.codec.capabilities import (
    AddPath,
    AddPathMode,
    Capability,
    EnhancedRouteRefresh,
    ExtendedMessage,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefreshCapability,
    encode_capability,
)
from bgp.codec.errors import OpenSubcode, open_error
from bgp.codec.messages import CodecContext, Open
from bgp.fsm.config import SessionConfig
from bgp.types import AS_TRANS, IPV4_UNICAST, Family


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What both OPENs agreed on; `codec` is the context every later message is read and written with."""

    hold_time: int  # 0: no keepalives, no hold timer
    keepalive_time: int  # 0 when hold_time is 0
    families: tuple[Family, ...]
    four_octet_as: bool
    extended_message: bool
    add_path_receive: frozenset[Family]
    route_refresh: bool
    enhanced_route_refresh: bool
    peer_router_id: IPv4Address
    peer_asn: int
    peer_graceful_restart: GracefulRestart | None  # the peer's capability, as received
    graceful_restart: bool  # both sides advertised graceful restart
    graceful_notification: bool  # both sides set the RFC 8538 N bit
    codec: CodecContext

    def stale_families(self) -> tuple[Family, ...]:
        """Families whose routes the RIB keeps as stale when the peer restarts (RFC 4724 §4.2)."""
        gr = self.peer_graceful_restart
        if not self.graceful_restart or gr is None:
            return ()
        listed = {family for family, _forwarding in gr.families}
        return tuple(f for f in self.families if f in listed)


def build_open(config: SessionConfig) -> Open:
    """Our OPEN: hold time, identifier and the capabilities we support for this peer."""
    caps: list[Capability] = [Multiprotocol(family) for family in config.families]
    caps += [RouteRefreshCapability(), EnhancedRouteRefresh(), FourOctetAs(config.local_asn)]
    if config.extended_message:
        caps.append(ExtendedMessage())
    if config.graceful_restart_time is not None:
        # Receiving speaker only: we keep no forwarding state across our own restart, so the F bit
        # is clear for every family (RFC 4724 §3) and the R bit is never set.
        caps.append(
            GracefulRestart(
                config.graceful_restart_time,
                restarting=False,
                notification=config.graceful_restart_notification,
                families=tuple((family, False) for family in config.families),
            )
        )
    if config.add_path_receive:
        caps.append(AddPath(tuple((family, AddPathMode.RECEIVE) for family in config.add_path_receive)))
    return Open(
        asn=config.local_asn, hold_time=config.hold_time, router_id=config.router_id, capabilities=tuple(caps)
    )


def peer_families(message: Open) -> tuple[Family, ...]:
    """The families the peer offers: IPv4 unicast when it sends no multiprotocol capability (RFC 4760 §8)."""
    families = tuple(dict.fromkeys(c.family for c in message.capabilities if isinstance(c, Multiprotocol)))
    return families or (IPV4_UNICAST,)


def check_open(config: SessionConfig, message: Open, my_as_field: int) -> None:
    """Raise the BgpError to send when the peer's OPEN is unacceptable (RFC 4271 §6.2).

    `my_as_field` is the raw 2-octet My Autonomous System field: with the 4-octet AS capability it
    must be AS_TRANS for a non-mappable ASN and the ASN itself otherwise (RFC 6793 §4.1), and the
    ASN from the capability is what must match the configured peer AS.
    """
    if message.unknown_parameters:
        ptype = message.unknown_parameters[0][0]
        raise open_error(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, f"optional parameter type {ptype}")
    four = next((c for c in message.capabilities if isinstance(c, FourOctetAs)), None)
    if four is not None:
        expected_field = four.asn if four.asn <= 0xFFFF else AS_TRANS
        if my_as_field != expected_field:
            raise open_error(
                OpenSubcode.BAD_PEER_AS, f"My AS {my_as_field} inconsistent with 4-octet AS {four.asn}"
            )
        asn = four.asn
    else:
        asn = my_as_field
    if asn != config.peer_asn:
        raise open_error(OpenSubcode.BAD_PEER_AS, f"peer AS {asn}, expected {config.peer_asn}")
    # RFC 6286 §2.2: identifiers need only be unique within an AS, so only iBGP peers may not reuse ours.
    if config.ibgp and message.router_id == config.router_id:
        raise open_error(OpenSubcode.BAD_BGP_IDENTIFIER, f"BGP identifier {message.router_id} is ours")
    if not set(peer_families(message)) & set(config.families):
        # RFC 5492 §3: the data lists the capabilities we needed and the peer lacks.
        ours = b"".join(encode_capability(Multiprotocol(f)) for f in config.families)
        raise open_error(OpenSubcode.UNSUPPORTED_CAPABILITY, "no address family in common", ours)


def negotiate(config: SessionConfig, message: Open) -> Negotiated:
    """Combine our configuration with the peer's (checked) OPEN."""
    caps = message.capabilities
    offered = set(peer_families(message))
    families = tuple(f for f in config.families if f in offered)
    hold = min(config.hold_time, message.hold_time)  # RFC 4271 §4.2; 0 wins
    if hold == 0:
        keepalive = 0
    else:
        keepalive = hold // 3 if config.keepalive_time is None else min(config.keepalive_time, hold // 3)
    four_octet = any(isinstance(c, FourOctetAs) for c in caps)
    # RFC 8654 §3: larger messages only when both sides advertised the capability.
    extended = config.extended_message and any(isinstance(c, ExtendedMessage) for c in caps)
    # RFC 7911 §4: we receive path identifiers for a family where we said receive and the peer said send.
    peer_sends: set[Family] = set()
    for cap in caps:
        if isinstance(cap, AddPath):
            peer_sends.update(f for f, mode in cap.entries if mode & AddPathMode.SEND)
    add_path = frozenset(f for f in config.add_path_receive if f in peer_sends and f in families)
    route_refresh = any(isinstance(c, RouteRefreshCapability) for c in caps)
    enhanced = route_refresh and any(isinstance(c, EnhancedRouteRefresh) for c in caps)
    peer_gr = next((c for c in caps if isinstance(c, GracefulRestart)), None)
    gr_both = config.graceful_restart_time is not None and peer_gr is not None
    codec = CodecContext(
        four_octet_as=four_octet,
        extended_message=extended,
        add_path_receive=add_path,
        external=not config.ibgp,
    )
    return Negotiated(
        hold_time=hold,
        keepalive_time=keepalive,
        families=families,
        four_octet_as=four_octet,
        extended_message=extended,
        add_path_receive=add_path,
        route_refresh=route_refresh,
        enhanced_route_refresh=enhanced,
        peer_router_id=message.router_id,
        peer_asn=message.asn,
        peer_graceful_restart=peer_gr,
        graceful_restart=gr_both,
        graceful_notification=gr_both
        and config.graceful_restart_notification
        and peer_gr is not None
        and peer_gr.notification,
        codec=codec,
    )
