"""Raw rtnetlink messages for bulk route programming, and a batching channel to send them.

Owns: the wire encoding of route/nexthop messages, dumps, and the batching `NetlinkChannel`. May not
touch: policy (what to write is netlink.py's decision) or anything above the writers.

pyroute2 is good at link/address lookups, dumps and monitoring, but a synchronous request per route
manages only ~2,500 routes/s, and it has no API for nexthop objects. Here routes and nexthop objects
are encoded directly and sent in ~64 KiB batches without per-message ACKs; the kernel answers only
the messages that fail (NLMSG_ERROR with our sequence number), and one final ACKed NLMSG_NOOP tells
us the batch is done (rtnetlink processes the requests of one socket in order, synchronously in
sendmsg).

Wire formats (include/uapi/linux/netlink.h, rtnetlink.h, nexthop.h)::

    nlmsghdr   u32 len | u16 type | u16 flags | u32 seq | u32 pid
    nlmsgerr   i32 error | nlmsghdr of the request (+ its payload unless NLM_F_CAPPED)
               | extack rtattrs when NLM_F_ACK_TLVS (NLMSGERR_ATTR_MSG: NUL-terminated text)
    rtmsg      u8 family | u8 dst_len | u8 src_len | u8 tos | u8 table | u8 protocol | u8 scope
               | u8 type | u32 flags
    nhmsg      u8 family | u8 scope | u8 protocol | u8 resvd | u32 flags
    rtattr     u16 len | u16 type | value, padded to 4 bytes
    nexthop_grp  u32 id | u8 weight | u8 resvd1 | u16 resvd2
    rtnexthop  u16 len | u8 flags | u8 hops | i32 ifindex | rtattrs  (RTA_MULTIPATH entries)

All integers are host byte order (the `=` struct formats), as netlink is.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import os
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Protocol

from bgp.types import V6_KEY_FLAG

NETLINK_ROUTE = 0

# Message types
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106

# Flags
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: the request payload is not echoed
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended ACK attributes follow

NLMSGERR_ATTR_MSG = 1

# rtattr types for routes
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RTA_NH_ID = 30

# nexthop attributes
NHA_ID = 1
NHA_GROUP = 2
NHA_GROUP_TYPE = 3
NHA_BLACKHOLE = 4
NHA_OIF = 5
NHA_GATEWAY = 6

RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255

# Multicast groups (1-based numbers for setsockopt NETLINK_ADD_MEMBERSHIP)
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_ROUTE = 11
RTNLGRP_NEXTHOP = 32
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NHMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_NHGRP = struct.Struct("=IBBH")
_RTNH = struct.Struct("=HBBi")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

BATCH_BYTES = 64 * 1024

Builder = Callable[[int], bytes]  # a sequence number in, one encoded request out

Prefix = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def _align(n: int) -> int:
    return (n + 3) & ~3


def rtattr(kind: int, value: bytes) -> bytes:
    """One route attribute, padded to a 4-byte boundary."""
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """Wrap a payload in a netlink header (payload is already 4-byte aligned; pid 0 = the kernel)."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def family_of(addr: Address | Prefix) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


# Routes are keyed like the Loc-RIB (bgp.types.PrefixKey): (address << 8) | length, IPv6 keys with
# this flag above the 128-bit address. The writer encodes a route from its key without building an
# ipaddress network, and the decoder reads a kernel route back into a key.
V6_FLAG = V6_KEY_FLAG
_V6_ADDRESS = (1 << 128) - 1


def key_version(key: int) -> int:
    return 6 if key >= V6_FLAG else 4


def key_family(key: int) -> int:
    return socket.AF_INET6 if key >= V6_FLAG else socket.AF_INET


