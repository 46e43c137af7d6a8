"""Peers, paths and route batches: the values that flow from the Adj-RIB-In into the Loc-RIB.

A `Path` is one peer's route without its prefix: (peer, attributes, path id). Because attributes
are interned by the codec (DESIGN.md §8), each Adj-RIB-In interns its Paths too, so a full feed of
1,000,000 prefixes shares a few hundred thousand Path objects and the RIB stores one pointer per
prefix. The decision process reads a few values on every comparison; they are computed once per
Path here instead of once per prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bgp.types import IPAddress, PathAttributes, PrefixKey


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the RIB needs to know about the neighbour a path came from."""

    peer_id: str
    address: IPAddress
    asn: int
    router_id: IPv4Address
    local_asn: int

    @property
    def ibgp(self) -> bool:
        """RFC 4271 §1.1: internal peer when it is in our own AS."""
        return self.asn == self.local_asn


@dataclass(frozen=True, slots=True)
class Path:
    """A route of one peer (prefix-less so identical routes of many prefixes share one object).

    Equality compares peer, attributes and path id; the derived fields exist only to keep the
    decision process (bgp.rib.decision) from recomputing them per comparison.
    """

    peer: PeerInfo
    attributes: PathAttributes
    path_id: int = 0
    # Derived once per Path for the decision process.
    as_path_length: int = field(init=False, repr=False, compare=False)
    neighbor_as: int = field(init=False, repr=False, compare=False)
    router_id: int = field(init=False, repr=False, compare=False)
    ibgp: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attrs = self.attributes
        peer = self.peer
        ibgp = peer.asn == peer.local_asn
        first = attrs.as_path.first_asn()
        if first is None:
            # No AS_SEQUENCE in front: the route originated in the neighbour's AS (or ours for iBGP).
            first = peer.local_asn if ibgp else peer.asn
        # RFC 4456 §9: a reflected route is compared by its ORIGINATOR_ID instead of the peer's id.
        originator = attrs.originator_id if attrs.originator_id is not None else peer.router_id
        object.__setattr__(self, "as_path_length", attrs.as_path.length())
        object.__setattr__(self, "neighbor_as", first)
        object.__setattr__(self, "router_id", int(originator))
        object.__setattr__(self, "ibgp", ibgp)

    @property
    def next_hop(self) -> IPAddress | None:
        return self.attributes.next_hop


@dataclass(slots=True)
class RouteBatch:
    """Accepted changes of one peer that share one outcome, ready for `LocRib.apply`.

    `path` is announced for every prefix (its path id is `path_id`); `path` None withdraws the
    peer's path `path_id` for every prefix. Batches keep a 100k-prefix UPDATE stream from paying
    per-prefix call overhead in both RIBs.
    """

    peer: PeerInfo
    path: Path | None
    prefixes: list[PrefixKey]
    path_id: int = 0

    def __post_init__(self) -> None:
        if self.path is not None and (self.path.path_id != self.path_id or self.path.peer != self.peer):
            raise ValueError("a batch announces a path of its own peer and path id")

    def __len__(self) -> int:
        return len(self.prefixes)
