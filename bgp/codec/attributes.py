"""Path attributes (RFC 4271 §4.3, §5) with RFC 7606 error handling.

One attribute on the wire::

    | Attr. Flags (1) | Attr. Type Code (1) | Length (1, or 2 with Extended Length) | Value |

    Flags: 0x80 Optional, 0x40 Transitive, 0x20 Partial, 0x10 Extended Length (low 4 bits ignored)

Values (all integers big-endian):

    ORIGIN (1)            well-known    | 0 IGP / 1 EGP / 2 INCOMPLETE (1) |
    AS_PATH (2)           well-known    [| type (1) | count (1) | ASN (2 or 4, per 4-octet AS) x count |]*
                                        types: 1 AS_SET, 2 AS_SEQUENCE, 3 AS_CONFED_SEQUENCE, 4 AS_CONFED_SET
    NEXT_HOP (3)          well-known    | IPv4 address (4) |
    MULTI_EXIT_DISC (4)   opt non-tr.   | u32 |
    LOCAL_PREF (5)        well-known    | u32 |
    ATOMIC_AGGREGATE (6)  well-known    empty
    AGGREGATOR (7)        opt trans.    | ASN (2 or 4) | IPv4 address (4) |
    COMMUNITIES (8)       opt trans.    | u32 |*  (RFC 1997)
    ORIGINATOR_ID (9)     opt non-tr.   | IPv4 address (4) |  (RFC 4456)
    CLUSTER_LIST (10)     opt non-tr.   | IPv4 address (4) |*  (RFC 4456)
    MP_REACH_NLRI (14)    opt non-tr.   | AFI (2) | SAFI (1) | NH len (1) | next hop | reserved (1) | NLRI |
    MP_UNREACH_NLRI (15)  opt non-tr.   | AFI (2) | SAFI (1) | withdrawn NLRI |  (RFC 4760)
    EXTENDED_COMMUNITIES (16) opt tr.   | 8 octets |*  (RFC 4360)
    AS4_PATH (17)         opt trans.    AS_PATH with 4-octet ASNs, only between 2-octet speakers (RFC 6793)
    AS4_AGGREGATOR (18)   opt trans.    | ASN (4) | IPv4 address (4) |
    LARGE_COMMUNITIES (32) opt trans.   | global (4) | local 1 (4) | local 2 (4) |*  (RFC 8092)

MP_REACH next hops: 4 octets (IPv4), 16 (IPv6 global) or 32 (global + link-local, RFC 2545); an IPv6
next hop for IPv4 NLRI only when the extended next hop capability allows it (RFC 8950 §3).

Errors are classified per RFC 7606 and collected, never raised, unless the whole session must be reset:
treat-as-withdraw for ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID,
CLUSTER_LIST, EXTENDED_COMMUNITIES, LARGE_COMMUNITIES and wrong flags (§3 c, §7); attribute discard for
ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR (§7.6, §7.7, RFC 6793 §6); session reset when
an MP attribute cannot be parsed or repeats (§3 g, §7.11) or for an unrecognized well-known attribute.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from bgp.codec.errors import BgpError, ErrorAction, UpdateSubcode, update_error
from bgp.codec.messages import CodecContext
from bgp.types import (
    AFI,
    AS_TRANS,
    SAFI,
    Aggregator,
    AsPath,
    AsPathSegment,
    Family,
    IPAddress,
    LargeCommunity,
    Origin,
    PathAttributes,
    SegmentType,
    UnknownAttribute,
)


class AttrType(enum.IntEnum):
    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7
    COMMUNITIES = 8
    ORIGINATOR_ID = 9
    CLUSTER_LIST = 10
    MP_REACH_NLRI = 14
    MP_UNREACH_NLRI = 15
    EXTENDED_COMMUNITIES = 16
    AS4_PATH = 17
    AS4_AGGREGATOR = 18
    LARGE_COMMUNITIES = 32


class AttrFlag(enum.IntFlag):
    OPTIONAL = 0x80
    TRANSITIVE = 0x40
    PARTIAL = 0x20
    EXTENDED_LENGTH = 0x10


WELL_KNOWN = 0x40
OPTIONAL_NON_TRANSITIVE = 0x80
OPTIONAL_TRANSITIVE = 0xC0
_CATEGORY = 0xC0  # the Optional and Transitive bits, the ones RFC 7606 §3 c checks

# The Optional/Transitive bits each recognized attribute must carry (RFC 4271 §5, and each attribute's RFC).
EXPECTED_FLAGS: dict[int, int] = {
    AttrType.ORIGIN: WELL_KNOWN,
    AttrType.AS_PATH: WELL_KNOWN,
    AttrType.NEXT_HOP: WELL_KNOWN,
    AttrType.MULTI_EXIT_DISC: OPTIONAL_NON_TRANSITIVE,
    AttrType.LOCAL_PREF: WELL_KNOWN,
    AttrType.ATOMIC_AGGREGATE: WELL_KNOWN,
    AttrType.AGGREGATOR: OPTIONAL_TRANSITIVE,
    AttrType.COMMUNITIES: OPTIONAL_TRANSITIVE,
    AttrType.ORIGINATOR_ID: OPTIONAL_NON_TRANSITIVE,
    AttrType.CLUSTER_LIST: OPTIONAL_NON_TRANSITIVE,
    AttrType.MP_REACH_NLRI: OPTIONAL_NON_TRANSITIVE,
    AttrType.MP_UNREACH_NLRI: OPTIONAL_NON_TRANSITIVE,
    AttrType.EXTENDED_COMMUNITIES: OPTIONAL_TRANSITIVE,
    AttrType.AS4_PATH: OPTIONAL_TRANSITIVE,
    AttrType.AS4_AGGREGATOR: OPTIONAL_TRANSITIVE,
    AttrType.LARGE_COMMUNITIES: OPTIONAL_TRANSITIVE,
}

# RFC 7606 §7: what a malformed instance of each attribute costs. MP attributes' structural errors are
# session resets (§7.11); their flag errors fall under §3 c (treat-as-withdraw).
_DISCARD_ON_ERROR = frozenset(
    {AttrType.ATOMIC_AGGREGATE, AttrType.AGGREGATOR, AttrType.AS4_PATH, AttrType.AS4_AGGREGATOR}
)
_MP_TYPES = frozenset({AttrType.MP_REACH_NLRI, AttrType.MP_UNREACH_NLRI})

_TAW = ErrorAction.TREAT_AS_WITHDRAW
_DISCARD = ErrorAction.ATTRIBUTE_DISCARD
_RESET = ErrorAction.SESSION_RESET

_U32 = struct.Struct(">I")
_AGGREGATOR2 = struct.Struct(">HI")
_AGGREGATOR4 = struct.Struct(">II")
_FAMILY = struct.Struct(">HB")


def family_of(afi: int, safi: int) -> Family | None:
    """The Family of a wire AFI/SAFI pair, or None when we do not implement it."""
    try:
        return Family(AFI(afi), SAFI(safi))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class MpReach:
    """A decoded MP_REACH_NLRI; the NLRI stay in the buffer (data[nlri_start:nlri_end]) for the caller."""

    family: Family
    next_hop: IPAddress
    link_local: IPv6Address | None
    nlri_start: int
    nlri_end: int
    header: bytes  # AFI .. reserved octet: with the other attributes, the interning key of this route set


@dataclass(frozen=True, slots=True)
class MpUnreach:
    family: Family
    nlri_start: int
    nlri_end: int


@dataclass(slots=True)
class DecodedAttributes:
    """The attribute block of one UPDATE, after RFC 7606 handling.

    `attributes.next_hop` is the NEXT_HOP attribute (IPv4 NLRI); MP routes take `mp_reach.next_hop`.
    `present` holds the type codes that were received and kept (for the missing well-known check).
    `mp_spans` are the (start, end) of the MP attributes in the buffer, excluded from interning keys.
    """

    attributes: PathAttributes
    present: set[int]
    errors: list[BgpError] = field(default_factory=list)
    mp_reach: MpReach | None = None
    mp_unreach: MpUnreach | None = None
    mp_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def treat_as_withdraw(self) -> bool:
        return any(e.action is _TAW for e in self.errors)


class _Values:
    """Mutable accumulator for the attribute values while walking the block."""

    __slots__ = (
        "aggregator",
        "as4_aggregator",
        "as4_path",
        "as_path",
        "atomic_aggregate",
        "cluster_list",
        "communities",
        "extended_communities",
        "large_communities",
        "local_pref",
        "med",
        "next_hop",
        "origin",
        "originator_id",
        "unknown",
    )

    def __init__(self) -> None:
        self.origin = Origin.INCOMPLETE
        self.as_path = AsPath()
        self.next_hop: IPv4Address | None = None
        self.med: int | None = None
        self.local_pref: int | None = None
        self.atomic_aggregate = False
        self.aggregator: Aggregator | None = None
        self.communities: tuple[int, ...] = ()
        self.originator_id: IPv4Address | None = None
        self.cluster_list: tuple[IPv4Address, ...] = ()
        self.extended_communities: tuple[bytes, ...] = ()
        self.as4_path: AsPath | None = None
        self.as4_aggregator: Aggregator | None = None
        self.large_communities: tuple[LargeCommunity, ...] = ()
        self.unknown: list[UnknownAttribute] = []


def _error(subcode: UpdateSubcode, message: str, raw: bytes, action: ErrorAction) -> BgpError:
    return update_error(subcode, message, raw, action)


def decode_attributes(
    data: bytes, start: int, end: int, ctx: CodecContext, *, ignore_next_hop: bool = False
) -> DecodedAttributes:
    """The path attributes in data[start:end].

    Raises BgpError only when the session must be reset; every other RFC 7606 error is returned in
    `errors` with its action (treat-as-withdraw or attribute-discard) and the attribute is left out.
    `ignore_next_hop`: the UPDATE has no IPv4 NLRI field, so NEXT_HOP is ignored (RFC 4760 §3).
    """
    values = _Values()
    result = DecodedAttributes(PathAttributes(), set())
    errors = result.errors
    seen: set[int] = set()
    pos = start
    while pos < end:
        # RFC 7606 §4: too few octets left for an attribute header, or an attribute overrunning the
        # block, is treat-as-withdraw; the Total Path Attribute Length still locates the NLRI.
        if end - pos < 3 or (data[pos] & AttrFlag.EXTENDED_LENGTH and end - pos < 4):
            raw = bytes(data[pos:end])
            errors.append(
                _error(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "attribute header truncated", raw, _TAW)
            )
            break
        flags = data[pos]
        type_code = data[pos + 1]
        if flags & AttrFlag.EXTENDED_LENGTH:
            vstart = pos + 4
            vend = vstart + ((data[pos + 2] << 8) | data[pos + 3])
        else:
            vstart = pos + 3
            vend = vstart + data[pos + 2]
        if vend > end:
            raw = bytes(data[pos:end])
            message = f"attribute {type_code} overruns the attribute block"
            if type_code in _MP_TYPES:
                # RFC 7606 §3 j: without the MP attribute's NLRI, treat-as-withdraw is impossible.
                raise _error(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, message, raw, _RESET)
            errors.append(_error(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, message, raw, _TAW))
            break
        attr_start = pos
        pos = vend
        if type_code in seen:
            raw = bytes(data[attr_start:vend])
            message = f"attribute {type_code} repeated"
            if type_code in _MP_TYPES:
                # RFC 7606 §3 g: a repeated MP_REACH_NLRI or MP_UNREACH_NLRI is a session reset ...
                raise _error(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, message, raw, _RESET)
            # ... every other repeat is discarded and the first occurrence kept.
            errors.append(_error(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, message, raw, _DISCARD))
            continue
        seen.add(type_code)
        if ignore_next_hop and type_code == AttrType.NEXT_HOP:
            continue
        try:
            _decode_one(data, attr_start, vstart, vend, flags, type_code, ctx, values, result)
        except BgpError as err:
            if err.action is _RESET:
                raise
            errors.append(err)
    if not ctx.four_octet_as and (values.as4_path is not None or values.as4_aggregator is not None):
        _reconcile_as4(values, result.present)
    result.attributes = PathAttributes(
        origin=values.origin,
        as_path=values.as_path,
        next_hop=values.next_hop,
        med=values.med,
        local_pref=values.local_pref,
        atomic_aggregate=values.atomic_aggregate,
        aggregator=values.aggregator,
        communities=values.communities,
        large_communities=values.large_communities,
        extended_communities=values.extended_communities,
        originator_id=values.originator_id,
        cluster_list=values.cluster_list,
        unknown=tuple(values.unknown),
    )
    return result


def _decode_one(
    data: bytes,
    attr_start: int,
    vstart: int,
    vend: int,
    flags: int,
    type_code: int,
    ctx: CodecContext,
    values: _Values,
    result: DecodedAttributes,
) -> None:
    """Decode one attribute into `values`; a non-fatal error is raised for the caller to collect."""
    length = vend - vstart
    expected = EXPECTED_FLAGS.get(type_code)
    if expected is None:
        _decode_unknown(data, attr_start, vstart, vend, flags, type_code, values, result)
        return
    if type_code == AttrType.LOCAL_PREF and ctx.external:
        # RFC 7606 §7.5 (RFC 4271 §5.1.5): LOCAL_PREF from an external peer is discarded, whatever it holds.
        raise _error(
            UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
            "LOCAL_PREF from an external peer",
            bytes(data[attr_start:vend]),
            _DISCARD,
        )
    if flags & _CATEGORY != expected:
        # RFC 7606 §3 c: wrong Optional/Transitive bits make the attribute malformed; it is handled like
        # any other malformation of that attribute (attribute-discard ones are discarded). MP attributes
        # are still parsed so that their NLRI can be withdrawn.
        action = _DISCARD if type_code in _DISCARD_ON_ERROR else _TAW
        err = _error(
            UpdateSubcode.ATTRIBUTE_FLAGS_ERROR,
            f"attribute {type_code} flags 0x{flags:02x}",
            bytes(data[attr_start:vend]),
            action,
        )
        if type_code not in _MP_TYPES:
            raise err
        result.errors.append(err)

    def malformed(subcode: UpdateSubcode, message: str) -> BgpError:
        action = _DISCARD if type_code in _DISCARD_ON_ERROR else _TAW
        return _error(subcode, message, bytes(data[attr_start:vend]), action)

    present = result.present
    if type_code == AttrType.ORIGIN:
        # RFC 7606 §7.1
        if length != 1:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"ORIGIN length {length}")
        if data[vstart] > Origin.INCOMPLETE:
            raise malformed(UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE, f"ORIGIN {data[vstart]}")
        values.origin = Origin(data[vstart])
    elif type_code == AttrType.AS_PATH:
        # RFC 7606 §7.2, RFC 7607 (AS 0), RFC 5065 §5 (confederation segments from outside)
        segments, problem = parse_as_path(data, vstart, vend, 4 if ctx.four_octet_as else 2)
        if problem is None and ctx.external and _has_confed(segments):
            problem = "confederation segment from an external peer"
        if problem is not None:
            raise malformed(UpdateSubcode.MALFORMED_AS_PATH, problem)
        values.as_path = AsPath(segments)
    elif type_code == AttrType.NEXT_HOP:
        # RFC 7606 §7.3; RFC 4271 §6.3: the next hop must be a valid IP host address
        if length != 4:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"NEXT_HOP length {length}")
        address = _U32.unpack_from(data, vstart)[0]
        first = address >> 24
        if first in {0, 127} or first >= 224:
            raise malformed(UpdateSubcode.INVALID_NEXT_HOP_ATTRIBUTE, f"NEXT_HOP {IPv4Address(address)}")
        values.next_hop = IPv4Address(address)
    elif type_code == AttrType.MULTI_EXIT_DISC:
        # RFC 7606 §7.4
        if length != 4:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"MULTI_EXIT_DISC length {length}")
        values.med = _U32.unpack_from(data, vstart)[0]
    elif type_code == AttrType.LOCAL_PREF:
        # RFC 7606 §7.5 (internal peer)
        if length != 4:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"LOCAL_PREF length {length}")
        values.local_pref = _U32.unpack_from(data, vstart)[0]
    elif type_code == AttrType.ATOMIC_AGGREGATE:
        # RFC 7606 §7.6: attribute discard
        if length != 0:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"ATOMIC_AGGREGATE length {length}")
        values.atomic_aggregate = True
    elif type_code == AttrType.AGGREGATOR:
        # RFC 7606 §7.7: 6 octets with 2-octet ASNs, 8 with 4-octet ones; attribute discard
        if ctx.four_octet_as:
            if length != 8:
                raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"AGGREGATOR length {length}")
            asn, address = _AGGREGATOR4.unpack_from(data, vstart)
        else:
            if length != 6:
                raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"AGGREGATOR length {length}")
            asn, address = _AGGREGATOR2.unpack_from(data, vstart)
        values.aggregator = Aggregator(asn, IPv4Address(address))
    elif type_code == AttrType.COMMUNITIES:
        # RFC 7606 §7.8: a non-zero multiple of 4
        if length == 0 or length % 4:
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"COMMUNITIES length {length}")
        values.communities = struct.unpack_from(f">{length // 4}I", data, vstart)
    elif type_code == AttrType.ORIGINATOR_ID:
        # RFC 7606 §7.9
        if length != 4:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"ORIGINATOR_ID length {length}")
        values.originator_id = IPv4Address(_U32.unpack_from(data, vstart)[0])
    elif type_code == AttrType.CLUSTER_LIST:
        # RFC 7606 §7.10: a non-zero multiple of 4
        if length == 0 or length % 4:
            raise malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"CLUSTER_LIST length {length}")
        ids = struct.unpack_from(f">{length // 4}I", data, vstart)
        values.cluster_list = tuple(IPv4Address(i) for i in ids)
    elif type_code == AttrType.MP_REACH_NLRI:
        _decode_mp_reach(data, attr_start, vstart, vend, ctx, result)
    elif type_code == AttrType.MP_UNREACH_NLRI:
        _decode_mp_unreach(data, attr_start, vstart, vend, result)
    elif type_code == AttrType.EXTENDED_COMMUNITIES:
        # RFC 7606 §7.14 (RFC 4360): a non-zero multiple of 8
        if length == 0 or length % 8:
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"EXTENDED_COMMUNITIES length {length}")
        values.extended_communities = tuple(bytes(data[p : p + 8]) for p in range(vstart, vend, 8))
    elif type_code == AttrType.AS4_PATH:
        if ctx.four_octet_as:
            # RFC 6793 §6: never between NEW speakers; discard (and log).
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "AS4_PATH from a 4-octet AS speaker")
        segments, problem = parse_as_path(data, vstart, vend, 4)
        if problem is None and not segments:
            problem = "empty AS4_PATH"
        if problem is not None:
            # RFC 6793 §6: a malformed AS4_PATH is discarded
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"AS4_PATH: {problem}")
        if _has_confed(segments):
            # RFC 6793 §6: confederation segments in AS4_PATH are dropped, the rest is used
            result.errors.append(
                malformed(
                    UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "confederation segments in AS4_PATH dropped"
                )
            )
            segments = tuple(s for s in segments if s.type in _NON_CONFED)
        values.as4_path = AsPath(segments)
    elif type_code == AttrType.AS4_AGGREGATOR:
        if ctx.four_octet_as:
            raise malformed(
                UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "AS4_AGGREGATOR from a 4-octet AS speaker"
            )
        if length != 8:
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"AS4_AGGREGATOR length {length}")
        asn, address = _AGGREGATOR4.unpack_from(data, vstart)
        values.as4_aggregator = Aggregator(asn, IPv4Address(address))
    elif type_code == AttrType.LARGE_COMMUNITIES:
        # RFC 8092 §6: a non-zero multiple of 12; treat-as-withdraw
        if length == 0 or length % 12:
            raise malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"LARGE_COMMUNITIES length {length}")
        flat = struct.unpack_from(f">{length // 4}I", data, vstart)
        values.large_communities = tuple(
            LargeCommunity(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)
        )
    present.add(type_code)


def _decode_unknown(
    data: bytes,
    attr_start: int,
    vstart: int,
    vend: int,
    flags: int,
    type_code: int,
    values: _Values,
    result: DecodedAttributes,
) -> None:
    if not flags & AttrFlag.OPTIONAL:
        # RFC 4271 §6.3: Unrecognized Well-known Attribute, data = the attribute (not revised by RFC 7606).
        raise _error(
            UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            f"unrecognized well-known attribute {type_code}",
            bytes(data[attr_start:vend]),
            _RESET,
        )
    if flags & AttrFlag.TRANSITIVE:
        # RFC 4271 §5: an unrecognized optional transitive attribute is passed on with Partial set.
        kept = (flags & (AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE)) | AttrFlag.PARTIAL
        values.unknown.append(UnknownAttribute(int(kept), type_code, bytes(data[vstart:vend])))
        result.present.add(type_code)
    # RFC 4271 §5: an unrecognized optional non-transitive attribute is quietly ignored.


def _decode_mp_reach(
    data: bytes, attr_start: int, vstart: int, vend: int, ctx: CodecContext, result: DecodedAttributes
) -> None:
    """RFC 4760 §3 with RFC 7606 §7.11: a next hop whose length does not fit the family hides where the
    NLRI start, so it is a session reset (RFC 7606 offers AFI/SAFI disable as the alternative)."""
    raw = bytes(data[attr_start:vend])
    if vend - vstart < 5:
        raise _error(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_REACH_NLRI too short", raw, _RESET)
    afi, safi = _FAMILY.unpack_from(data, vstart)
    nh_len = data[vstart + 3]
    nh_start = vstart + 4
    nlri_start = nh_start + nh_len + 1  # skip the reserved octet (RFC 4760 §3: ignored on receipt)
    if nlri_start > vend:
        raise _error(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_REACH_NLRI next hop overruns", raw, _RESET)
    result.mp_spans.append((attr_start, vend))
    family = family_of(afi, safi)
    if family is None:
        # Not a family we negotiate (we only advertise IPv4/IPv6 unicast): ignore its routes.
        raise _error(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"MP_REACH_NLRI for AFI {afi} SAFI {safi}", raw, _DISCARD
        )
    nh = data[nh_start : nh_start + nh_len]
    next_hop: IPAddress
    link_local: IPv6Address | None = None
    ipv6_allowed = family.afi is AFI.IPV6 or family in ctx.extended_next_hop  # RFC 8950 §3
    if nh_len == 4 and family.afi is AFI.IPV4:
        next_hop = IPv4Address(nh)
    elif nh_len == 16 and ipv6_allowed:
        next_hop = IPv6Address(nh)
    elif nh_len == 32 and ipv6_allowed:
        next_hop = IPv6Address(nh[:16])  # RFC 2545 §3: global, then link-local
        link_local = IPv6Address(nh[16:])
    else:
        raise _error(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR,
            f"MP_REACH_NLRI next hop length {nh_len} for {family}",
            raw,
            _RESET,
        )
    result.mp_reach = MpReach(family, next_hop, link_local, nlri_start, vend, bytes(data[vstart:nlri_start]))


def _decode_mp_unreach(
    data: bytes, attr_start: int, vstart: int, vend: int, result: DecodedAttributes
) -> None:
    raw = bytes(data[attr_start:vend])
    if vend - vstart < 3:
        raise _error(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_UNREACH_NLRI too short", raw, _RESET)
    result.mp_spans.append((attr_start, vend))
    afi, safi = _FAMILY.unpack_from(data, vstart)
    family = family_of(afi, safi)
    if family is None:
        raise _error(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR,
            f"MP_UNREACH_NLRI for AFI {afi} SAFI {safi}",
            raw,
            _DISCARD,
        )
    result.mp_unreach = MpUnreach(family, vstart + 3, vend)


# -- AS paths -----------------------------------------------------------------------------------

_NON_CONFED = frozenset({SegmentType.AS_SET, SegmentType.AS_SEQUENCE})
_SEGMENT_TYPES = {int(t): t for t in SegmentType}


def _has_confed(segments: tuple[AsPathSegment, ...]) -> bool:
    return any(s.type not in _NON_CONFED for s in segments)


def parse_as_path(
    data: bytes, start: int, end: int, asn_size: int
) -> tuple[tuple[AsPathSegment, ...], str | None]:
    """AS path segments in data[start:end] with 2- or 4-octet ASNs -> (segments, problem or None).

    Malformed per RFC 7606 §7.2: an unknown segment type, a zero segment length, a segment overrunning
    the attribute or a lone trailing octet; RFC 7607: AS 0 anywhere.
    """
    code = "I" if asn_size == 4 else "H"
    segments: list[AsPathSegment] = []
    pos = start
    while pos < end:
        if end - pos < 2:
            return (), "truncated segment header"
        seg_type = _SEGMENT_TYPES.get(data[pos])
        count = data[pos + 1]
        if seg_type is None:
            return (), f"segment type {data[pos]}"
        if count == 0:
            return (), "empty segment"
        nxt = pos + 2 + count * asn_size
        if nxt > end:
            return (), "segment overruns the attribute"
        asns = struct.unpack_from(f">{count}{code}", data, pos + 2)
        if 0 in asns:
            return (), "AS 0 in the path"
        segments.append(AsPathSegment(seg_type, asns))
        pos = nxt
    return tuple(segments), None


def merge_as4_path(as_path: AsPath, as4_path: AsPath) -> AsPath:
    """RFC 6793 §4.2.3: the leading ASNs of AS_PATH that AS4_PATH lacks, then AS4_PATH.

    Counting follows RFC 4271 §9.1.2.2 (an AS_SET counts 1, confederation segments 0). If AS_PATH is the
    shorter one, AS4_PATH is ignored. Leading confederation segments of AS_PATH are kept.
    """
    needed = as_path.length() - as4_path.length()
    if needed < 0:
        return as_path
    lead: list[AsPathSegment] = []
    for seg in as_path.segments:
        if seg.type not in _NON_CONFED:
            lead.append(seg)
            continue
        if needed == 0:
            break
        if seg.type is SegmentType.AS_SET:
            lead.append(seg)
            needed -= 1
        else:
            taken = seg.asns[:needed]
            lead.append(AsPathSegment(SegmentType.AS_SEQUENCE, taken))
            needed -= len(taken)
    tail = list(as4_path.segments)
    if lead and tail and lead[-1].type is SegmentType.AS_SEQUENCE and tail[0].type is SegmentType.AS_SEQUENCE:
        # The cut fell inside one AS_SEQUENCE: join the halves back into one segment.
        lead[-1] = AsPathSegment(SegmentType.AS_SEQUENCE, lead[-1].asns + tail.pop(0).asns)
    return AsPath(tuple(lead + tail))


def _reconcile_as4(values: _Values, present: set[int]) -> None:
    """RFC 6793 §4.2.3: rebuild the 4-octet path and aggregator from a 2-octet (OLD) peer's update."""
    aggregator = values.aggregator
    as4_aggregator = values.as4_aggregator
    if aggregator is not None and as4_aggregator is not None and aggregator.asn != AS_TRANS:
        # An OLD speaker aggregated after the AS4 information was attached: it is stale, ignore both.
        return
    if as4_aggregator is not None:
        values.aggregator = as4_aggregator
    if values.as4_path is not None and AttrType.AS_PATH in present:
        values.as_path = merge_as4_path(values.as_path, values.as4_path)