def key_destination(key: int) -> bytes:
    """The RTA_DST bytes of a key (the network address, 4 or 16 octets)."""
    if key >= V6_FLAG:
        return ((key >> 8) & _V6_ADDRESS).to_bytes(16, "big")
    return (key >> 8).to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class NextHop:
    """A gateway reached through an interface (ifindex): what a nexthop object is keyed by.

    The hash is computed once: hop sets key dictionaries on every route of a large batch.
    """

    gateway: Address
    ifindex: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.gateway, self.ifindex)))

    def __hash__(self) -> int:
        return self._hash

    def sort_key(self) -> tuple[int, int, int]:
        return (self.gateway.version, int(self.gateway), self.ifindex)


def canonical(hops: Iterable[NextHop]) -> tuple[NextHop, ...]:
    """An ECMP set in one order, without duplicates, so equal sets compare (and key groups) equal."""
    return tuple(sorted(set(hops), key=NextHop.sort_key))


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A unicast route as we program it: via a nexthop object (nh_id) or explicit next hops."""

    prefix: Prefix
    table: int
    protocol: int
    metric: int | None = None
    nh_id: int | None = None
    nexthops: tuple[NextHop, ...] = ()


def encode_route(op: int, flags: int, seq: int, route: RouteSpec) -> bytes:
    """RTM_NEWROUTE / RTM_DELROUTE for one prefix; tables >= 256 only fit in RTA_TABLE."""
    table_byte = route.table if route.table < 256 else RT_TABLE_UNSPEC
    header = _RTMSG.pack(
        family_of(route.prefix),
        route.prefix.prefixlen,
        0,
        0,
        table_byte,
        route.protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
        0,
    )
    attrs = [rtattr(RTA_DST, route.prefix.network_address.packed), rtattr(RTA_TABLE, u32(route.table))]
    if route.metric is not None:
        attrs.append(rtattr(RTA_PRIORITY, u32(route.metric)))
    if op == RTM_NEWROUTE:
        if route.nh_id is not None:
            attrs.append(rtattr(RTA_NH_ID, u32(route.nh_id)))
        else:
            attrs.append(_hops_attrs(route.prefix.version, route.nexthops))
    return nlmsg(op, flags, seq, header + b"".join(attrs))


def _hops_attrs(version: int, hops: tuple[NextHop, ...]) -> bytes:
    """RTA_GATEWAY + RTA_OIF for one hop, RTA_MULTIPATH for several."""
    if len(hops) == 1:
        return _gateway_attr(version, hops[0].gateway) + rtattr(RTA_OIF, u32(hops[0].ifindex))
    if hops:
        return rtattr(RTA_MULTIPATH, b"".join(_rtnexthop(version, h) for h in hops))
    return b""


def _gateway_attr(version: int, gateway: Address) -> bytes:
    """RTA_GATEWAY for a same-family gateway, RTA_VIA for an IPv6 gateway of an IPv4 route (RFC 8950)."""
    if gateway.version == version:
        return rtattr(RTA_GATEWAY, gateway.packed)
    return rtattr(RTA_VIA, struct.pack("=H", socket.AF_INET6) + gateway.packed)


def _rtnexthop(version: int, hop: NextHop) -> bytes:
    attrs = _gateway_attr(version, hop.gateway)
    return _RTNH.pack(_RTNH.size + len(attrs), 0, 0, hop.ifindex) + attrs


class RouteEncoder:
    """encode_route for one writer's (table, protocol, metric), with the constant parts built once.

    Produces the same bytes as encode_route (a unit test holds it to that); a bulk install spends
    most of its Python time here.
    """

    def __init__(self, table: int, protocol: int, metric: int | None) -> None:
        self._table = table
        self._protocol = protocol
        self._tail = rtattr(RTA_TABLE, u32(table))
        if metric is not None:
            self._tail += rtattr(RTA_PRIORITY, u32(metric))
        self._metric = metric
        self._headers: dict[tuple[int, int], bytes] = {}
        self._nh_attrs: dict[int, bytes] = {}
        self._hop_attrs: dict[tuple[int, tuple[NextHop, ...]], bytes] = {}

    def _header(self, version: int, prefixlen: int) -> bytes:
        key = (version, prefixlen)
        header = self._headers.get(key)
        if header is None:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            table_byte = self._table if self._table < 256 else RT_TABLE_UNSPEC
            header = _RTMSG.pack(
                family, prefixlen, 0, 0, table_byte, self._protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
            )
            header += _RTATTR.pack(_RTATTR.size + (4 if version == 4 else 16), RTA_DST)
            self._headers[key] = header
        return header

    def new(self, flags: int, seq: int, key: int, nh_id: int | None, hops: tuple[NextHop, ...] = ()) -> bytes:
        """RTM_NEWROUTE for a route key via nexthop object `nh_id`, or via explicit `hops` when nh_id
        is None."""
        version = 6 if key >= V6_FLAG else 4
        if nh_id is not None:
            via = self._nh_attrs.get(nh_id)
            if via is None:
                via = self._nh_attrs[nh_id] = rtattr(RTA_NH_ID, u32(nh_id))
        else:
            cached = (version, hops)
            via = self._hop_attrs.get(cached)
            if via is None:
                if len(self._hop_attrs) > 4096:  # hop sets come and go: keep the cache bounded
                    self._hop_attrs.clear()
                via = self._hop_attrs[cached] = _hops_attrs(version, hops)
        body = self._header(version, key & 0xFF) + key_destination(key) + self._tail + via
        return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWROUTE, flags, seq, 0) + body

    def delete(self, seq: int, key: int, metric: int | None) -> bytes:
        """RTM_DELROUTE naming our protocol (and metric), so the kernel deletes only our route."""
        if metric == self._metric:
            tail = self._tail
        else:
            tail = rtattr(RTA_TABLE, u32(self._table))
            if metric is not None:
                tail += rtattr(RTA_PRIORITY, u32(metric))
        body = self._header(key_version(key), key & 0xFF) + key_destination(key) + tail
        return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_DELROUTE, NLM_F_REQUEST, seq, 0) + body


def encode_nexthop(flags: int, seq: int, nh_id: int, protocol: int, hop: NextHop) -> bytes:
    """RTM_NEWNEXTHOP for a single gateway nexthop object."""
    header = _NHMSG.pack(family_of(hop.gateway), 0, protocol, 0, 0)
    attrs = rtattr(NHA_ID, u32(nh_id)) + rtattr(NHA_OIF, u32(hop.ifindex))
    attrs += rtattr(NHA_GATEWAY, hop.gateway.packed)
    return nlmsg(RTM_NEWNEXTHOP, flags, seq, header + attrs)


def encode_group(flags: int, seq: int, nh_id: int, protocol: int, members: Sequence[int]) -> bytes:
    """RTM_NEWNEXTHOP for a multipath group of existing nexthop ids (family must be AF_UNSPEC).

    Weight is sent as 0, which the kernel reads as 1 (nexthop_grp.weight is weight - 1).
    """
    header = _NHMSG.pack(socket.AF_UNSPEC, 0, protocol, 0, 0)
    group = b"".join(_NHGRP.pack(member, 0, 0, 0) for member in members)
    attrs = rtattr(NHA_ID, u32(nh_id)) + rtattr(NHA_GROUP, group)
    return nlmsg(RTM_NEWNEXTHOP, flags, seq, header + attrs)


def encode_del_nexthop(seq: int, nh_id: int) -> bytes:
    header = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return nlmsg(RTM_DELNEXTHOP, NLM_F_REQUEST, seq, header + rtattr(NHA_ID, u32(nh_id)))


def encode_dump(kind: int, seq: int, family: int = socket.AF_UNSPEC, table: int | None = None) -> bytes:
    """A dump request; for routes, `table` asks the kernel to filter (and to answer ENOENT if absent)."""
    if kind == RTM_GETNEXTHOP:
        return nlmsg(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, _NHMSG.pack(family, 0, 0, 0, 0))
    body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    if table is not None:
        body += rtattr(RTA_TABLE, u32(table))
    return nlmsg(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def encode_route_get(seq: int, destination: Address) -> bytes:
    """RTM_GETROUTE for one address: how the kernel would forward to it (`ip route get`)."""
    bits = 32 if destination.version == 4 else 128
    body = _RTMSG.pack(family_of(destination), bits, 0, 0, 0, 0, 0, 0, 0)
    return nlmsg(RTM_GETROUTE, NLM_F_REQUEST, seq, body + rtattr(RTA_DST, destination.packed))


def encode_noop_ack(seq: int) -> bytes:
    """An NLMSG_NOOP the kernel only ACKs: once its ACK arrives, every earlier request is done."""
    return nlmsg(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, b"")


def iter_messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """Split a netlink datagram into (type, flags, seq, pid, payload); stops at a malformed header."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(view):
        length, kind, flags, seq, pid = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or offset + length > len(view):
            return
        yield kind, flags, seq, pid, view[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)


