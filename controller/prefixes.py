"""Prefix objects for the route path: ipaddress networks whose hash is computed once.

A prefix on its way from the Loc-RIB to a kernel table is a dict key about fifteen times (FIB,
change sets, per-table pending batches, the writer's own state). `IPv4Network.__hash__` is Python
code that rebuilds the hash from two address objects on every call, which made hashing the largest
single cost of a 100k-prefix intake. These subclasses store the hash at construction; they are equal
to, and hash like, the plain ipaddress networks, so both kinds mix freely in one dict.

`prefix_from_key` also skips the string-oriented parsing of the ipaddress constructor: a Loc-RIB key
is already an (address, length) pair without host bits, so only the fields are set. The network keeps
that key (`key_of`), so a table's prefix filter (bgp.rib.policy, which works on keys) reads it back
instead of converting the network to a key again: one representation change on the way to the
kernel, none on the way back.

Owns: `HashedIPv4Network`, `HashedIPv6Network`, `prefix_from_key`, `key_of`. Must not touch: anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from bgp.types import PrefixKey, key_is_ipv6, prefix_key
from controller.desired import Prefix

_ADDRESS_BITS_V6 = (1 << 128) - 1  # a key is (address << 8 | length), IPv6 keys with a flag bit above


class HashedIPv4Network(IPv4Network):
    """An IPv4Network with its hash kept (every constructor path, including ipaddress's own, sets it)."""

    __slots__ = ("_hash", "_key")

    def __init__(self, address: object, strict: bool = True) -> None:
        super().__init__(address, strict)
        self._hash = hash(int(self.network_address) ^ int(self.netmask))
        self._key = prefix_key(self)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"IPv4Network('{self}')"

    def hosts(self) -> Iterator[IPv4Address] | list[IPv4Address]:  # type: ignore[override]
        # ipaddress sets these two cases per instance in its constructor, which prefix_from_key skips.
        if self.prefixlen == self.max_prefixlen:
            return [self.network_address]
        if self.prefixlen == self.max_prefixlen - 1:
            return iter(self)
        return super().hosts()


class HashedIPv6Network(IPv6Network):
    """An IPv6Network with its hash kept."""

    __slots__ = ("_hash", "_key")

    def __init__(self, address: object, strict: bool = True) -> None:
        super().__init__(address, strict)
        self._hash = hash(int(self.network_address) ^ int(self.netmask))
        self._key = prefix_key(self)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"IPv6Network('{self}')"

    def hosts(self) -> Iterator[IPv6Address] | list[IPv6Address]:  # type: ignore[override]
        # ipaddress sets these two cases per instance in its constructor, which prefix_from_key skips.
        if self.prefixlen == self.max_prefixlen:
            return [self.network_address]
        if self.prefixlen == self.max_prefixlen - 1:
            return iter(self)
        return super().hosts()


_NETMASK_V4 = IPv4Network._make_netmask  # type: ignore[attr-defined]  # (mask, length), cached
_NETMASK_V6 = IPv6Network._make_netmask  # type: ignore[attr-defined]
_new = object.__new__


def prefix_from_key(key: PrefixKey) -> Prefix:
    """The network of a compact Loc-RIB key (bgp.types.key_to_prefix), with its hash kept."""
    length = key & 0xFF
    net: HashedIPv4Network | HashedIPv6Network
    if key_is_ipv6(key):
        address = (key >> 8) & _ADDRESS_BITS_V6
        net = _new(HashedIPv6Network)
        net.network_address = IPv6Address(address)
        net.netmask, net._prefixlen = _NETMASK_V6(length)  # type: ignore[attr-defined]
    else:
        address = key >> 8
        net = _new(HashedIPv4Network)
        net.network_address = IPv4Address(address)
        net.netmask, net._prefixlen = _NETMASK_V4(length)  # type: ignore[attr-defined]
    net._hash = hash(address ^ int(net.netmask))
    net._key = key
    return net


def key_of(prefix: Prefix) -> PrefixKey:
    """The Loc-RIB key of a prefix: kept by `prefix_from_key`, computed for plain networks."""
    try:
        key: PrefixKey = prefix._key  # type: ignore[union-attr]
        return key
    except AttributeError:
        return prefix_key(prefix)