# -- Encoding -----------------------------------------------------------------------------------


def encode_attribute(flags: int, type_code: int, value: bytes) -> bytes:
    """One attribute; the Extended Length bit is set exactly when the value needs it."""
    n = len(value)
    if n > 255:
        return struct.pack(">BBH", (flags & 0xE0) | AttrFlag.EXTENDED_LENGTH, type_code, n) + value
    return struct.pack(">BBB", flags & 0xE0, type_code, n) + value


def encode_as_path(path: AsPath, asn_size: int) -> bytes:
    """AS path segments; ASNs above 65535 become AS_TRANS when 2-octet (RFC 6793 §4.2.2). Segments longer
    than 255 ASNs are split (the count is one octet); empty segments are not written (RFC 7606 §7.2)."""
    out = bytearray()
    for seg in path.segments:
        asns = seg.asns
        if asn_size == 2:
            asns = tuple(a if a <= 0xFFFF else AS_TRANS for a in asns)
        for i in range(0, len(asns), 255):
            chunk = asns[i : i + 255]
            out += struct.pack(
                f">BB{len(chunk)}{'I' if asn_size == 4 else 'H'}", seg.type, len(chunk), *chunk
            )
    return bytes(out)


def encode_mp_reach(
    family: Family, next_hop: IPAddress, link_local: IPv6Address | None, nlri: bytes
) -> bytes:
    """MP_REACH_NLRI value (RFC 4760 §3): AFI, SAFI, next hop (+ link-local, RFC 2545), reserved, NLRI."""
    nh = next_hop.packed + (link_local.packed if link_local is not None else b"")
    return struct.pack(">HBB", family.afi, family.safi, len(nh)) + nh + b"\x00" + nlri


