"""The per-peer driver: runs one sans-IO Session on asyncio (DESIGN §7.1).

The driver owns the peer's TCP connections (named by small ints it chooses), feeds the Session
(connection made/lost, bytes received, connect failures, timer expiry), executes its actions (Send
via transport.write, Connect, Close) and arms exactly one loop timer per session at
`next_deadline()`. It never blocks: connects run as tasks, writes are buffered by the transport.

Outgoing connects get TCP-MD5 before connect() so the SYN is signed (RFC 2385), the GTSM or
multihop TTL (RFC 5082), an optional source address and port, and TCP_NODELAY. A connect that times
out while TCP-MD5 or GTSM is configured says so in its error: the kernel drops badly signed or
low-TTL segments without a trace, so "timed out" alone would hide the likely cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from bgp.fsm.events import Action, Close, Connect, Event, Send
from bgp.io.sockopts import apply_ttl_policy, peer_address, set_md5, set_nodelay
from bgp.types import IPAddress

log = logging.getLogger(__name__)

CLOSE_LINGER = 2.0  # seconds a closed connection keeps draining the peer's data before a reset


class SessionLike(Protocol):
    """What the driver needs of bgp.fsm.Session (structural, so tests can script one)."""

    def connection_made(self, conn: int, now: float, outgoing: bool) -> None: ...
    def data_received(self, conn: int, data: bytes, now: float) -> None: ...
    def connection_lost(self, conn: int, now: float, error: str | None = None) -> None: ...
    def connection_failed(self, now: float, error: str) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def take_actions(self) -> list[Action]: ...
    def take_events(self) -> list[Event]: ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """How to reach the peer and protect the TCP connection (the Session knows none of this)."""

    peer_address: IPAddress
    peer_port: int = 179
    local_address: IPAddress | None = None
    local_port: int | None = None  # None: ephemeral
    password: str | None = None  # TCP-MD5 key (RFC 2385); never logged
    gtsm_hops: int | None = None  # RFC 5082: send TTL 255, require 256 - hops
    multihop_ttl: int | None = None  # outgoing TTL when GTSM is off (eBGP multihop)
    connect_timeout: float = 5.0

    def __repr__(self) -> str:  # keep the key out of every repr/log line
        return (
            f"TransportConfig(peer={self.peer_address}:{self.peer_port}, local={self.local_address}, "
            f"md5={'yes' if self.password else 'no'}, gtsm={self.gtsm_hops}, ttl={self.multihop_ttl})"
        )

    @property
    def min_ttl(self) -> int:
        """The minimum TTL a listener must require of this peer (0: no GTSM)."""
        return 0 if self.gtsm_hops is None else 256 - self.gtsm_hops


EventSink = Callable[["PeerDriver", list[Event]], None]


class BgpConnection(asyncio.Protocol):
    """One TCP connection of a peer; forwards everything to its driver under its connection id."""

    def __init__(self, driver: PeerDriver, conn: int, outgoing: bool) -> None:
        self.driver = driver
        self.conn = conn
        self.outgoing = outgoing
        self.transport: asyncio.Transport | None = None
        self.local: tuple[IPAddress, int] | None = None
        self.remote: tuple[IPAddress, int] | None = None
        self.closing = False  # the session asked to close it: its loss is not news to the session
        self.lost: asyncio.Future[None] = driver.loop.create_future()
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        if sockname:
            self.local = (peer_address(sockname), int(sockname[1]))
        if peername:
            self.remote = (peer_address(peername), int(peername[1]))
        self.driver._made(self)

    def data_received(self, data: bytes) -> None:
        self.driver._data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self.lost.done():
            self.lost.set_result(None)
        self.driver._lost(self, exc)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close after the buffered writes, without a reset that could destroy the NOTIFICATION.

        A socket closed with unread data sends RST, and a peer that gets RST (or EPIPE) before it
        read our NOTIFICATION never learns why. So: FIN after what was written, keep reading and
        discarding until the peer closes too, and only abort if it has not after CLOSE_LINGER.
        """
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # already disconnected (ENOTCONN): nothing left to flush
                transport.abort()
                return
            self._linger = self.driver.loop.call_later(CLOSE_LINGER, transport.abort)
        else:
            transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class PeerDriver:
    """Runs one Session: its connections, its single timer, its outgoing connects."""

    def __init__(
        self,
        name: str,
        session: SessionLike,
        transport: TransportConfig,
        on_events: EventSink,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.name = name
        self.session = session
        self.transport = transport
        self._on_events = on_events
        self.loop = loop or asyncio.get_running_loop()
        self._conns: dict[int, BgpConnection] = {}
        self._next_conn = 1
        self._connect_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._pumping = False
        self._closed = False
        self.timer_arms = 0  # how often a loop timer was (re)armed, for tests and diagnostics
        self.last_error: str | None = None  # the last transport-level failure, for status
        self.connect_attempts = 0

    # -- clock and pumping -----------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time()

    def call(self, fn: Callable[[float], None]) -> None:
        """Run a Session method that takes `now`, then execute what it produced."""
        fn(self.now())
        self.pump()

    def pump(self) -> None:
        """Drain actions and events until the session is quiet, then re-arm the one timer.

        Event handlers (the speaker) may call into the session again; a nested pump only marks the
        work and the outer loop picks it up, so handlers never recurse into each other.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                actions = self.session.take_actions()
                for action in actions:
                    self._execute(action)
                events = self.session.take_events()
                if events:
                    self._on_events(self, events)
                if not actions and not events:
                    break
        finally:
            self._pumping = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Exactly one loop timer per session, at the session's next deadline."""
        deadline = None if self._closed else self.session.next_deadline()
        if deadline == self._timer_deadline and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._fire, deadline)
            self.timer_arms += 1

    def _fire(self, deadline: float) -> None:
        self._timer = None
        self._timer_deadline = None
        # The loop may run a handle a clock tick early; never tell the session it is before its deadline.
        self.session.handle_timer(max(self.now(), deadline))
        self.pump()

    @property
    def timer_deadline(self) -> float | None:
        return self._timer_deadline if self._timer is not None else None

    # -- actions ---------------------------------------------------------------------------------

    def _execute(self, action: Action) -> None:
        if isinstance(action, Send):
            conn = self._conns.get(action.conn)
            if conn is not None:
                conn.write(action.data)
        elif isinstance(action, Connect):
            self._start_connect()
        elif isinstance(action, Close):
            conn = self._conns.pop(action.conn, None)
            if conn is not None:
                conn.close()

    def _start_connect(self) -> None:
        if self._closed:
            return
        self._cancel_connect()
        self.connect_attempts += 1
        self._connect_task = self.loop.create_task(self._connect(), name=f"bgp-connect-{self.name}")

    def _cancel_connect(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self._connect_task = None

    async def _connect(self) -> None:
        cfg = self.transport
        family = socket.AF_INET if isinstance(cfg.peer_address, IPv4Address) else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if cfg.password:
                set_md5(sock, cfg.peer_address, cfg.password)
            apply_ttl_policy(sock, cfg.gtsm_hops, cfg.multihop_ttl)
            set_nodelay(sock)
            if cfg.local_address is not None or cfg.local_port:
                if cfg.local_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                local = str(cfg.local_address) if cfg.local_address is not None else ""
                sock.bind((local, cfg.local_port or 0))
            await asyncio.wait_for(
                self.loop.sock_connect(sock, (str(cfg.peer_address), cfg.peer_port)), cfg.connect_timeout
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError) as exc:
            sock.close()
            self._connect_failed(self._explain(exc))
            return
        conn = self._new_conn(outgoing=True)
        try:
            await self.loop.create_connection(lambda: conn, sock=sock)
        except OSError as exc:
            sock.close()
            self._conns.pop(conn.conn, None)
            self._connect_failed(self._explain(exc))

    def _explain(self, exc: BaseException) -> str:
        """An error text that names the likely cause when security options are on."""
        cfg = self.transport
        if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
            text = f"connect to {cfg.peer_address}:{cfg.peer_port} timed out after {cfg.connect_timeout:g}s"
            hints = []
            if cfg.password:
                hints.append("TCP-MD5 is configured: the kernel drops segments with a missing or wrong key")
            if cfg.gtsm_hops is not None:
                hints.append(f"GTSM is on: segments arriving with TTL < {cfg.min_ttl} are dropped")
            return text + (" (" + "; ".join(hints) + ")" if hints else "")
        if isinstance(exc, OSError):
            # asyncio replaces strerror with "Connect call failed"; the errno says what happened.
            text = os.strerror(exc.errno) if exc.errno else str(exc)
            return f"connect to {cfg.peer_address}:{cfg.peer_port}: {text}"
        return f"connect to {cfg.peer_address}:{cfg.peer_port}: {exc}"

    def _connect_failed(self, error: str) -> None:
        self._connect_task = None
        self.last_error = error
        log.info("BGP peer %s: %s", self.name, error)
        if not self._closed:
            self.call(lambda now: self.session.connection_failed(now, error))

    # -- connections -----------------------------------------------------------------------------

    def _new_conn(self, outgoing: bool) -> BgpConnection:
        conn = BgpConnection(self, self._next_conn, outgoing)
        self._next_conn += 1
        self._conns[conn.conn] = conn
        return conn

    def accepted(self, sock: socket.socket) -> None:
        """A connection from this peer's address arrived at the listener (AcceptHandler)."""
        if self._closed:
            sock.close()
            return
        cfg = self.transport
        try:
            # The listener's own floor is only the minimum over its peers; this peer's GTSM applies here.
            apply_ttl_policy(sock, cfg.gtsm_hops, cfg.multihop_ttl)
            set_nodelay(sock)
        except OSError as exc:
            log.warning("BGP peer %s: socket options on accepted connection: %s", self.name, exc.strerror)
            sock.close()
            return
        conn = self._new_conn(outgoing=False)
        task = self.loop.create_task(self._adopt(conn, sock), name=f"bgp-accept-{self.name}")
        task.add_done_callback(_log_task_error)

    async def _adopt(self, conn: BgpConnection, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: conn, sock=sock)
        except OSError as exc:
            self._conns.pop(conn.conn, None)
            sock.close()
            log.warning("BGP peer %s: accepted connection failed: %s", self.name, exc.strerror)

    def _made(self, conn: BgpConnection) -> None:
        if self._closed or conn.conn not in self._conns:
            conn.abort()
            return
        self.call(lambda now: self.session.connection_made(conn.conn, now, conn.outgoing))

    def _data(self, conn: BgpConnection, data: bytes) -> None:
        if conn.closing or conn.conn not in self._conns:
            return
        self.call(lambda now: self.session.data_received(conn.conn, data, now))

    def _lost(self, conn: BgpConnection, exc: Exception | None) -> None:
        if self._conns.get(conn.conn) is not conn:
            return  # closed on the session's request; the session already forgot it
        del self._conns[conn.conn]
        error = None
        if exc is not None:
            error = str(exc.strerror) if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.last_error = error
        if conn.closing or self._closed:
            return
        reason = error or "connection closed by peer"
        self.call(lambda now: self.session.connection_lost(conn.conn, now, reason))

    def connection(self, conn: int) -> BgpConnection | None:
        return self._conns.get(conn)

    def connections(self) -> Sequence[BgpConnection]:
        return tuple(self._conns.values())

    # -- shutdown --------------------------------------------------------------------------------

    async def close(self, grace: float = 1.0) -> None:
        """Stop the timer and connects; close connections after their buffered writes (NOTIFICATION)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = None
        task = self._connect_task
        self._cancel_connect()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()
        pending = [c.lost for c in conns if c.transport is not None and not c.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for conn in conns:
            if not conn.lost.done():
                conn.abort()

    @property
    def closed(self) -> bool:
        return self._closed


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("BGP driver task %s failed", task.get_name(), exc_info=task.exception())
