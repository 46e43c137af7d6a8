"""BGP capabilities (RFC 5492) carried in OPEN optional parameters.

Wire format of one capability::

    +------------------------------+
    | Capability Code (1 octet)    |
    | Capability Length (1 octet)  |
    | Capability Value (variable)  |
    +------------------------------+

Values: multiprotocol (1, RFC 4760: AFI u16, reserved u8, SAFI u8), route refresh (2, RFC 2918;
and 128, the pre-standard code), extended next hop (5, RFC 8950: [NLRI AFI u16, NLRI SAFI u16,
next-hop AFI u16]*), extended message (6, RFC 8654: empty), graceful restart (64, RFC 4724:
flags(4 bits)+restart time(12 bits), [AFI u16, SAFI u8, flags u8]*), 4-octet AS (65, RFC 6793:
ASN u32), ADD-PATH (69, RFC 7911: [AFI u16, SAFI u8, send/receive u8]*), enhanced route refresh
(70, RFC 7313: empty). Anything else is kept as UnknownCapability.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from bgp.codec.errors import BgpError, OpenSubcode, open_error
from bgp.types import AFI, SAFI, Family


class CapabilityCode(enum.IntEnum):
    MULTIPROTOCOL = 1
    ROUTE_REFRESH = 2
    EXTENDED_NEXT_HOP = 5
    EXTENDED_MESSAGE = 6
    GRACEFUL_RESTART = 64
    FOUR_OCTET_AS = 65
    ADD_PATH = 69
    ENHANCED_ROUTE_REFRESH = 70
    ROUTE_REFRESH_OLD = 128


class AddPathMode(enum.IntFlag):
    RECEIVE = 1
    SEND = 2


@dataclass(frozen=True, slots=True)
class Multiprotocol:
    family: Family


@dataclass(frozen=True, slots=True)
class RouteRefreshCapability:
    old_code: bool = False  # sent as code 128 (pre-RFC 2918)


@dataclass(frozen=True, slots=True)
class EnhancedRouteRefresh:
    pass


@dataclass(frozen=True, slots=True)
class ExtendedMessage:
    pass


@dataclass(frozen=True, slots=True)
class FourOctetAs:
    asn: int


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """RFC 4724 §3: R (restart state) and N (notification, RFC 8538) flags, restart time, per-family F bit."""

    restart_time: int
    restarting: bool = False
    notification: bool = False
    families: tuple[tuple[Family, bool], ...] = ()  # (family, forwarding state preserved)


@dataclass(frozen=True, slots=True)
class AddPath:
    entries: tuple[tuple[Family, AddPathMode], ...]


@dataclass(frozen=True, slots=True)
class ExtendedNextHop:
    entries: tuple[tuple[Family, int], ...]  # (NLRI family, next-hop AFI)


@dataclass(frozen=True, slots=True)
class UnknownCapability:
    code: int
    value: bytes


Capability = (
    Multiprotocol
    | RouteRefreshCapability
    | EnhancedRouteRefresh
    | ExtendedMessage
    | FourOctetAs
    | GracefulRestart
    | AddPath
    | ExtendedNextHop
    | UnknownCapability
)


def _family(afi: int, safi: int) -> Family | None:
    try:
        return Family(AFI(afi), SAFI(safi))
    except ValueError:
        return None


def _bad(code: int, value: bytes) -> BgpError:
    # A malformed capability value: RFC 5492 leaves it to the implementation; we refuse the OPEN.
    return open_error(
        OpenSubcode.UNSUPPORTED_CAPABILITY, f"malformed capability {code}", bytes([code, len(value)]) + value
    )


def decode_capability(code: int, value: bytes) -> Capability:
    """One capability from its code and value bytes."""
    n = len(value)
    if code == CapabilityCode.MULTIPROTOCOL:
        if n != 4:
            raise _bad(code, value)
        afi, _reserved, safi = struct.unpack("!HBB", value)
        family = _family(afi, safi)
        return Multiprotocol(family) if family else UnknownCapability(code, value)
    if code in (CapabilityCode.ROUTE_REFRESH, CapabilityCode.ROUTE_REFRESH_OLD):
        if n != 0:
            raise _bad(code, value)
        return RouteRefreshCapability(old_code=code == CapabilityCode.ROUTE_REFRESH_OLD)
    if code == CapabilityCode.ENHANCED_ROUTE_REFRESH:
        if n != 0:
            raise _bad(code, value)
        return EnhancedRouteRefresh()
    if code == CapabilityCode.EXTENDED_MESSAGE:
        if n != 0:
            raise _bad(code, value)
        return ExtendedMessage()
    if code == CapabilityCode.FOUR_OCTET_AS:
        if n != 4:
            raise _bad(code, value)
        return FourOctetAs(struct.unpack("!I", value)[0])
    if code == CapabilityCode.GRACEFUL_RESTART:
        if n < 2 or (n - 2) % 4:
            raise _bad(code, value)
        (word,) = struct.unpack_from("!H", value)
        gr_families = []
        for off in range(2, n, 4):
            afi, safi, flags = struct.unpack_from("!HBB", value, off)
            family = _family(afi, safi)
            if family:
                gr_families.append((family, bool(flags & 0x80)))
        return GracefulRestart(word & 0x0FFF, bool(word & 0x8000), bool(word & 0x4000), tuple(gr_families))
    if code == CapabilityCode.ADD_PATH:
        if n == 0 or n % 4:
            raise _bad(code, value)
        entries = []
        for off in range(0, n, 4):
            afi, safi, mode = struct.unpack_from("!HBB", value, off)
            family = _family(afi, safi)
            if family and 1 <= mode <= 3:
                entries.append((family, AddPathMode(mode)))
        return AddPath(tuple(entries))
    if code == CapabilityCode.EXTENDED_NEXT_HOP:
        if n == 0 or n % 6:
            raise _bad(code, value)
        enh = []
        for off in range(0, n, 6):
            afi, safi, nh_afi = struct.unpack_from("!HHH", value, off)
            family = _family(afi, safi)
            if family:
                enh.append((family, nh_afi))
        return ExtendedNextHop(tuple(enh))
    return UnknownCapability(code, value)


def encode_capability(cap: Capability) -> bytes:
    """One capability, code + length + value."""
    code: int
    value: bytes
    match cap:
        case Multiprotocol(family):
            code, value = CapabilityCode.MULTIPROTOCOL, struct.pack("!HBB", family.afi, 0, family.safi)
        case RouteRefreshCapability(old_code):
            code, value = (
                (CapabilityCode.ROUTE_REFRESH_OLD if old_code else CapabilityCode.ROUTE_REFRESH),
                b"",
            )
        case EnhancedRouteRefresh():
            code, value = CapabilityCode.ENHANCED_ROUTE_REFRESH, b""
        case ExtendedMessage():
            code, value = CapabilityCode.EXTENDED_MESSAGE, b""
        case FourOctetAs(asn):
            code, value = CapabilityCode.FOUR_OCTET_AS, struct.pack("!I", asn)
        case GracefulRestart(restart_time, restarting, notification, families):
            word = (restart_time & 0x0FFF) | (0x8000 if restarting else 0) | (0x4000 if notification else 0)
            value = struct.pack("!H", word) + b"".join(
                struct.pack("!HBB", f.afi, f.safi, 0x80 if fwd else 0) for f, fwd in families
            )
            code = CapabilityCode.GRACEFUL_RESTART
        case AddPath(entries):
            code = CapabilityCode.ADD_PATH
            value = b"".join(struct.pack("!HBB", f.afi, f.safi, int(mode)) for f, mode in entries)
        case ExtendedNextHop(entries):
            code = CapabilityCode.EXTENDED_NEXT_HOP
            value = b"".join(struct.pack("!HHH", f.afi, f.safi, nh_afi) for f, nh_afi in entries)
        case UnknownCapability(raw_code, raw_value):
            code, value = raw_code, raw_value
    return bytes([int(code), len(value)]) + value