def encode_mp_unreach(family: Family, nlri: bytes) -> bytes:
    """MP_UNREACH_NLRI value (RFC 4760 §4): AFI, SAFI, withdrawn NLRI."""
    return _FAMILY.pack(family.afi, family.safi) + nlri


def encode_attributes(
    attrs: PathAttributes,
    ctx: CodecContext,
    *,
    next_hop: bool = True,
    mp_reach: bytes | None = None,
    mp_unreach: bytes | None = None,
) -> bytes:
    """The attribute block for `attrs` as sent to a peer with context `ctx`.

    MP_REACH_NLRI/MP_UNREACH_NLRI (already encoded values) come first, as RFC 7606 §5.1 requires; the
    rest follow in type-code order. NEXT_HOP is written when `next_hop` is set (IPv4 NLRI in the NLRI
    field). LOCAL_PREF is never sent to an external peer (RFC 4271 §5.1.5). Towards a 2-octet peer, 4-octet
    ASNs become AS_TRANS and AS4_PATH/AS4_AGGREGATOR carry the real ones (RFC 6793 §4.2.2).
    """
    head = b""
    if mp_reach is not None:
        head += encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MP_REACH_NLRI, mp_reach)
    if mp_unreach is not None:
        head += encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MP_UNREACH_NLRI, mp_unreach)
    four = ctx.four_octet_as
    parts: list[tuple[int, bytes]] = [
        (AttrType.ORIGIN, encode_attribute(WELL_KNOWN, AttrType.ORIGIN, bytes([attrs.origin]))),
        (
            AttrType.AS_PATH,
            encode_attribute(WELL_KNOWN, AttrType.AS_PATH, encode_as_path(attrs.as_path, 4 if four else 2)),
        ),
    ]
    if next_hop:
        if not isinstance(attrs.next_hop, IPv4Address):
            raise ValueError(f"NEXT_HOP must be an IPv4 address, not {attrs.next_hop!r}")
        parts.append(
            (AttrType.NEXT_HOP, encode_attribute(WELL_KNOWN, AttrType.NEXT_HOP, attrs.next_hop.packed))
        )
    if attrs.med is not None:
        parts.append(
            (
                AttrType.MULTI_EXIT_DISC,
                encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.MULTI_EXIT_DISC, _U32.pack(attrs.med)),
            )
        )
    if attrs.local_pref is not None and not ctx.external:
        parts.append(
            (
                AttrType.LOCAL_PREF,
                encode_attribute(WELL_KNOWN, AttrType.LOCAL_PREF, _U32.pack(attrs.local_pref)),
            )
        )
    if attrs.atomic_aggregate:
        parts.append(
            (AttrType.ATOMIC_AGGREGATE, encode_attribute(WELL_KNOWN, AttrType.ATOMIC_AGGREGATE, b""))
        )
    agg = attrs.aggregator
    if agg is not None:
        if four:
            value = _AGGREGATOR4.pack(agg.asn, int(agg.address))
        else:
            value = _AGGREGATOR2.pack(agg.asn if agg.asn <= 0xFFFF else AS_TRANS, int(agg.address))
            if agg.asn > 0xFFFF:
                as4 = _AGGREGATOR4.pack(agg.asn, int(agg.address))
                parts.append(
                    (
                        AttrType.AS4_AGGREGATOR,
                        encode_attribute(OPTIONAL_TRANSITIVE, AttrType.AS4_AGGREGATOR, as4),
                    )
                )
        parts.append((AttrType.AGGREGATOR, encode_attribute(OPTIONAL_TRANSITIVE, AttrType.AGGREGATOR, value)))
    if attrs.communities:
        value = struct.pack(f">{len(attrs.communities)}I", *attrs.communities)
        parts.append(
            (AttrType.COMMUNITIES, encode_attribute(OPTIONAL_TRANSITIVE, AttrType.COMMUNITIES, value))
        )
    if attrs.originator_id is not None:
        value = attrs.originator_id.packed
        parts.append(
            (AttrType.ORIGINATOR_ID, encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.ORIGINATOR_ID, value))
        )
    if attrs.cluster_list:
        value = b"".join(a.packed for a in attrs.cluster_list)
        parts.append(
            (AttrType.CLUSTER_LIST, encode_attribute(OPTIONAL_NON_TRANSITIVE, AttrType.CLUSTER_LIST, value))
        )
    if attrs.extended_communities:
        for ec in attrs.extended_communities:
            if len(ec) != 8:
                raise ValueError(f"extended community of {len(ec)} octets")
        value = b"".join(attrs.extended_communities)
        parts.append(
            (
                AttrType.EXTENDED_COMMUNITIES,
                encode_attribute(OPTIONAL_TRANSITIVE, AttrType.EXTENDED_COMMUNITIES, value),
            )
        )
    if not four and any(a > 0xFFFF for a in attrs.as_path.asns()):
        as4_path = AsPath(tuple(s for s in attrs.as_path.segments if s.type in _NON_CONFED and s.asns))
        if as4_path.segments:
            value = encode_as_path(as4_path, 4)
            parts.append((AttrType.AS4_PATH, encode_attribute(OPTIONAL_TRANSITIVE, AttrType.AS4_PATH, value)))
    if attrs.large_communities:
        value = b"".join(
            struct.pack(">III", c.global_admin, c.local1, c.local2) for c in attrs.large_communities
        )
        parts.append(
            (
                AttrType.LARGE_COMMUNITIES,
                encode_attribute(OPTIONAL_TRANSITIVE, AttrType.LARGE_COMMUNITIES, value),
            )
        )
    for unknown in attrs.unknown:
        if unknown.type_code in EXPECTED_FLAGS:
            raise ValueError(f"UnknownAttribute with the recognized type code {unknown.type_code}")
        parts.append((unknown.type_code, encode_attribute(unknown.flags, unknown.type_code, unknown.value)))
    parts.sort(key=lambda part: part[0])
    return head + b"".join(p for _, p in parts)
