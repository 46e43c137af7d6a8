"""BFD over UDP (RFC 5881 single hop, RFC 5883 multihop): the sockets and nothing else.

Reception: one wildcard socket per (address family, port), UDP 3784 single hop (RFC 5881 §4) and 4784
multihop (RFC 5883 §5), read with recvmsg() for the ancillary data the checks need:

- the received TTL / Hop Limit (IP_RECVTTL -> IP_TTL, IPV6_RECVHOPLIMIT -> IPV6_HOPLIMIT): single hop
  accepts exactly 255 (RFC 5881 §5, GTSM), multihop a configured minimum (RFC 5883 §5); the session
  applies the rule so a bad TTL is counted against the session it was aimed at;
- the destination address and the arrival interface (IP_PKTINFO, IPV6_RECVPKTINFO), which together with
  the source address and the port form the path the discriminator registry demultiplexes on (RFC 5880
  §6.8.6 step 9), so a session bound to a local address or an interface only hears packets that arrived
  there.

One wildcard socket (not one per local address) because a UDP port is one system-wide resource and
binding the same port to a wildcard and to specific addresses needs SO_REUSEADDR, which would let any
other process bind it too; the path filter gives the same isolation without that.

Transmission: one socket per session (`Sender`), bound to the session's local address (or the wildcard)
and a source port from 49152-65535 unique among our sessions (RFC 5881 §4), to the interface with
SO_BINDTODEVICE when one is given, sending with TTL / Hop Limit 255 (RFC 5881 §5; RFC 5883 leaves the
sent TTL open, 255 lets the peer apply any minimum) and DSCP CS6 (network control).

Datagrams this layer refuses carry a `TransportDrop` (the other reasons are bfd.codec.DropReason).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from bfd.registry import IPAddress, PathKey

SINGLE_HOP_PORT = 3784  # RFC 5881 §4
MULTIHOP_PORT = 4784  # RFC 5883 §5
SOURCE_PORT_MIN = 49152  # RFC 5881 §4: source port range
SOURCE_PORT_MAX = 65535
SEND_TTL = 255  # RFC 5881 §5
DSCP_CS6 = 0xC0  # TOS / traffic class byte for network control traffic

# Linux constants Python 3.11 does not export (linux/in.h).
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)

_RECV_BUFSIZE = 512  # a BFD Control packet is at most 24 + 28 bytes; larger datagrams are refused
_INT = struct.Struct("=i")
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr (header destination)
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex
_ANC_BUFSIZE = socket.CMSG_SPACE(_IN6_PKTINFO.size) + socket.CMSG_SPACE(_INT.size) + 64
_PORT_TRIES = 64


class TransportDrop(enum.Enum):
    """Why a datagram was discarded before it could be decoded; the value is a metric label."""

    OVERSIZED = "oversized"  # larger than any BFD Control packet (MSG_TRUNC)
    MISSING_TTL = "missing_ttl"  # no TTL / Hop Limit ancillary data: GTSM cannot be checked
    MISSING_DESTINATION = "missing_destination"  # no packet info: the path cannot be determined


@dataclass(frozen=True, slots=True)
class Ports:
    """UDP ports: the RFC's by default. Other values let several services share one host in tests.

    `single_hop`/`multihop` are where we listen (0: the kernel picks); `peer_single_hop`/`peer_multihop`
    are where we send to (None: the same as ours, as the RFCs have it).
    """

    single_hop: int = SINGLE_HOP_PORT
    multihop: int = MULTIHOP_PORT
    peer_single_hop: int | None = None
    peer_multihop: int | None = None

    def listen(self, multihop: bool) -> int:
        return self.multihop if multihop else self.single_hop

    def destination(self, multihop: bool) -> int:
        if multihop:
            return self.peer_multihop if self.peer_multihop is not None else self.multihop
        return self.peer_single_hop if self.peer_single_hop is not None else self.single_hop


@dataclass(frozen=True, slots=True)
class Datagram:
    """One received datagram with what recvmsg() told about it; `drop` set if it is unusable."""

    data: bytes
    path: PathKey | None
    ttl: int | None
    drop: TransportDrop | None = None


def _family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _wildcard(family: socket.AddressFamily) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def _plain(host: str) -> IPAddress:
    """An address from a sockaddr host string, without any %scope suffix (the interface is separate)."""
    return ipaddress.ip_address(host.split("%", 1)[0])


class Receiver:
    """The listening socket for one (address family, single hop / multihop)."""

    def __init__(self, family: socket.AddressFamily, multihop: bool, port: int) -> None:
        self.family = family
        self.multihop = multihop
        self._ifnames: dict[int, str | None] = {}
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setblocking(False)
            sock.bind((_wildcard(family), port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port: int = sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def forget_interfaces(self) -> None:
        """Drop cached interface names (interfaces come and go; indexes may be reused)."""
        self._ifnames.clear()

    def read(self, limit: int) -> Iterator[Datagram]:
        """Up to `limit` queued datagrams, without blocking."""
        for _ in range(limit):
            try:
                data, ancdata, flags, source = self.sock.recvmsg(_RECV_BUFSIZE, _ANC_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error queued on the socket, or similar: not a datagram, nothing to demultiplex.
                continue
            yield self._datagram(data, ancdata, flags, source)

    def _datagram(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, source: tuple[object, ...]
    ) -> Datagram:
        if flags & socket.MSG_TRUNC:
            return Datagram(data, None, None, TransportDrop.OVERSIZED)
        ttl: int | None = None
        local: IPAddress | None = None
        ifindex = 0
        for level, kind, payload in ancdata:
            if level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(payload) >= _INT.size:
                ttl = _INT.unpack_from(payload)[0]
            elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= _IN_PKTINFO.size:
                ifindex, _spec_dst, header_dst = _IN_PKTINFO.unpack_from(payload)
                local = ipaddress.IPv4Address(header_dst)
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(payload) >= _INT.size:
                ttl = _INT.unpack_from(payload)[0]
            elif (
                level == socket.IPPROTO_IPV6
                and kind == socket.IPV6_PKTINFO
                and len(payload) >= _IN6_PKTINFO.size
            ):
                raw, ifindex = _IN6_PKTINFO.unpack_from(payload)
                local = ipaddress.IPv6Address(raw)
        if local is None:
            return Datagram(data, None, ttl, TransportDrop.MISSING_DESTINATION)
        path = PathKey(
            peer=_plain(str(source[0])), local=local, interface=self._ifname(ifindex), multihop=self.multihop
        )
        if ttl is None:
            return Datagram(data, path, None, TransportDrop.MISSING_TTL)
        return Datagram(data, path, ttl)

    def _ifname(self, ifindex: int) -> str | None:
        if ifindex <= 0:
            return None
        if ifindex not in self._ifnames:
            try:
                self._ifnames[ifindex] = socket.if_indextoname(ifindex)
            except OSError:
                return None  # vanished meanwhile; do not cache
        return self._ifnames[ifindex]


class Sender:
    """The transmit socket of one session: its own source port, TTL 255, bound where the session is."""

    def __init__(
        self,
        path: PathKey,
        destination_port: int,
        rng: random.Random,
        ports_in_use: set[int],
    ) -> None:
        family = _family(path.peer)
        if path.local is not None and _family(path.local) != family:
            raise ValueError(f"local address {path.local} and peer {path.peer} are of different families")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, SEND_TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_CS6)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, SEND_TTL)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_CS6)
            if path.interface is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, path.interface.encode())
            sock.setblocking(False)
            self.source_port = _bind_source_port(sock, path.local, family, rng, ports_in_use)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.path = path
        scope = socket.if_nametoindex(path.interface) if path.interface and path.peer.is_link_local else 0
        if family == socket.AF_INET6:
            self.address: tuple[str, int] | tuple[str, int, int, int] = (
                str(path.peer),
                destination_port,
                0,
                scope,
            )
        else:
            self.address = (str(path.peer), destination_port)

    def send(self, data: bytes) -> None:
        """Send one packet; raises OSError (the caller counts it: a lost packet is what BFD detects)."""
        self.sock.sendto(data, self.address)

    def close(self) -> None:
        self.sock.close()


def _bind_source_port(
    sock: socket.socket,
    local: IPAddress | None,
    family: socket.AddressFamily,
    rng: random.Random,
    ports_in_use: set[int],
) -> int:
    """Bind to a random free port in 49152-65535 not used by another of our sessions (RFC 5881 §4)."""
    host = str(local) if local is not None else _wildcard(family)
    span = SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1
    start = rng.randrange(span)
    tries = 0
    for offset in range(span):
        port = SOURCE_PORT_MIN + (start + offset) % span
        if port in ports_in_use:
            continue
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            tries += 1
            if tries >= _PORT_TRIES:
                break
            continue
        ports_in_use.add(port)
        return port
    raise OSError(errno.EADDRINUSE, "no free BFD source port in 49152-65535")
