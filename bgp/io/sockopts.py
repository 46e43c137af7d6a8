"""Socket options for BGP transport security: TCP-MD5 (RFC 2385), GTSM (RFC 5082), TTL, TCP_NODELAY.

TCP-MD5 uses Linux `setsockopt(IPPROTO_TCP, TCP_MD5SIG, struct tcp_md5sig)`::

    struct tcp_md5sig {                         /* 216 octets */
        struct sockaddr_storage tcpm_addr;      /* 128: the peer (sockaddr_in or sockaddr_in6) */
        __u8   tcpm_flags;                      /* 0 with plain TCP_MD5SIG */
        __u8   tcpm_prefixlen;                  /* 0 with plain TCP_MD5SIG */
        __u16  tcpm_keylen;                     /* 0 deletes the key */
        int    tcpm_ifindex;
        __u8   tcpm_key[80];
    };

The kernel keeps one key per peer address on a socket. A listening socket holds the keys of every
configured peer and accepted sockets inherit the matching one; an outgoing socket needs its key before
connect() so the SYN is signed. On an AF_INET6 socket IPv4 peers must be given as IPv4-mapped
addresses (the kernel then files the key as AF_INET).

GTSM (RFC 5082 §3): send with TTL/Hop Limit 255 and have the kernel drop anything that arrives with
less than 256 - hops (IP_MINTTL / IPV6_MINHOPCOUNT); on a listening socket this drops SYNs too.
Passwords never reach a log: errors name the peer address only.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

from bgp.types import IPAddress

TCP_MD5SIG = 14  # linux/tcp.h
TCP_MD5SIG_MAXKEYLEN = 80
IP_MINTTL = 21  # linux/in.h
IPV6_MINHOPCOUNT = 73  # linux/in6.h
MAX_TTL = 255

_SOCKADDR_STORAGE = 128
_MD5SIG_TAIL = struct.Struct("=BBHi")  # flags, prefixlen, keylen, ifindex (native order, no padding)
MD5SIG_SIZE = _SOCKADDR_STORAGE + _MD5SIG_TAIL.size + TCP_MD5SIG_MAXKEYLEN


class SocketOptionError(OSError):
    """A security socket option could not be set (the message names the peer, never the key)."""


def _sockaddr(family: int, address: IPAddress) -> bytes:
    """A sockaddr_in / sockaddr_in6 for `address` as seen by a socket of `family`, padded to 128."""
    if family == socket.AF_INET:
        if not isinstance(address, IPv4Address):
            raise SocketOptionError(f"IPv6 peer {address} on an IPv4 socket")
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + address.packed
    else:
        if isinstance(address, IPv4Address):
            address = IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)
        # sockaddr_in6: family (host order), port, flowinfo, address, scope id
        raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + address.packed + b"\x00" * 4
    return raw.ljust(_SOCKADDR_STORAGE, b"\x00")


def md5sig(family: int, address: IPAddress, password: str | None) -> bytes:
    """The struct tcp_md5sig that sets (or, with no password, deletes) the key for one peer."""
    key = password.encode() if password else b""
    if len(key) > TCP_MD5SIG_MAXKEYLEN:
        raise SocketOptionError(f"TCP-MD5 key for {address} longer than {TCP_MD5SIG_MAXKEYLEN} octets")
    return (
        _sockaddr(family, address)
        + _MD5SIG_TAIL.pack(0, 0, len(key), 0)
        + key.ljust(TCP_MD5SIG_MAXKEYLEN, b"\x00")
    )


def set_md5(sock: socket.socket, address: IPAddress, password: str | None) -> None:
    """Install (or delete, when `password` is None/empty) the RFC 2385 key for `address` on `sock`."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(sock.family, address, password))
    except OSError as exc:
        if not password and exc.errno == 2:  # ENOENT: there was no key to delete
            return
        raise SocketOptionError(exc.errno, f"TCP-MD5 for {address}: {exc.strerror}") from None


def set_ttl(sock: socket.socket, ttl: int) -> None:
    """The TTL / Hop Limit of everything this socket sends (eBGP multihop, or 255 for GTSM)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        if not _v6only(sock):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


def set_min_ttl(sock: socket.socket, min_ttl: int) -> None:
    """RFC 5082 §3: the kernel drops segments that arrive with a lower TTL / Hop Limit (0 disables)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT, min_ttl)
        if not _v6only(sock):
            sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, min_ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, min_ttl)


def gtsm_min_ttl(hops: int) -> int:
    """RFC 5082 §3: a peer `hops` away arrives with at least 256 - hops."""
    if not 1 <= hops <= MAX_TTL:
        raise ValueError(f"GTSM hops {hops} outside 1..255")
    return MAX_TTL + 1 - hops


def apply_ttl_policy(sock: socket.socket, gtsm_hops: int | None, multihop_ttl: int | None) -> None:
    """GTSM (send 255, require 256 - hops) or a plain outgoing TTL; neither: the kernel default."""
    if gtsm_hops is not None:
        set_ttl(sock, MAX_TTL)
        set_min_ttl(sock, gtsm_min_ttl(gtsm_hops))
    elif multihop_ttl is not None:
        set_ttl(sock, multihop_ttl)


def set_nodelay(sock: socket.socket) -> None:
    """BGP messages are small and latency matters (KEEPALIVEs, withdraws): no Nagle delay."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _v6only(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))


def peer_address(sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> IPAddress:
    """The peer's address from a getpeername()/accept() tuple, with IPv4-mapped IPv6 unmapped."""
    address = ip_address(sockaddr[0].split("%", 1)[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# TcpExt counters of segments the kernel drops without telling the socket (per network namespace).
KERNEL_DROP_COUNTERS = ("TCPMD5NotFound", "TCPMD5Unexpected", "TCPMD5Failure", "TCPMinTTLDrop")


def kernel_drop_counters(path: str = "/proc/net/netstat") -> dict[str, int]:
    """TCP-MD5 and GTSM drops counted by the kernel: the only trace a mismatched key or TTL leaves.

    Best effort: an empty dict where the file or a counter does not exist.
    """
    try:
        with open(path, encoding="ascii") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return {name: int(table[name]) for name in KERNEL_DROP_COUNTERS if name in table}
    return {}
