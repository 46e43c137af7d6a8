"""The BGP listener: our own listening sockets, refusing unconfigured peers before any OPEN.

One socket per address (IPv6 sockets are IPV6_V6ONLY so IPv4 peers always arrive on an AF_INET socket
and TCP-MD5 keys live on the socket of their own family). The sockets are made here, not by asyncio,
so security options are set before listen(): the TCP-MD5 key of every configured peer (RFC 2385; the
kernel refuses unsigned or wrongly signed SYNs) and GTSM (RFC 5082): SYN-ACKs leave with TTL 255, and
when every configured peer of a family uses GTSM the socket's minimum TTL drops spoofed SYNs in the
kernel. Mixed configurations get the minimum TTL on each accepted socket instead (AcceptHandler).

Accepted connections are matched to a configured peer by remote address; unknown addresses are closed
at once, counted and logged (DESIGN §9), and the owner is told through `on_refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Protocol

from bgp.io.sockopts import MAX_TTL, peer_address, set_md5, set_min_ttl, set_ttl
from bgp.types import IPAddress

log = logging.getLogger(__name__)

_ACCEPT_ERROR_PAUSE = 0.1  # seconds after EMFILE/ENFILE/ENOBUFS so a full fd table does not spin the loop


class AcceptHandler(Protocol):
    """The peer's driver: takes ownership of an accepted, non-blocking socket."""

    def accepted(self, sock: socket.socket) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerSecurity:
    """What the listener must know about a configured peer before its SYN arrives."""

    password: str | None = None
    min_ttl: int = 0  # RFC 5082 minimum TTL of this peer's segments (0: no GTSM)


Lookup = Callable[[IPAddress], AcceptHandler | None]
RefusedCallback = Callable[[IPAddress, int], None]


class Listener:
    """Listening sockets on (addresses, port), dispatching accepted connections by remote address."""

    def __init__(
        self,
        lookup: Lookup,
        addresses: Sequence[str | IPAddress] = ("0.0.0.0", "::"),
        port: int = 179,
        *,
        on_refused: RefusedCallback | None = None,
        backlog: int = 128,
    ) -> None:
        self._lookup = lookup
        self._addresses = [ip_address(a) if isinstance(a, str) else a for a in addresses]
        self._port = port
        self._on_refused = on_refused
        self._backlog = backlog
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._peers: dict[IPAddress, PeerSecurity] = {}
        self.refused = 0
        self.refused_by_address: Counter[IPAddress] = Counter()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen on every address; raises OSError if one cannot be bound."""
        loop = asyncio.get_running_loop()
        try:
            for address in self._addresses:
                sock = self._make_socket(address)
                self._sockets.append(sock)
                for peer, security in self._peers.items():
                    self._apply_peer(sock, peer, security)
                self._apply_min_ttl(sock)
                sock.listen(self._backlog)
        except BaseException:
            self._close_sockets()
            raise
        for sock in self._sockets:
            name = f"bgp-accept-{sock.getsockname()}"
            self._tasks.append(loop.create_task(self._accept_loop(sock), name=name))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def bound(self) -> list[tuple[IPAddress, int]]:
        """The (address, port) of every listening socket (the port is useful when 0 was asked for)."""
        return [(ip_address(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._sockets]

    def _make_socket(self, address: IPAddress) -> socket.socket:
        family = socket.AF_INET if isinstance(address, IPv4Address) else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # SYN-ACKs leave with TTL 255 so a GTSM peer accepts them (RFC 5082 §3); harmless otherwise.
            set_ttl(sock, MAX_TTL)
            sock.setblocking(False)
            sock.bind((str(address), self._port))
        except BaseException:
            sock.close()
            raise
        return sock

    # -- per-peer security -----------------------------------------------------------------------

    def configure_peer(self, address: IPAddress, security: PeerSecurity) -> None:
        """Install (or change) a peer's TCP-MD5 key and GTSM minimum on the listening sockets."""
        old = self._peers.get(address)
        self._peers[address] = security
        for sock in self._sockets:
            if old is not None and old.password and not security.password:
                self._delete_key(sock, address)
            self._apply_peer(sock, address, security)
            self._apply_min_ttl(sock)

    def remove_peer(self, address: IPAddress) -> None:
        old = self._peers.pop(address, None)
        if old is None:
            return
        for sock in self._sockets:
            if old.password:
                self._delete_key(sock, address)
            self._apply_min_ttl(sock)

    @staticmethod
    def _matches(sock: socket.socket, address: IPAddress) -> bool:
        return (sock.family == socket.AF_INET) == isinstance(address, IPv4Address)

    def _apply_peer(self, sock: socket.socket, address: IPAddress, security: PeerSecurity) -> None:
        if security.password and self._matches(sock, address):
            set_md5(sock, address, security.password)

    def _delete_key(self, sock: socket.socket, address: IPAddress) -> None:
        if self._matches(sock, address):
            set_md5(sock, address, None)

    def _apply_min_ttl(self, sock: socket.socket) -> None:
        """The socket-wide GTSM floor: only when every configured peer of this family asks for one."""
        floors = [s.min_ttl for a, s in self._peers.items() if self._matches(sock, a)]
        set_min_ttl(sock, min(floors) if floors else 0)

    # -- accepting -------------------------------------------------------------------------------

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, sockaddr = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("BGP listener %s: accept failed: %s", listening.getsockname(), exc.strerror)
                    await asyncio.sleep(_ACCEPT_ERROR_PAUSE)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            self._dispatch(sock, sockaddr)

    def _dispatch(self, sock: socket.socket, sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        remote = peer_address(sockaddr)
        handler = self._lookup(remote)
        if handler is None:
            # DESIGN §9: unknown peers are refused before OPEN; no byte is read or written.
            sock.close()
            self.refused += 1
            self.refused_by_address[remote] += 1
            log.warning("BGP connection from unconfigured address %s port %d refused", remote, sockaddr[1])
            if self._on_refused is not None:
                self._on_refused(remote, int(sockaddr[1]))
            return
        sock.setblocking(False)
        try:
            handler.accepted(sock)
        except Exception:
            log.exception("BGP peer %s: handing over an accepted connection failed", remote)
            sock.close()
