"""Hypothesis strategies for BGP codec models, in canonical form (what the decoder produces)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from bgp.codec.attributes import EXPECTED_FLAGS
from bgp.codec.capabilities import (
    AddPath,
    AddPathMode,
    Capability,
    CapabilityCode,
    EnhancedRouteRefresh,
    ExtendedMessage,
    ExtendedNextHop,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefreshCapability,
    UnknownCapability,
)
from bgp.codec.messages import CodecContext, Open
from bgp.codec.update import Reach, Unreach, Update
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    Aggregator,
    AsPath,
    AsPathSegment,
    Family,
    LargeCommunity,
    Origin,
    PathAttributes,
    PrefixKey,
    SegmentType,
    UnknownAttribute,
)

U32 = st.integers(0, 2**32 - 1)
ASN = st.integers(1, 2**32 - 1)
ASN2 = st.integers(1, 0xFFFF)
FAMILIES = st.sampled_from([IPV4_UNICAST, IPV6_UNICAST])
NON_CONFED = [SegmentType.AS_SEQUENCE, SegmentType.AS_SET]
CONFED = [SegmentType.AS_CONFED_SEQUENCE, SegmentType.AS_CONFED_SET]

# A valid IPv4 host next hop (RFC 4271 §6.3): not 0/8, 127/8 nor 224/3.
HOST_V4 = (
    st.integers(1, 223)
    .filter(lambda o: o != 127)
    .flatmap(lambda first: st.integers(0, 2**24 - 1).map(lambda rest: IPv4Address(first << 24 | rest)))
)
ANY_V4 = U32.map(IPv4Address)
ANY_V6 = st.integers(0, 2**128 - 1).map(IPv6Address)


def segments(types: list[SegmentType], asn: st.SearchStrategy[int]) -> st.SearchStrategy[AsPathSegment]:
    return st.builds(AsPathSegment, st.sampled_from(types), st.lists(asn, min_size=1, max_size=6).map(tuple))


def as_paths(ctx: CodecContext) -> st.SearchStrategy[AsPath]:
    """Paths the context can carry losslessly: no confederation segments from external peers; towards a
    2-octet peer, confederation segments only at the front and with 2-octet ASNs (RFC 6793 §4.2.2 keeps
    them out of AS4_PATH)."""
    body = st.lists(segments(NON_CONFED, ASN), max_size=4)
    lead: st.SearchStrategy[list[AsPathSegment]]
    if ctx.external:
        lead = st.just([])
    elif ctx.four_octet_as:
        return st.lists(segments(NON_CONFED + CONFED, ASN), max_size=5).map(lambda s: AsPath(tuple(s)))
    else:
        lead = st.lists(segments(CONFED, ASN2), max_size=2)
    return st.tuples(lead, body).map(lambda parts: AsPath(tuple(parts[0] + parts[1])))


def unknown_attributes() -> st.SearchStrategy[tuple[UnknownAttribute, ...]]:
    codes = st.integers(0, 255).filter(lambda c: c not in EXPECTED_FLAGS)
    return st.dictionaries(codes, st.binary(max_size=300), max_size=3).map(
        lambda d: tuple(UnknownAttribute(0xE0, code, d[code]) for code in sorted(d))
    )


def path_attributes(
    ctx: CodecContext, next_hop: st.SearchStrategy[IPv4Address | IPv6Address | None] = HOST_V4
) -> st.SearchStrategy[PathAttributes]:
    return st.builds(
        PathAttributes,
        origin=st.sampled_from(Origin),
        as_path=as_paths(ctx),
        next_hop=next_hop,
        med=st.none() | U32,
        local_pref=st.none() if ctx.external else st.none() | U32,
        atomic_aggregate=st.booleans(),
        aggregator=st.none() | st.builds(Aggregator, ASN, ANY_V4),
        communities=st.lists(U32, max_size=4).map(tuple),
        large_communities=st.lists(st.builds(LargeCommunity, U32, U32, U32), max_size=3).map(tuple),
        extended_communities=st.lists(st.binary(min_size=8, max_size=8), max_size=3).map(tuple),
        originator_id=st.none() | ANY_V4,
        cluster_list=st.lists(ANY_V4, max_size=3).map(tuple),
        unknown=unknown_attributes(),
    )


CONTEXTS = st.builds(
    CodecContext,
    four_octet_as=st.booleans(),
    external=st.booleans(),
)


def prefix_keys(family: Family) -> st.SearchStrategy[PrefixKey]:
    width = 128 if family == IPV6_UNICAST else 32
    flag = 1 << 136 if family == IPV6_UNICAST else 0

    def key(length: int, address: int) -> PrefixKey:
        return flag | ((address >> (width - length) << (width - length)) << 8) | length

    return st.builds(key, st.integers(0, width), st.integers(0, 2**width - 1))


def _prefixes(
    family: Family, add_path: bool
) -> st.SearchStrategy[tuple[tuple[PrefixKey, ...], tuple[int, ...]]]:
    keys = st.lists(prefix_keys(family), min_size=1, max_size=20)
    if not add_path:
        return keys.map(lambda k: (tuple(k), ()))
    return keys.flatmap(
        lambda k: st.lists(U32, min_size=len(k), max_size=len(k)).map(lambda ids: (tuple(k), tuple(ids)))
    )


@st.composite
def updates(draw: st.DrawFn, ctx: CodecContext) -> Update:
    """An Update in the order decode_update builds it: IPv4 withdrawn, MP_UNREACH, IPv4 NLRI, MP_REACH."""
    if draw(st.integers(0, 9)) == 0:
        return Update(end_of_rib=draw(FAMILIES))
    v4_add = IPV4_UNICAST in ctx.add_path_receive
    v6_add = IPV6_UNICAST in ctx.add_path_receive
    unreach: list[Unreach] = []
    reach: list[Reach] = []
    if draw(st.booleans()):
        unreach.append(Unreach(IPV4_UNICAST, *draw(_prefixes(IPV4_UNICAST, v4_add))))
    if draw(st.booleans()):
        unreach.append(Unreach(IPV6_UNICAST, *draw(_prefixes(IPV6_UNICAST, v6_add))))
    base = draw(path_attributes(ctx, st.none()))
    if draw(st.booleans()):
        attrs = replace(base, next_hop=draw(HOST_V4))
        reach.append(Reach(IPV4_UNICAST, attrs, *draw(_prefixes(IPV4_UNICAST, v4_add))))
    if draw(st.booleans()):
        nh = draw(ANY_V6)
        ll = draw(st.none() | ANY_V6)
        attrs = replace(base, next_hop=nh, link_local_next_hop=ll)
        reach.append(Reach(IPV6_UNICAST, attrs, *draw(_prefixes(IPV6_UNICAST, v6_add))))
    if not reach and not unreach:
        return Update(end_of_rib=IPV4_UNICAST)  # the empty UPDATE is the IPv4 End-of-RIB on the wire
    return Update(tuple(reach), tuple(unreach))


@st.composite
def update_contexts(draw: st.DrawFn) -> CodecContext:
    add_path = frozenset(draw(st.sets(FAMILIES)))
    return CodecContext(
        four_octet_as=draw(st.booleans()),
        external=draw(st.booleans()),
        add_path_receive=add_path,
        add_path_send=add_path,
    )


_KNOWN_CAPABILITY_CODES = {int(c) for c in CapabilityCode}

CAPABILITIES: st.SearchStrategy[Capability] = st.one_of(
    st.builds(Multiprotocol, FAMILIES),
    st.builds(RouteRefreshCapability, st.booleans()),
    st.just(EnhancedRouteRefresh()),
    st.just(ExtendedMessage()),
    st.builds(
        GracefulRestart,
        st.integers(0, 4095),
        st.booleans(),
        st.booleans(),
        st.lists(st.tuples(FAMILIES, st.booleans()), max_size=2).map(tuple),
    ),
    st.builds(
        AddPath,
        st.lists(
            st.tuples(FAMILIES, st.sampled_from([AddPathMode.RECEIVE, AddPathMode.SEND, AddPathMode(3)])),
            min_size=1,
            max_size=2,
        ).map(tuple),
    ),
    st.builds(
        ExtendedNextHop,
        st.lists(st.tuples(FAMILIES, st.integers(0, 0xFFFF)), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(
        UnknownCapability,
        st.integers(0, 255).filter(lambda c: c not in _KNOWN_CAPABILITY_CODES),
        st.binary(max_size=20),
    ),
)


@st.composite
def opens(draw: st.DrawFn) -> Open:
    asn = draw(ASN)
    caps = draw(st.lists(CAPABILITIES, max_size=30))
    if asn > 0xFFFF or draw(st.booleans()):
        caps.insert(draw(st.integers(0, len(caps))), FourOctetAs(asn))
    return Open(
        asn=asn,
        hold_time=draw(st.just(0) | st.integers(3, 0xFFFF)),
        router_id=IPv4Address(draw(st.integers(1, 2**32 - 1))),
        capabilities=tuple(caps),
        unknown_parameters=tuple(
            draw(st.lists(st.tuples(st.integers(3, 254), st.binary(max_size=8)), max_size=2))
        ),
    )