def iter_attrs(payload: memoryview, offset: int) -> Iterator[tuple[int, memoryview]]:
    """The rtattrs from `offset` on, type without the NESTED/BYTEORDER bits; stops when malformed."""
    while offset + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size or offset + length > len(payload):
            return
        yield kind & 0x3FFF, payload[offset + _RTATTR.size : offset + length]
        offset += _align(length)


def decode_error(flags: int, payload: memoryview) -> tuple[int, str]:
    """An NLMSG_ERROR payload as (positive errno or 0 for an ACK, the kernel's extack text or "")."""
    if len(payload) < _I32.size:
        return errno.EIO, "truncated netlink error"
    code = -_I32.unpack_from(payload, 0)[0]
    text = ""
    if flags & NLM_F_ACK_TLVS and len(payload) >= _I32.size + _NLMSGHDR.size:
        offset = _I32.size + _NLMSGHDR.size
        if not flags & NLM_F_CAPPED:
            offset = _I32.size + _align(_NLMSGHDR.unpack_from(payload, _I32.size)[0])
        for kind, value in iter_attrs(payload, offset):
            if kind == NLMSGERR_ATTR_MSG:
                text = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return code, text


def decode_done(flags: int, payload: memoryview) -> tuple[int, str]:
    """An NLMSG_DONE payload: a dump's final status (0 or a positive errno) and the extack text.

    Unlike NLMSG_ERROR it echoes no request header: the attributes follow the i32 at once.
    """
    if len(payload) < _I32.size:
        return 0, ""
    code = -_I32.unpack_from(payload, 0)[0]
    text = ""
    if flags & NLM_F_ACK_TLVS:
        for kind, value in iter_attrs(payload, _I32.size):
            if kind == NLMSGERR_ATTR_MSG:
                text = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return code, text


