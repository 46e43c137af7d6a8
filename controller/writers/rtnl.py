"""Raw rtnetlink messages for bulk route programming, and a batching channel to send them.

pyroute2 is good at link/address lookups, dumps and monitoring, but a synchronous request per route
manages only ~2,500 routes/s, and it has no API for nexthop objects. Here routes and nexthop objects
are encoded directly and sent in ~64 KiB batches without per-message ACKs; the kernel answers only
the messages that fail (NLMSG_ERROR with our sequence number), and one final ACKed message tells us
the batch is done (netlink requests on one socket are processed in order).

Wire formats (include/uapi/linux/netlink.h, rtnetlink.h, nexthop.h)::

    nlmsghdr   u32 len | u16 type | u16 flags | u32 seq | u32 pid
    rtmsg      u8 family | u8 dst_len | u8 src_len | u8 tos | u8 table | u8 protocol | u8 scope
               | u8 type | u32 flags
    nhmsg      u8 family | u8 scope | u8 protocol | u8 resvd | u32 flags
    rtattr     u16 len | u16 type | value, padded to 4 bytes
    nexthop_grp  u32 id | u8 weight | u8 resvd1 | u16 resvd2
    rtnexthop  u16 len | u8 flags | u8 hops | i32 ifindex | rtattrs  (RTA_MULTIPATH entries)
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

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

# Multicast groups (1-based numbers for setsockopt NETLINK_ADD_MEMBERSHIP)
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_ROUTE = 11
RTNLGRP_NEXTHOP = 32
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NHMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_NHGRP = struct.Struct("=IBBH")
_RTNH = struct.Struct("=HBBi")

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
    return struct.pack("=I", value)


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """Wrap a payload in a netlink header (payload is already 4-byte aligned)."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def _family(addr: Address | Prefix) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


