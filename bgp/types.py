"""Core BGP value types shared by the codec, the FSM and the RIB.

Every type here is immutable and hashable so identical attribute sets can be interned
(DESIGN.md §8: a full table has ~1M prefixes but far fewer distinct attribute sets).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Prefix = IPv4Network | IPv6Network

AS_TRANS = 23456  # RFC 6793 §9


class AFI(enum.IntEnum):
    """Address Family Identifier (IANA)."""

    IPV4 = 1
    IPV6 = 2


class SAFI(enum.IntEnum):
    """Subsequent Address Family Identifier (IANA)."""

    UNICAST = 1


@dataclass(frozen=True, slots=True)
class Family:
    """An (AFI, SAFI) pair, the unit of multiprotocol negotiation (RFC 4760)."""

    afi: AFI
    safi: SAFI = SAFI.UNICAST

    def __str__(self) -> str:
        return f"{self.afi.name.lower()}-{self.safi.name.lower()}"


IPV4_UNICAST = Family(AFI.IPV4, SAFI.UNICAST)
IPV6_UNICAST = Family(AFI.IPV6, SAFI.UNICAST)


class Origin(enum.IntEnum):
    """ORIGIN attribute values (RFC 4271 §5.1.1); lower is preferred."""

    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class SegmentType(enum.IntEnum):
    """AS_PATH segment types (RFC 4271 §4.3, RFC 5065 §3)."""

    AS_SET = 1
    AS_SEQUENCE = 2
    AS_CONFED_SEQUENCE = 3
    AS_CONFED_SET = 4


@dataclass(frozen=True, slots=True)
class AsPathSegment:
    type: SegmentType
    asns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AsPath:
    """An AS_PATH as a sequence of segments (always with 4-octet ASNs once decoded)."""

    segments: tuple[AsPathSegment, ...] = ()

    def length(self) -> int:
        """Path length for the decision process (RFC 4271 §9.1.2.2 a).

        An AS_SET counts as 1; confederation segments do not count (RFC 5065 §5.3).
        """
        total = 0
        for seg in self.segments:
            if seg.type is SegmentType.AS_SEQUENCE:
                total += len(seg.asns)
            elif seg.type is SegmentType.AS_SET:
                total += 1
        return total

    def first_asn(self) -> int | None:
        """Leftmost AS of the first AS_SEQUENCE: the neighbouring AS (used for MED comparison)."""
        for seg in self.segments:
            if seg.type is SegmentType.AS_SEQUENCE and seg.asns:
                return seg.asns[0]
            if seg.type in (SegmentType.AS_CONFED_SEQUENCE, SegmentType.AS_CONFED_SET):
                continue
            return None
        return None

    def asns(self) -> tuple[int, ...]:
        """Every ASN in the path, in order (for loop detection)."""
        return tuple(asn for seg in self.segments for asn in seg.asns)

    def __str__(self) -> str:
        parts: list[str] = []
        for seg in self.segments:
            text = " ".join(str(a) for a in seg.asns)
            if seg.type is SegmentType.AS_SEQUENCE:
                parts.append(text)
            elif seg.type is SegmentType.AS_SET:
                parts.append("{" + text + "}")
            elif seg.type is SegmentType.AS_CONFED_SEQUENCE:
                parts.append("(" + text + ")")
            else:
                parts.append("[" + text + "]")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Aggregator:
    asn: int
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class LargeCommunity:
    """RFC 8092 large community: global administrator, two local data parts."""

    global_admin: int
    local1: int
    local2: int

    def __str__(self) -> str:
        return f"{self.global_admin}:{self.local1}:{self.local2}"


# Well-known communities (RFC 1997, RFC 3765, RFC 8326)
NO_EXPORT = 0xFFFFFF01
NO_ADVERTISE = 0xFFFFFF02
NO_EXPORT_SUBCONFED = 0xFFFFFF03
GRACEFUL_SHUTDOWN = 0xFFFF0000


@dataclass(frozen=True, slots=True)
class UnknownAttribute:
    """An attribute we do not interpret, kept verbatim (optional transitive ones pass on, Partial set)."""

    flags: int
    type_code: int
    value: bytes


@dataclass(frozen=True, slots=True)
class PathAttributes:
    """The path attributes of a route, as decoded (MP_REACH/MP_UNREACH are carried by the UPDATE, not here).

    `next_hop` is the NEXT_HOP attribute for IPv4 NLRI, or the MP_REACH next hop for multiprotocol
    NLRI (the global one; `link_local_next_hop` carries the optional IPv6 link-local one).
    """

    origin: Origin = Origin.INCOMPLETE
    as_path: AsPath = field(default_factory=AsPath)
    next_hop: IPAddress | None = None
    link_local_next_hop: IPv6Address | None = None
    med: int | None = None
    local_pref: int | None = None
    atomic_aggregate: bool = False
    aggregator: Aggregator | None = None
    communities: tuple[int, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    extended_communities: tuple[bytes, ...] = ()
    originator_id: IPv4Address | None = None
    cluster_list: tuple[IPv4Address, ...] = ()
    unknown: tuple[UnknownAttribute, ...] = ()


# -- Compact prefix keys ------------------------------------------------------------------------
#
# The RIB holds up to millions of prefixes; an ipaddress network object costs ~200 bytes and ~1 µs
# to build. Internally a prefix is one int: (address << 8) | length, with bit 136 set for IPv6.
# Ints hash fast, sort by family then address, and cost ~32 bytes. Convert at the edges.

PrefixKey = int
V6_KEY_FLAG = 1 << 136  # set in the keys of IPv6 prefixes (above the 128-bit address)
_V6_FLAG = V6_KEY_FLAG


def prefix_key(prefix: Prefix) -> PrefixKey:
    """The compact key of an ipaddress network."""
    key = (int(prefix.network_address) << 8) | prefix.prefixlen
    return key | _V6_FLAG if prefix.version == 6 else key


def key_is_ipv6(key: PrefixKey) -> bool:
    return key >= _V6_FLAG


def key_family(key: PrefixKey) -> Family:
    return IPV6_UNICAST if key >= _V6_FLAG else IPV4_UNICAST


def key_to_prefix(key: PrefixKey) -> Prefix:
    """The ipaddress network of a compact key."""
    length = key & 0xFF
    if key >= _V6_FLAG:
        return IPv6Network(((key ^ _V6_FLAG) >> 8, length))
    return IPv4Network((key >> 8, length))


def key_str(key: PrefixKey) -> str:
    """A key as text ("10.0.0.1/32"); IPv4 without an ipaddress object (its str() is slow Python)."""
    if key < _V6_FLAG:
        a = key >> 8
        return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{key & 0xFF}"
    return str(key_to_prefix(key))