@dataclass(slots=True)
class KernelRoute:
    """A route read back from the kernel (dump, `route get` answer or notification)."""

    family: int
    key: int  # the route's key (bgp.types.PrefixKey layout, host bits cleared)
    table: int
    protocol: int
    rtype: int
    metric: int | None
    nh_id: int | None
    nexthops: tuple[NextHop, ...]
    oif: int | None = None


@dataclass(slots=True)
class KernelNexthop:
    """A nexthop object read back from the kernel (group members set for groups)."""

    nh_id: int
    protocol: int
    gateway: Address | None = None
    ifindex: int | None = None
    members: tuple[int, ...] = ()
    blackhole: bool = False


def decode_route(payload: memoryview) -> KernelRoute | None:
    """An RTM_NEWROUTE/RTM_DELROUTE payload; None for other families or a malformed message.

    The attribute loop is inlined: adopting a table decodes every route in it.
    """
    size = len(payload)
    if size < _RTMSG.size:
        return None
    family, dst_len, _src, _tos, table, protocol, _scope, rtype, _flags = _RTMSG.unpack_from(payload, 0)
    if family == socket.AF_INET:
        width, flag, address_class = 4, 0, IPv4Address
    elif family == socket.AF_INET6:
        width, flag, address_class = 16, V6_FLAG, IPv6Address  # type: ignore[assignment]
    else:
        return None
    dst = 0
    metric = nh_id = oif = None
    gateway: Address | None = None
    raw_gateway = b""
    hops: list[NextHop] = []
    offset = _RTMSG.size
    try:
        while offset + 4 <= size:
            length, kind = _RTATTR.unpack_from(payload, offset)
            if length < 4 or offset + length > size:
                break
            start = offset + 4
            kind &= 0x3FFF
            if kind == RTA_DST:
                dst = int.from_bytes(payload[start : offset + length], "big")
            elif kind == RTA_TABLE:
                table = _U32.unpack_from(payload, start)[0]
            elif kind == RTA_PRIORITY:
                metric = _U32.unpack_from(payload, start)[0]
            elif kind == RTA_NH_ID:
                nh_id = _U32.unpack_from(payload, start)[0]
                # The kernel writes the object id after the route's identity (table, destination,
                # priority; fib_dump_info, rt6_fill_node) and then, in compat mode, copies of the
                # object's gateways, which a route via an object is not read by: skipped.
                break
            elif kind == RTA_OIF:
                oif = _U32.unpack_from(payload, start)[0]
            elif kind == RTA_GATEWAY:
                raw_gateway = bytes(payload[start : offset + length])
            elif kind == RTA_VIA:
                gateway = ip_address(bytes(payload[start + 2 : offset + length]))
            elif kind == RTA_MULTIPATH:
                hops.extend(_decode_multipath(payload[start : offset + length], address_class))
            offset += (length + 3) & ~3
        if dst_len > width * 8:
            return None
        bits = width * 8
        key = flag | ((dst >> (bits - dst_len) << (bits - dst_len)) << 8) | dst_len
    except (struct.error, ValueError):
        return None
    if raw_gateway and oif is not None:
        hops.append(_single_hop(raw_gateway, oif, address_class))
    elif gateway is not None and oif is not None:
        hops.append(NextHop(gateway, oif))
    return KernelRoute(family, key, table, protocol, rtype, metric, nh_id, tuple(hops), oif)