@dataclass(frozen=True, slots=True)
class NextHop:
    """A gateway reached through an interface (ifindex)."""

    gateway: Address
    ifindex: int


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
    """RTM_NEWROUTE / RTM_DELROUTE for one prefix."""
    table_byte = route.table if route.table < 256 else RT_TABLE_UNSPEC
    header = _RTMSG.pack(
        _family(route.prefix),
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
        elif len(route.nexthops) == 1:
            hop = route.nexthops[0]
            attrs.append(_gateway_attr(route.prefix, hop.gateway))
            attrs.append(rtattr(RTA_OIF, u32(hop.ifindex)))
        elif route.nexthops:
            attrs.append(rtattr(RTA_MULTIPATH, b"".join(_rtnexthop(route.prefix, h) for h in route.nexthops)))
    return nlmsg(op, flags, seq, header + b"".join(attrs))


def _gateway_attr(prefix: Prefix, gateway: Address) -> bytes:
    """RTA_GATEWAY for a same-family gateway, RTA_VIA for an IPv6 gateway of an IPv4 route (RFC 8950)."""
    if gateway.version == prefix.version:
        return rtattr(RTA_GATEWAY, gateway.packed)
    return rtattr(RTA_VIA, struct.pack("=H", socket.AF_INET6) + gateway.packed)


def _rtnexthop(prefix: Prefix, hop: NextHop) -> bytes:
    attrs = _gateway_attr(prefix, hop.gateway)
    return _RTNH.pack(_RTNH.size + len(attrs), 0, 0, hop.ifindex) + attrs


def encode_nexthop(flags: int, seq: int, nh_id: int, protocol: int, hop: NextHop) -> bytes:
    """RTM_NEWNEXTHOP for a single gateway nexthop object."""
    header = _NHMSG.pack(_family(hop.gateway), 0, protocol, 0, 0)
    attrs = rtattr(NHA_ID, u32(nh_id)) + rtattr(NHA_OIF, u32(hop.ifindex))
    attrs += rtattr(NHA_GATEWAY, hop.gateway.packed)
    return nlmsg(RTM_NEWNEXTHOP, flags, seq, header + attrs)


def encode_group(flags: int, seq: int, nh_id: int, protocol: int, members: Sequence[int]) -> bytes:
    """RTM_NEWNEXTHOP for a multipath group of existing nexthop ids (family must be AF_UNSPEC)."""
    header = _NHMSG.pack(socket.AF_UNSPEC, 0, protocol, 0, 0)
    group = b"".join(_NHGRP.pack(member, 0, 0, 0) for member in members)
    attrs = rtattr(NHA_ID, u32(nh_id)) + rtattr(NHA_GROUP, group)
    return nlmsg(RTM_NEWNEXTHOP, flags, seq, header + attrs)


def encode_del_nexthop(seq: int, nh_id: int) -> bytes:
    header = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return nlmsg(RTM_DELNEXTHOP, NLM_F_REQUEST, seq, header + rtattr(NHA_ID, u32(nh_id)))


def encode_dump(kind: int, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    if kind == RTM_GETNEXTHOP:
        return nlmsg(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, _NHMSG.pack(family, 0, 0, 0, 0))
    return nlmsg(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """Split a netlink datagram into (type, flags, seq, payload) tuples."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(view):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or offset + length > len(view):
            return
        yield kind, flags, seq, view[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)


def iter_attrs(payload: memoryview, offset: int) -> Iterator[tuple[int, memoryview]]:
    while offset + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, payload[offset + _RTATTR.size : offset + length]
        offset += _align(length)


@dataclass(slots=True)
class KernelRoute:
    """A route read back from the kernel."""

    prefix: Prefix
    table: int
    protocol: int
    metric: int | None
    nh_id: int | None
    nexthops: tuple[NextHop, ...]


@dataclass(slots=True)
class KernelNexthop:
    """A nexthop object read back from the kernel (group members set for groups)."""

    nh_id: int
    protocol: int
    gateway: Address | None = None
    ifindex: int | None = None
    members: tuple[int, ...] = ()


def decode_route(payload: memoryview) -> KernelRoute | None:
    family, dst_len, _src, _tos, table, protocol, _scope, rtype, _flags = _RTMSG.unpack_from(payload, 0)
    if rtype != RTN_UNICAST or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    dst: bytes | None = None
    metric = nh_id = oif = None
    gateway: Address | None = None
    hops: list[NextHop] = []
    for kind, value in iter_attrs(payload, _RTMSG.size):
        if kind == RTA_DST:
            dst = bytes(value)
        elif kind == RTA_TABLE:
            table = struct.unpack_from("=I", value)[0]
        elif kind == RTA_PRIORITY:
            metric = struct.unpack_from("=I", value)[0]
        elif kind == RTA_NH_ID:
            nh_id = struct.unpack_from("=I", value)[0]
        elif kind == RTA_OIF:
            oif = struct.unpack_from("=I", value)[0]
        elif kind == RTA_GATEWAY:
            gateway = ip_address(bytes(value))
        elif kind == RTA_VIA:
            gateway = ip_address(bytes(value[2:]))
        elif kind == RTA_MULTIPATH:
            hops.extend(_decode_multipath(value))
    if dst is None:
        dst = b"\0" * (4 if family == socket.AF_INET else 16)
    prefix = ip_network((ip_address(dst), dst_len))
    if gateway is not None and oif is not None:
        hops.append(NextHop(gateway, oif))
    return KernelRoute(prefix, table, protocol, metric, nh_id, tuple(hops))


def _decode_multipath(value: memoryview) -> Iterator[NextHop]:
    offset = 0
    while offset + _RTNH.size <= len(value):
        length, _flags, _hops, ifindex = _RTNH.unpack_from(value, offset)
        if length < _RTNH.size:
            return
        for kind, attr in iter_attrs(value[offset : offset + length], _RTNH.size):
            if kind == RTA_GATEWAY:
                yield NextHop(ip_address(bytes(attr)), ifindex)
            elif kind == RTA_VIA:
                yield NextHop(ip_address(bytes(attr[2:])), ifindex)
        offset += _align(length)


def decode_nexthop(payload: memoryview) -> KernelNexthop | None:
    _fam, _scope, protocol, _resvd, _flags = _NHMSG.unpack_from(payload, 0)
    result = KernelNexthop(nh_id=0, protocol=protocol)
    for kind, value in iter_attrs(payload, _NHMSG.size):
        if kind == NHA_ID:
            result.nh_id = struct.unpack_from("=I", value)[0]
        elif kind == NHA_OIF:
            result.ifindex = struct.unpack_from("=I", value)[0]
        elif kind == NHA_GATEWAY:
            result.gateway = ip_address(bytes(value))
        elif kind == NHA_GROUP:
            offsets = range(0, len(value) - _NHGRP.size + 1, _NHGRP.size)
            result.members = tuple(_NHGRP.unpack_from(value, off)[0] for off in offsets)
    return result if result.nh_id else None


class Op(enum.Enum):
    """What a batched request did, to report failures against."""

    ROUTE_REPLACE = "route-replace"
    ROUTE_DELETE = "route-delete"
    NEXTHOP_REPLACE = "nexthop-replace"
    NEXTHOP_DELETE = "nexthop-delete"


@dataclass(frozen=True, slots=True)
class Failure:
    """A request the kernel refused: what it was, for which object, and the errno."""

    op: Op
    subject: object
    errno: int

    @property
    def reason(self) -> str:
        return f"{errno.errorcode.get(self.errno, str(self.errno))}: {os.strerror(self.errno)}"


@dataclass(slots=True)
class Batch:
    """Requests to send together; `subjects` maps each sequence number to what it was about."""

    messages: list[bytes] = field(default_factory=list)
    subjects: dict[int, tuple[Op, object]] = field(default_factory=dict)


class NetlinkChannel:
    """A blocking rtnetlink socket that sends batches without per-message ACKs and collects errors.

    Used from a worker thread (or directly: a 100k-route batch takes well under a second), so the
    asyncio loop never blocks on the kernel. The socket lives in the network namespace of the
    process that opens it: the route server runs inside the namespace whose tables it programs.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self._sock.bind((0, 0))
        self._seq = 1

    def close(self) -> None:
        self._sock.close()

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def add(self, batch: Batch, op: Op, subject: object, build: Builder) -> None:
        """Append one request built with a fresh sequence number."""
        seq = self.next_seq()
        batch.messages.append(build(seq))
        batch.subjects[seq] = (op, subject)

    def send(self, batch: Batch) -> list[Failure]:
        """Send every message of the batch in ~64 KiB writes; return the ones the kernel refused."""
        failures: list[Failure] = []
        chunk: list[bytes] = []
        size = 0
        for message in batch.messages:
            if size + len(message) > BATCH_BYTES and chunk:
                self._write(b"".join(chunk), batch, failures)
                chunk, size = [], 0
            chunk.append(message)
            size += len(message)
        if chunk:
            self._write(b"".join(chunk), batch, failures)
        self._barrier(batch, failures)
        return failures

    def _write(self, data: bytes, batch: Batch, failures: list[Failure]) -> None:
        while True:
            try:
                self._sock.send(data)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                self._drain(batch, failures, block=True)

    def _barrier(self, batch: Batch, failures: list[Failure]) -> None:
        """Send one ACKed no-op request and read until its ACK: every earlier request is then done."""
        seq = self.next_seq()
        body = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + rtattr(NHA_ID, u32(0xFFFFFFFF))
        probe = nlmsg(RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_ACK, seq, body)
        self._sock.send(probe)
        while True:
            data = self._sock.recv(1 << 20)
            for kind, _flags, msg_seq, payload in iter_messages(data):
                if kind != NLMSG_ERROR:
                    continue
                if msg_seq == seq:
                    return
                self._record_error(payload, msg_seq, batch, failures)

    def _drain(self, batch: Batch, failures: list[Failure], *, block: bool) -> None:
        flags = 0 if block else socket.MSG_DONTWAIT
        try:
            data = self._sock.recv(1 << 20, flags)
        except BlockingIOError:
            return
        for kind, _flags, seq, payload in iter_messages(data):
            if kind == NLMSG_ERROR:
                self._record_error(payload, seq, batch, failures)

    @staticmethod
    def _record_error(payload: memoryview, seq: int, batch: Batch, failures: list[Failure]) -> None:
        code = struct.unpack_from("=i", payload, 0)[0]
        if code == 0:
            return
        op, subject = batch.subjects.get(seq, (Op.ROUTE_REPLACE, None))
        failures.append(Failure(op, subject, -code))

    def dump(self, kind: int, family: int = socket.AF_UNSPEC) -> Iterator[memoryview]:
        """Dump routes (RTM_GETROUTE) or nexthops (RTM_GETNEXTHOP); yields each message's payload."""
        seq = self.next_seq()
        self._sock.send(encode_dump(kind, seq, family))
        while True:
            data = self._sock.recv(1 << 20)
            for msg_kind, _flags, msg_seq, payload in iter_messages(data):
                if msg_seq != seq:
                    continue
                if msg_kind == NLMSG_DONE:
                    return
                if msg_kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", payload, 0)[0]
                    if code == 0:
                        return
                    if -code in (errno.EOPNOTSUPP, errno.EINVAL) and kind == RTM_GETNEXTHOP:
                        return
                    raise OSError(-code, os.strerror(-code))
                yield payload

    def routes(self) -> list[KernelRoute]:
        out: list[KernelRoute] = []
        for payload in self.dump(RTM_GETROUTE):
            route = decode_route(payload)
            if route is not None:
                out.append(route)
        return out

    def nexthops(self) -> list[KernelNexthop]:
        out: list[KernelNexthop] = []
        for payload in self.dump(RTM_GETNEXTHOP):
            nexthop = decode_nexthop(payload)
            if nexthop is not None:
                out.append(nexthop)
        return out
