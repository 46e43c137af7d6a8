"""Small builders for RIB tests: peers, attribute sets, prefix keys."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from bgp.rib import Path, PeerInfo
from bgp.types import (
    AsPath,
    AsPathSegment,
    IPAddress,
    Origin,
    PathAttributes,
    PrefixKey,
    SegmentType,
    prefix_key,
)

LOCAL_ASN = 64512


def key(text: str) -> PrefixKey:
    return prefix_key(ip_network(text))


def peer(
    n: int,
    asn: int | None = None,
    *,
    router_id: str | None = None,
    address: str | None = None,
    peer_id: str | None = None,
) -> PeerInfo:
    """Peer n: address 198.51.100.n, AS 65000+n (eBGP) unless given, router id 203.0.113.n."""
    return PeerInfo(
        peer_id or f"p{n}",
        ip_address(address or f"198.51.100.{n}"),
        65000 + n if asn is None else asn,
        IPv4Address(router_id or f"203.0.113.{n}"),
        LOCAL_ASN,
    )


def ibgp_peer(n: int, **kwargs: str) -> PeerInfo:
    return peer(n, LOCAL_ASN, **kwargs)


def attrs(
    *asns: int,
    next_hop: str | None = "198.51.100.1",
    origin: Origin = Origin.IGP,
    med: int | None = None,
    local_pref: int | None = None,
    originator_id: str | None = None,
    cluster_list: tuple[str, ...] = (),
    as_set: tuple[int, ...] = (),
    confed: tuple[int, ...] = (),
) -> PathAttributes:
    segments = []
    if confed:
        segments.append(AsPathSegment(SegmentType.AS_CONFED_SEQUENCE, confed))
    if asns:
        segments.append(AsPathSegment(SegmentType.AS_SEQUENCE, asns))
    if as_set:
        segments.append(AsPathSegment(SegmentType.AS_SET, as_set))
    nh: IPAddress | None = None if next_hop is None else ip_address(next_hop)
    return PathAttributes(
        origin=origin,
        as_path=AsPath(tuple(segments)),
        next_hop=nh,
        med=med,
        local_pref=local_pref,
        originator_id=None if originator_id is None else IPv4Address(originator_id),
        cluster_list=tuple(IPv4Address(c) for c in cluster_list),
    )


def path(p: PeerInfo, attributes: PathAttributes | None = None, path_id: int = 0) -> Path:
    """A path of peer p; by default its AS path is the peer's AS (empty for iBGP peers)."""
    if attributes is None:
        attributes = attrs() if p.ibgp else attrs(p.asn)
    return Path(p, attributes, path_id)


V6_NEXT_HOP = IPv6Address("2001:db8::1")