_HOP_CACHE: dict[tuple[bytes, int], NextHop] = {}


def _single_hop(raw: bytes, oif: int, address_class: type[Address]) -> NextHop:
    """NextHop objects for the few gateways a table uses, shared (a dump repeats them per route)."""
    key = (raw, oif)
    hop = _HOP_CACHE.get(key)
    if hop is None:
        if len(_HOP_CACHE) > 4096:
            _HOP_CACHE.clear()
        hop = _HOP_CACHE[key] = NextHop(address_class(raw), oif)
    return hop


def _decode_multipath(value: memoryview, address_class: type[Address]) -> Iterator[NextHop]:
    offset = 0
    while offset + _RTNH.size <= len(value):
        length, _flags, _hops, ifindex = _RTNH.unpack_from(value, offset)
        if length < _RTNH.size:
            return
        for kind, attr in iter_attrs(value[offset : offset + length], _RTNH.size):
            if kind == RTA_GATEWAY:
                yield NextHop(address_class(bytes(attr)), ifindex)
            elif kind == RTA_VIA:
                yield NextHop(ip_address(bytes(attr[2:])), ifindex)
        offset += _align(length)


def decode_nexthop(payload: memoryview) -> KernelNexthop | None:
    """An RTM_NEWNEXTHOP/RTM_DELNEXTHOP payload; None without an id or when malformed."""
    if len(payload) < _NHMSG.size:
        return None
    _fam, _scope, protocol, _resvd, _flags = _NHMSG.unpack_from(payload, 0)
    result = KernelNexthop(nh_id=0, protocol=protocol)
    try:
        for kind, value in iter_attrs(payload, _NHMSG.size):
            if kind == NHA_ID:
                result.nh_id = _U32.unpack_from(value)[0]
            elif kind == NHA_OIF:
                result.ifindex = _U32.unpack_from(value)[0]
            elif kind == NHA_GATEWAY:
                result.gateway = ip_address(bytes(value))
            elif kind == NHA_BLACKHOLE:
                result.blackhole = True
            elif kind == NHA_GROUP:
                offsets = range(0, len(value) - _NHGRP.size + 1, _NHGRP.size)
                result.members = tuple(_NHGRP.unpack_from(value, off)[0] for off in offsets)
    except (struct.error, ValueError):
        return None
    return result if result.nh_id else None


class Op(enum.Enum):
    """What a batched request did, to report failures against."""

    ROUTE_CREATE = "route-create"
    ROUTE_REPLACE = "route-replace"
    ROUTE_DELETE = "route-delete"
    NEXTHOP_CREATE = "nexthop-create"
    NEXTHOP_REPLACE = "nexthop-replace"
    NEXTHOP_DELETE = "nexthop-delete"


@dataclass(frozen=True, slots=True)
class Failure:
    """A request the kernel refused: what it was, for which object, the errno and the kernel's text."""

    op: Op
    subject: object
    errno: int
    message: str = ""

    @property
    def reason(self) -> str:
        text = f"{errno.errorcode.get(self.errno, str(self.errno))}: {os.strerror(self.errno)}"
        return f"{text} ({self.message})" if self.message else text


@dataclass(slots=True)
class Batch:
    """Requests to send together; `subjects` maps each sequence number to what it was about."""

    messages: list[bytes] = field(default_factory=list)
    subjects: dict[int, tuple[Op, object]] = field(default_factory=dict)


@dataclass(slots=True)
class SendResult:
    """The refused requests of a batch; `lost` when the kernel dropped error messages (overflow)."""

    failures: list[Failure] = field(default_factory=list)
    lost: bool = False


class RouteChannel(Protocol):
    """What the node writer needs from the kernel side: NetlinkChannel, or a fake in unit tests."""

    portid: int

    def close(self) -> None: ...

    def next_seq(self) -> int: ...

    def add(self, batch: Batch, op: Op, subject: object, build: Builder) -> None: ...

    def send(self, batch: Batch) -> SendResult: ...

    def dump(
        self, kind: int, family: int = socket.AF_UNSPEC, table: int | None = None
    ) -> Iterator[memoryview]: ...

    def routes(self, family: int = socket.AF_UNSPEC, table: int | None = None) -> Iterable[KernelRoute]: ...

    def nexthops(self) -> list[KernelNexthop]: ...

    def route_get(self, destination: Address) -> KernelRoute | None: ...


class NetlinkChannel:
    """A blocking rtnetlink socket that sends batches without per-message ACKs and collects errors.

    Used from a worker thread so the asyncio loop never blocks on the kernel. The socket lives in the
    network namespace of the thread that opens it, for its whole life: whoever constructs the channel
    chooses the namespace whose tables it programs.
    """

    def __init__(self, *, rcvbuf: int = 8 * 1024 * 1024, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        _set_rcvbuf(self._sock, rcvbuf)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            with contextlib.suppress(OSError):
                self._sock.setsockopt(SOL_NETLINK, option, 1)
        self._sock.bind((0, 0))
        self._timeout = timeout
        self.portid: int = self._sock.getsockname()[0]
        self._seq = 1

    def close(self) -> None:
        self._sock.close()

    def _recv(self) -> bytes:
        """Wait (bounded) for the next datagram: a kernel that never answers must not hang us."""
        ready, _, _ = select.select([self._sock], [], [], self._timeout)
        if not ready:
            raise TimeoutError(errno.ETIMEDOUT, "no answer from rtnetlink")
        return self._sock.recv(1 << 20)

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def add(self, batch: Batch, op: Op, subject: object, build: Builder) -> None:
        """Append one request built with a fresh sequence number."""
        seq = self.next_seq()
        batch.messages.append(build(seq))
        batch.subjects[seq] = (op, subject)

    def send(self, batch: Batch) -> SendResult:
        """Send every message of the batch in ~64 KiB writes; return the ones the kernel refused."""
        result = SendResult()
        chunk: list[bytes] = []
        size = 0
        for message in batch.messages:
            if size + len(message) > BATCH_BYTES and chunk:
                self._write(b"".join(chunk), batch, result)
                chunk, size = [], 0
            chunk.append(message)
            size += len(message)
        if chunk:
            self._write(b"".join(chunk), batch, result)
        self._barrier(batch, result)
        return result

    def _write(self, data: bytes, batch: Batch, result: SendResult) -> None:
        """One sendmsg (the kernel processes it before returning), then collect its errors."""
        for _attempt in range(100):
            try:
                self._sock.send(data)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                self._drain(batch, result)
        else:
            raise OSError(errno.ENOBUFS, "netlink socket stayed congested")
        self._drain(batch, result)

    def _barrier(self, batch: Batch, result: SendResult) -> None:
        seq = self.next_seq()
        self._sock.send(encode_noop_ack(seq))
        while True:
            try:
                data = self._recv()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                result.lost = True
                continue
            for kind, flags, msg_seq, _pid, payload in iter_messages(data):
                if kind != NLMSG_ERROR:
                    continue
                if msg_seq == seq:
                    return
                self._record_error(flags, payload, msg_seq, batch, result)

    def _drain(self, batch: Batch, result: SendResult) -> None:
        """Read every error already queued, without blocking (keeps the receive buffer from overflowing)."""
        while True:
            try:
                data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                result.lost = True
                continue
            for kind, flags, seq, _pid, payload in iter_messages(data):
                if kind == NLMSG_ERROR:
                    self._record_error(flags, payload, seq, batch, result)

    @staticmethod
    def _record_error(flags: int, payload: memoryview, seq: int, batch: Batch, result: SendResult) -> None:
        code, text = decode_error(flags, payload)
        if code == 0 or seq not in batch.subjects:
            return
        op, subject = batch.subjects[seq]
        result.failures.append(Failure(op, subject, code, text))

    def dump(
        self, kind: int, family: int = socket.AF_UNSPEC, table: int | None = None
    ) -> Iterator[memoryview]:
        """Dump routes (RTM_GETROUTE) or nexthops (RTM_GETNEXTHOP); yields each message's payload.

        Raises OSError with the kernel's errno: ENOENT for a route table that does not exist (when
        `table` is given), EOPNOTSUPP/EINVAL for nexthop dumps on kernels without nexthop objects.
        The generator must be consumed to the end so the socket holds no stale answers.
        """
        seq = self.next_seq()
        self._sock.send(encode_dump(kind, seq, family, table))
        while True:
            data = self._recv()
            for msg_kind, flags, msg_seq, _pid, payload in iter_messages(data):
                if msg_seq != seq:
                    continue
                if msg_kind == NLMSG_DONE:
                    code, text = decode_done(flags, payload)
                    if code:
                        raise OSError(code, text or os.strerror(code))
                    return
                if msg_kind == NLMSG_ERROR:
                    code, text = decode_error(flags, payload)
                    if code == 0:
                        return
                    raise OSError(code, text or os.strerror(code))
                yield payload

    def routes(self, family: int = socket.AF_UNSPEC, table: int | None = None) -> Iterator[KernelRoute]:
        """The routes of a dump as they are decoded (a million-route table is never a list)."""
        for payload in self.dump(RTM_GETROUTE, family, table):
            route = decode_route(payload)
            if route is not None:
                yield route

    def nexthops(self) -> list[KernelNexthop]:
        out: list[KernelNexthop] = []
        for payload in self.dump(RTM_GETNEXTHOP):
            nexthop = decode_nexthop(payload)
            if nexthop is not None:
                out.append(nexthop)
        return out

    def route_get(self, destination: Address) -> KernelRoute | None:
        """The kernel's forwarding answer for one address, or None when it has none (unreachable)."""
        seq = self.next_seq()
        self._sock.send(encode_route_get(seq, destination))
        while True:
            data = self._recv()
            for kind, _flags, msg_seq, _pid, payload in iter_messages(data):
                if msg_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    return None
                if kind == RTM_NEWROUTE:
                    return decode_route(payload)


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE (CAP_NET_ADMIN may exceed rmem_max), else the capped SO_RCVBUF."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# Classic BPF (include/uapi/linux/filter.h): loads are big-endian, netlink fields host order.
_BPF_LD_W_ABS, _BPF_LD_H_ABS, _BPF_LD_B_ABS = 0x20, 0x28, 0x30
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_SO_ATTACH_FILTER = 26
_SOCK_FILTER = struct.Struct("=HBBI")


def _as_loaded(value: int, size: int) -> int:
    """A host-order field as a BPF absolute load sees it (network byte order)."""
    return int.from_bytes(value.to_bytes(size, sys.byteorder), "big")


def monitor_filter(ignore_portid: int, table: int) -> bytes:
    """A socket filter for a route monitor: drop what `ignore_portid` caused, and other tables' routes.

    Our own bulk writes would otherwise flood the monitor (one notification per route) and overflow
    it; the kernel drops them before they are queued. Route messages pass when their rtm_table byte
    is the table's (tables >= 256 show RT_TABLE_COMPAT and are filtered again in user space); every
    other message (nexthop changes) passes.

        0 ld  [12]                 nlmsg_pid
        1 jeq #ignore  -> 8        drop
        2 ldh [4]                  nlmsg_type
        3 jeq #NEWROUTE -> 5
        4 jeq #DELROUTE -> 5, else 7
        5 ldb [20]                 rtm_table (16-byte header + 4)
        6 jeq #table  -> 7, else 8
        7 ret #0xffffffff          accept
        8 ret #0                   drop
    """
    table_byte = table if table < 256 else 252  # RT_TABLE_COMPAT
    program = [
        (_BPF_LD_W_ABS, 0, 0, 12),
        (_BPF_JEQ_K, 6, 0, _as_loaded(ignore_portid, 4)),
        (_BPF_LD_H_ABS, 0, 0, 4),
        (_BPF_JEQ_K, 1, 0, _as_loaded(RTM_NEWROUTE, 2)),
        (_BPF_JEQ_K, 0, 2, _as_loaded(RTM_DELROUTE, 2)),
        (_BPF_LD_B_ABS, 0, 0, _NLMSGHDR.size + 4),
        (_BPF_JEQ_K, 0, 1, table_byte),
        (_BPF_RET_K, 0, 0, 0xFFFFFFFF),
        (_BPF_RET_K, 0, 0, 0),
    ]
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in program)


def _attach_filter(sock: socket.socket, program: bytes) -> bool:
    """SO_ATTACH_FILTER; False if the kernel refuses (then user space filters alone)."""
    code = ctypes.create_string_buffer(program)
    fprog = struct.pack("@HP", len(program) // _SOCK_FILTER.size, ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def open_monitor(
    groups: Iterable[int],
    rcvbuf: int = 16 * 1024 * 1024,
    *,
    ignore_portid: int | None = None,
    table: int | None = None,
) -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to multicast `groups` (RTNLGRP_* numbers).

    With `ignore_portid` and `table`, monitor_filter runs in the kernel. Like the channel, the
    socket stays in the network namespace of the thread that opened it.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        _set_rcvbuf(sock, rcvbuf)
        if ignore_portid is not None and table is not None:
            _attach_filter(sock, monitor_filter(ignore_portid, table))
        sock.bind((0, 0))
        for group in groups:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
