"""The RFC 4271 §8 BGP session state machine, sans-IO.

One Session per configured peer. The io layer feeds it connection events, bytes and timer ticks
with an explicit `now`, then drains actions (bytes to write, connections to open or close) and
events (state changes with reasons, received UPDATEs, session up/down), and arms one timer at
`next_deadline()`. Nothing here reads a clock or draws randomness on its own (DESIGN §7.1).

Model. The RFC runs one FSM per TCP connection and resolves collisions between them (§6.8). Here a
Session holds at most two connections (one we initiated, one the peer initiated); each connection
carries its own connected state (OpenSent, OpenConfirm, Established), its framer and its hold and
keepalive timers. Before any connection exists the session itself is Idle, Connect or Active. The
state shown to the owner is the most advanced of these; every change of it is a StateChanged event
with a TransitionReason. Messages are dispatched by a table of what each connected state expects;
anything else is an FSM error (RFC 6608).

Timers: ConnectRetry (§8.1.3, jittered 0.75-1.0 per §10), the hold timer (the large `open_hold_time`
while waiting for the OPEN, then the negotiated hold time; 0 disables it and keepalives), the
keepalive timer (jittered), and the IdleHold timer of DampPeerOscillations (§8.1.1): after an
error-driven drop the session waits, doubling the wait on each further drop up to a maximum, and
starts over once a session stayed Established long enough.

Held Idle: a policy teardown may switch AllowAutomaticStart off for the drop (§8.1.1; max-prefix,
RFC 4486 §4): the session stays Idle, refusing connections, until the owner starts it again
(ManualStart) or, when a restart time was given, until then (one AutomaticStart, §8.1.2 Event 3).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from bgp.codec.dispatch import decode_message
from bgp.codec.errors import BgpError, CeaseSubcode, FsmSubcode, NotificationCode
from bgp.codec.messages import (
    HEADER_SIZE,
    MAX_MESSAGE,
    PRE_OPEN_CONTEXT,
    Framer,
    Keepalive,
    MessageType,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshSubtype,
    encode_keepalive,
    encode_notification,
    encode_open,
    encode_route_refresh,
    notification_from_error,
)
from bgp.codec.update import Update
from bgp.fsm.config import SessionConfig
from bgp.fsm.events import (
    Action,
    Close,
    Connect,
    DownReason,
    Established,
    Event,
    RouteRefreshRequested,
    Send,
    SessionDown,
    State,
    StateChanged,
    TransitionReason,
    UpdateReceived,
)
from bgp.fsm.negotiation import Negotiated, build_open, check_open, negotiate
from bgp.types import Family, PathAttributes

_T = MessageType

# What each connected state accepts; anything else gets NOTIFICATION 5 with the RFC 6608 subcode.
_EXPECTED: dict[State, tuple[frozenset[int], FsmSubcode]] = {
    State.OPEN_SENT: (frozenset({_T.OPEN, _T.NOTIFICATION}), FsmSubcode.UNEXPECTED_IN_OPENSENT),
    State.OPEN_CONFIRM: (frozenset({_T.KEEPALIVE, _T.NOTIFICATION}), FsmSubcode.UNEXPECTED_IN_OPENCONFIRM),
    State.ESTABLISHED: (
        frozenset({_T.UPDATE, _T.KEEPALIVE, _T.NOTIFICATION, _T.ROUTE_REFRESH}),
        FsmSubcode.UNEXPECTED_IN_ESTABLISHED,
    ),
}

# The NOTIFICATION code we send -> why the session went down.
_ERROR_REASON = {
    NotificationCode.MESSAGE_HEADER: TransitionReason.HEADER_ERROR,
    NotificationCode.OPEN_MESSAGE: TransitionReason.OPEN_ERROR,
    NotificationCode.UPDATE_MESSAGE: TransitionReason.UPDATE_ERROR,
    NotificationCode.ROUTE_REFRESH_MESSAGE: TransitionReason.ROUTE_REFRESH_ERROR,
}

# force_down: Cease subcode, transition reason, and whether the peer's routes are flushed regardless
# of graceful restart. BFD down means the forwarding path failed (RFC 5882 §4.3): stale routes would
# blackhole traffic, which is exactly what BFD is deployed to prevent.
_FORCED: dict[DownReason, tuple[CeaseSubcode, TransitionReason, bool]] = {
    DownReason.BFD_DOWN: (CeaseSubcode.BFD_DOWN, TransitionReason.BFD_DOWN, True),
    DownReason.ADMIN_RESET: (CeaseSubcode.ADMINISTRATIVE_RESET, TransitionReason.ADMIN_RESET, True),
    DownReason.MAX_PREFIXES: (CeaseSubcode.MAX_PREFIXES_REACHED, TransitionReason.MAX_PREFIXES, True),
    DownReason.CONFIGURATION_CHANGE: (
        CeaseSubcode.OTHER_CONFIGURATION_CHANGE,
        TransitionReason.CONFIGURATION_CHANGE,
        False,
    ),
    DownReason.OUT_OF_RESOURCES: (CeaseSubcode.OUT_OF_RESOURCES, TransitionReason.OUT_OF_RESOURCES, False),
}

# RFC 8538 §5: Cease subcodes sent as Hard Reset when the N bit was negotiated (Administrative Reset
# is left to the operator there; a reset we are asked for is meant to clear state, so it is hard too).
_HARD_CEASE = frozenset(
    {
        CeaseSubcode.MAX_PREFIXES_REACHED,
        CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
        CeaseSubcode.PEER_DECONFIGURED,
        CeaseSubcode.ADMINISTRATIVE_RESET,
    }
)

_SHUTDOWN_SUBCODES = frozenset({CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, CeaseSubcode.ADMINISTRATIVE_RESET})


def shutdown_communication(message: str) -> bytes:
    """RFC 9003 §2 data: a length octet and up to 255 octets of UTF-8, cut on a character boundary."""
    raw = message.encode("utf-8")[:255].decode("utf-8", errors="ignore").encode("utf-8")
    return bytes([len(raw)]) + raw if raw else b""


def is_hard_reset(notification: Notification) -> bool:
    return notification.code == NotificationCode.CEASE and notification.subcode == CeaseSubcode.HARD_RESET


def _collision_cease() -> Notification:
    return Notification(NotificationCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)


class _Connection:
    """One TCP connection of the session, from the moment it is up (so at least OpenSent)."""

    __slots__ = (
        "conn_id",
        "framer",
        "hold_deadline",
        "keepalive_deadline",
        "negotiated",
        "outgoing",
        "state",
    )

    def __init__(self, conn_id: int, outgoing: bool, hold_deadline: float) -> None:
        self.conn_id = conn_id
        self.outgoing = outgoing
        self.state = State.OPEN_SENT
        self.framer = Framer()
        self.hold_deadline: float | None = hold_deadline
        self.keepalive_deadline: float | None = None
        self.negotiated: Negotiated | None = None


class Session:
    """One configured peer: the RFC 4271 §8 FSM over at most two connections (collisions, §6.8)."""

    def __init__(self, config: SessionConfig, rng: Callable[[], float]) -> None:
        """`rng` returns uniform floats in [0, 1); it drives the RFC 4271 §10 timer jitter."""
        self.config = config
        self._rng = rng
        self._open = encode_open(build_open(config))
        self._running = False  # between start() and stop(): automatic restarts allowed
        self._base = State.IDLE  # Idle, Connect or Active: the state when no connection is up
        self._state = State.IDLE  # last state published in a StateChanged
        self._conns: dict[int, _Connection] = {}
        self._connect_retry_at: float | None = None
        self._idle_hold_at: float | None = None
        self._idle_hold = config.idle_hold_time  # wait imposed by the next error-driven drop
        self._held: DownReason | None = None  # AllowAutomaticStart off after this forced drop
        self._hold_restart_at: float | None = None
        self._established_at: float | None = None
        self._cache: dict[bytes, PathAttributes] = {}  # interned attribute sets (DESIGN §8)
        self._actions: list[Action] = []
        self._events: list[Event] = []
        self.negotiated: Negotiated | None = None

    # -- Introspection ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def established_at(self) -> float | None:
        return self._established_at

    @property
    def idle_hold_time(self) -> float:
        """How long the next error-driven drop keeps the session Idle (DampPeerOscillations)."""
        return self._idle_hold

    @property
    def held(self) -> DownReason | None:
        """Why the session is held Idle with automatic start off (see `force_down`); None if not."""
        return self._held

    @property
    def hold_until(self) -> float | None:
        """When a held session starts again by itself; None: only `start` releases it."""
        return self._idle_hold_at if self._held is not None else None

    @property
    def connections(self) -> tuple[int, ...]:
        return tuple(self._conns)

    # -- Owner API ------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """ManualStart (RFC 4271 §8.1.2 Event 1, or Event 4 when passive): connect now, or wait.

        Also the way out of a hold (`force_down` with automatic start off).
        """
        if self._running and self._held is None:
            return
        self._running = True
        self._held = None
        self._idle_hold = self.config.idle_hold_time
        self._begin(now, TransitionReason.MANUAL_START)

    def stop(
        self, now: float, subcode: CeaseSubcode = CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, message: str = ""
    ) -> None:
        """ManualStop: Cease every connection (RFC 4486, shutdown communication RFC 9003), stay Idle."""
        self._running = False
        self._held = None
        data = shutdown_communication(message) if subcode in _SHUTDOWN_SUBCODES else b""
        for conn in list(self._conns.values()):
            self._drop(
                conn, now, TransitionReason.MANUAL_STOP, sent=self._cease(conn, subcode, data), flush=True
            )
        self._enter_idle(now)
        self._publish(TransitionReason.MANUAL_STOP)

    def force_down(
        self,
        now: float,
        reason: DownReason,
        message: str = "",
        *,
        automatic_start: bool = True,
        restart_at: float | None = None,
    ) -> None:
        """Liveness or policy teardown (BFD down, RFC 5882 §4.2; max-prefix; admin reset).

        Sends the matching Cease on every open connection, closes them, and goes Idle; the session
        reconnects after the IdleHold time, which backs off like any error-driven drop. With
        `automatic_start` False (RFC 4271 §8.1.1 AllowAutomaticStart FALSE for this drop) it is held
        Idle instead, refusing the peer's connections: until `start`, or until `restart_at` when
        given (then one start, as after an IdleHold).
        """
        if not self._running or self._held is not None:
            return
        subcode, treason, flush = _FORCED[reason]
        data = shutdown_communication(message) if subcode in _SHUTDOWN_SUBCODES else b""
        if not automatic_start:
            self._held, self._hold_restart_at = reason, restart_at
        if not self._conns:
            if self._base is not State.IDLE or self._held is not None:
                self._enter_idle(now)
                self._publish(treason)
            return
        for conn in list(self._conns.values()):
            self._drop(conn, now, treason, sent=self._cease(conn, subcode, data), flush=flush)

    def send_messages(self, messages: Sequence[bytes], now: float | None = None) -> bool:
        """Queue encoded messages (UPDATEs built by the speaker) on the Established connection.

        Returns False, sending nothing, when the session is not Established: the speaker resends
        its table when the next session comes up. With `now`, sending restarts the keepalive timer
        (RFC 4271 §8.2.2: each KEEPALIVE or UPDATE sent restarts the KeepaliveTimer).
        """
        conn = self._established()
        if conn is None:
            return False
        for message in messages:
            self._send(conn, message)
        if now is not None and messages and conn.keepalive_deadline is not None:
            conn.keepalive_deadline = now + self._keepalive_interval(conn)
        return True

    def request_route_refresh(self, family: Family) -> bool:
        """Ask the peer to resend its routes of `family` (RFC 2918); False when it cannot be asked."""
        conn = self._established()
        if conn is None or conn.negotiated is None:
            return False
        if not conn.negotiated.route_refresh or family not in conn.negotiated.families:
            return False
        self._send(conn, encode_route_refresh(RouteRefresh(family, RouteRefreshSubtype.NORMAL)))
        return True

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- io layer API -------------------------------------------------------------------------------

    def connection_made(self, conn: int, now: float, outgoing: bool) -> None:
        """A TCP connection is up (RFC 4271 Event 16 for ours, Event 17 for the peer's): send our OPEN."""
        if conn in self._conns:
            return
        if not self._running or self._base is State.IDLE:
            # Idle refuses connections (RFC 4271 §8.2.2); say why instead of a bare reset.
            self._refuse(conn, CeaseSubcode.CONNECTION_REJECTED)
            return
        established = self._established()
        if established is not None and (outgoing or not self._peer_may_restart(established)):
            # RFC 4271 §6.8: a collision with an Established connection closes the new one. A peer
            # that negotiated graceful restart may be coming back from a restart we did not notice
            # yet (RFC 4724 §4.2), so its connection is kept until its OPEN tells.
            self._refuse(conn, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)
            return
        new = _Connection(conn, outgoing, now + self.config.open_hold_time)
        self._conns[conn] = new
        self._connect_retry_at = None
        self._send(new, self._open)
        for old in list(self._conns.values()):
            if old is not new and old.outgoing == outgoing and old.state is not State.ESTABLISHED:
                # A newer connection in the same direction means the older one was abandoned (the
                # peer restarted, or our retry superseded it); keeping it would only block the new
                # one until the old hold timer expires.
                self._drop(old, now, TransitionReason.COLLISION_RESOLVED, sent=_collision_cease())
        reason = TransitionReason.TCP_CR_ACKED if outgoing else TransitionReason.TCP_CONNECTION_CONFIRMED
        self._publish(reason)

    def data_received(self, conn: int, data: bytes, now: float) -> None:
        """Bytes from a connection: frame, decode and act on every complete message."""
        connection = self._conns.get(conn)
        if connection is None:
            return
        connection.framer.feed(data)
        while self._conns.get(conn) is connection:
            try:
                item = connection.framer.next_message()
            except BgpError as error:
                self._protocol_error(connection, now, error)
                return
            if item is None:
                return
            self._on_message(connection, item[0], item[1], now)

    def connection_lost(self, conn: int, now: float, error: str | None = None) -> None:
        """The peer closed or the connection broke (RFC 4271 Event 18)."""
        connection = self._conns.get(conn)
        if connection is None:
            return  # one we closed ourselves
        # RFC 4271 §8.2.2: in OpenSent a TCP failure goes back to Active (keep listening, retry
        # later); in OpenConfirm and Established it goes to Idle.
        self._drop(
            connection,
            now,
            TransitionReason.TCP_CONNECTION_FAILS,
            close=False,
            to_active=connection.state is State.OPEN_SENT,
            detail=error or "connection closed by peer",
        )

    def connection_failed(self, now: float, error: str) -> None:
        """Our connect attempt failed: wait in Active (listening) until ConnectRetry fires again."""
        if not self._running or self._conns or self._base is not State.CONNECT:
            return
        self._base = State.ACTIVE
        self._connect_retry_at = now + self._jitter(self.config.connect_retry_time)
        self._publish(TransitionReason.TCP_CONNECTION_FAILS, detail=error)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now` (calling early or twice is harmless)."""
        for conn in list(self._conns.values()):
            if self._conns.get(conn.conn_id) is not conn:
                continue
            if conn.hold_deadline is not None and now >= conn.hold_deadline:
                hold_expired = Notification(NotificationCode.HOLD_TIMER_EXPIRED, 0)
                self._drop(conn, now, TransitionReason.HOLD_TIMER_EXPIRED, sent=hold_expired)
            elif conn.keepalive_deadline is not None and now >= conn.keepalive_deadline:
                self._send(conn, encode_keepalive())
                conn.keepalive_deadline = now + self._keepalive_interval(conn)
        if self._connect_retry_at is not None and now >= self._connect_retry_at:
            self._connect_retry_at = None
            if self._running and not self._conns and not self.config.passive and self._base is not State.IDLE:
                # RFC 4271 §8.2.2 Connect/Active, ConnectRetryTimer_Expires: try (again), keep listening.
                self._base = State.CONNECT
                self._connect(now)
                self._publish(TransitionReason.CONNECT_RETRY_EXPIRED)
        if self._idle_hold_at is not None and now >= self._idle_hold_at:
            self._idle_hold_at = None
            if self._running and not self._conns and self._base is State.IDLE:
                held, self._held = self._held, None
                # A held session's restart time is an AutomaticStart (RFC 4271 §8.1.2 Event 3).
                why = TransitionReason.AUTOMATIC_START if held else TransitionReason.IDLE_HOLD_TIMER_EXPIRED
                self._begin(now, why)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._connect_retry_at, self._idle_hold_at) if d is not None]
        for conn in self._conns.values():
            deadlines += [d for d in (conn.hold_deadline, conn.keepalive_deadline) if d is not None]
        return min(deadlines, default=None)

    # -- Messages ---------------------------------------------------------------------------------

    def _on_message(self, conn: _Connection, msg_type: int, body: bytes, now: float) -> None:
        expected, fsm_subcode = _EXPECTED[conn.state]
        if msg_type not in expected:
            # RFC 6608 §4: the data is the type of the unexpected message.
            name = MessageType(msg_type).name
            error = BgpError(
                NotificationCode.FSM, fsm_subcode, f"{name} in {conn.state.value}", bytes([msg_type])
            )
            self._protocol_error(conn, now, error)
            return
        ctx = conn.negotiated.codec if conn.negotiated is not None else PRE_OPEN_CONTEXT
        try:
            message = decode_message(msg_type, body, ctx, self._cache)
        except BgpError as error:
            # Errors raised by the UPDATE decoder are session-reset ones; AFI/SAFI-disable (RFC 7606
            # §2) is handled as a reset too, since we keep no per-family session state to disable.
            self._protocol_error(conn, now, error)
            return
        if isinstance(message, Notification):
            self._on_notification(conn, message, now)
        elif isinstance(message, Open):
            self._on_open(conn, message, body, now)
        elif isinstance(message, Keepalive):
            self._on_keepalive(conn, now)
        elif isinstance(message, RouteRefresh):
            self._on_route_refresh(conn, message)
        elif isinstance(message, Update):
            self._restart_hold(conn, now)
            self._events.append(UpdateReceived(message))
        # IgnoredRouteRefresh: unknown AFI/SAFI (RFC 2918 §4) or reserved subtype (RFC 7313 §5), ignored.

    def _on_open(self, conn: _Connection, message: Open, body: bytes, now: float) -> None:
        (my_as_field,) = struct.unpack_from("!H", body, 1)
        try:
            check_open(self.config, message, my_as_field)
        except BgpError as error:
            self._protocol_error(conn, now, error)
            return
        # RFC 4271 §6.8 collision detection: the OPEN tells us the peer's identifier, which is the
        # same for every connection to it, so connections still in OpenSent are compared as well.
        for other in list(self._conns.values()):
            if other is conn:
                continue
            if other.state is State.ESTABLISHED:
                # Only reachable for a graceful-restart peer (see connection_made): a new OPEN means
                # it restarted; the old session ends as a TCP loss would (RFC 4724 §4.2).
                self._drop(
                    other, now, TransitionReason.PEER_RESTARTED, detail="new OPEN on a second connection"
                )
            elif self._keep_outgoing(message) == conn.outgoing:
                self._drop(other, now, TransitionReason.COLLISION_RESOLVED, sent=_collision_cease())
            else:
                self._drop(conn, now, TransitionReason.COLLISION_RESOLVED, sent=_collision_cease())
                return
        negotiated = negotiate(self.config, message)
        conn.negotiated = negotiated
        conn.framer.max_message = negotiated.codec.max_message
        conn.state = State.OPEN_CONFIRM
        self._send(conn, encode_keepalive())
        if negotiated.hold_time:
            conn.hold_deadline = now + negotiated.hold_time
            conn.keepalive_deadline = now + self._keepalive_interval(conn)
        else:
            # RFC 4271 §4.4: a hold time of zero means no periodic KEEPALIVEs and no hold timer.
            conn.hold_deadline = conn.keepalive_deadline = None
        self._publish(TransitionReason.OPEN_RECEIVED)

    def _on_keepalive(self, conn: _Connection, now: float) -> None:
        self._restart_hold(conn, now)
        if conn.state is not State.OPEN_CONFIRM:
            return
        conn.state = State.ESTABLISHED
        for other in list(self._conns.values()):
            if other is not conn:
                # A connection that appeared after this one's OPEN now collides with an Established one.
                self._drop(other, now, TransitionReason.COLLISION_RESOLVED, sent=_collision_cease())
        assert conn.negotiated is not None  # set when the OPEN was accepted
        self.negotiated = conn.negotiated
        self._established_at = now
        self._cache = {}
        self._publish(TransitionReason.KEEPALIVE_RECEIVED)
        self._events.append(Established(conn.negotiated))

    def _on_notification(self, conn: _Connection, message: Notification, now: float) -> None:
        # A peer resolving a collision closes one connection with Cease/Collision; if we have not
        # seen its other connection yet, wait for it in Active instead of refusing it from Idle.
        collision = (
            message.code == NotificationCode.CEASE
            and message.subcode == CeaseSubcode.CONNECTION_COLLISION_RESOLUTION
            and conn.state is not State.ESTABLISHED
        )
        self._drop(
            conn,
            now,
            TransitionReason.NOTIFICATION_RECEIVED,
            received=message,
            to_active=collision,
            detail=message.shutdown_message() or "",
        )

    def _on_route_refresh(self, conn: _Connection, message: RouteRefresh) -> None:
        negotiated = conn.negotiated
        assert negotiated is not None  # only dispatched in Established
        if message.family not in negotiated.families:
            return  # RFC 2918 §4: ignored
        subtype = RouteRefreshSubtype(message.subtype)
        if subtype is not RouteRefreshSubtype.NORMAL and not negotiated.enhanced_route_refresh:
            return  # BoRR/EoRR only mean something with enhanced route refresh (RFC 7313 §4)
        self._events.append(RouteRefreshRequested(message.family, subtype))

    # -- Transitions ------------------------------------------------------------------------------

    def _begin(self, now: float, reason: TransitionReason) -> None:
        """Leave Idle: Connect (and initiate) or, when passive, Active (listen only)."""
        self._idle_hold_at = None
        if self.config.passive:
            self._base = State.ACTIVE
        else:
            self._base = State.CONNECT
            self._connect(now)
        self._publish(reason)

    def _connect(self, now: float) -> None:
        self._actions.append(Connect())
        self._connect_retry_at = now + self._jitter(self.config.connect_retry_time)

    def _enter_idle(self, now: float) -> None:
        """Go Idle; while running, come back after the IdleHold time, which doubles each time.

        Held (automatic start off): no IdleHold; only the hold's restart time, if any.
        """
        self._base = State.IDLE
        self._connect_retry_at = None
        self._idle_hold_at = None
        if self._held is not None:
            self._idle_hold_at = self._hold_restart_at
        elif self._running:
            wait = self._idle_hold
            self._idle_hold_at = now + wait
            self._idle_hold = min(wait * 2, self.config.max_idle_hold_time)

    def _protocol_error(self, conn: _Connection, now: float, error: BgpError) -> None:
        reason = _ERROR_REASON.get(NotificationCode(error.code), TransitionReason.FSM_ERROR)
        self._drop(conn, now, reason, sent=notification_from_error(error), detail=error.message)

    def _drop(
        self,
        conn: _Connection,
        now: float,
        reason: TransitionReason,
        *,
        sent: Notification | None = None,
        received: Notification | None = None,
        close: bool = True,
        to_active: bool = False,
        flush: bool = False,
        detail: str = "",
    ) -> None:
        """End one connection; when it was the last, fall back to Active or Idle."""
        if sent is not None:
            self._send_notification(conn, sent)
        if close:
            self._actions.append(Close(conn.conn_id))
        del self._conns[conn.conn_id]
        was_established = conn.state is State.ESTABLISHED
        if was_established:
            if (
                self._established_at is not None
                and now - self._established_at >= self.config.idle_hold_reset_time
            ):
                self._idle_hold = self.config.idle_hold_time  # it was stable: start the backoff over
            self._established_at = None
            self.negotiated = None
            self._cache = {}
        if not self._conns:
            if to_active and self._running:
                self._base = State.ACTIVE
                self._idle_hold_at = None
                if not self.config.passive:
                    self._connect_retry_at = now + self._jitter(self.config.connect_retry_time)
            else:
                self._enter_idle(now)
        self._publish(reason, sent if sent is not None else received, detail)
        if was_established and conn.negotiated is not None:
            graceful = not flush and self._keeps_routes(conn.negotiated, reason, sent, received)
            gr = conn.negotiated.peer_graceful_restart
            self._events.append(
                SessionDown(
                    reason=reason,
                    graceful_restart=graceful,
                    notification_sent=sent,
                    notification_received=received,
                    restart_time=gr.restart_time if graceful and gr is not None else 0,
                    stale_families=conn.negotiated.stale_families() if graceful else (),
                    detail=detail,
                )
            )

    def _keeps_routes(
        self,
        negotiated: Negotiated,
        reason: TransitionReason,
        sent: Notification | None,
        received: Notification | None,
    ) -> bool:
        """Whether the RIB keeps the peer's routes as stale (RFC 4724 §4.2, RFC 8538 §4)."""
        gr = negotiated.peer_graceful_restart
        if gr is None or gr.restart_time == 0 or not negotiated.stale_families():
            return False
        if received is not None:
            return negotiated.graceful_notification and not is_hard_reset(received)
        if sent is not None:
            # Hold expiry included: we send a NOTIFICATION, and without the N bit (RFC 8538 §4) that ends
            # the session the ordinary way (RFC 4724 §4.2). Keeping a silent peer's routes stale for its
            # restart time would blackhole traffic the standby could carry.
            return negotiated.graceful_notification and not is_hard_reset(sent)
        return True  # TCP loss, or the peer reopened: the restart GR is meant for

    def _publish(
        self, reason: TransitionReason, notification: Notification | None = None, detail: str = ""
    ) -> None:
        new = max((c.state for c in self._conns.values()), key=lambda s: s.rank, default=self._base)
        if new is not self._state:
            self._events.append(StateChanged(self._state, new, reason, notification, detail))
            self._state = new

    # -- Helpers ----------------------------------------------------------------------------------

    def _established(self) -> _Connection | None:
        return next((c for c in self._conns.values() if c.state is State.ESTABLISHED), None)

    def _peer_may_restart(self, conn: _Connection) -> bool:
        return conn.negotiated is not None and bool(conn.negotiated.stale_families())

    def _keep_outgoing(self, peer_open: Open) -> bool:
        """RFC 4271 §6.8: the connection initiated by the higher BGP identifier survives.

        Equal identifiers (allowed between ASes, RFC 6286 §2.3): the higher AS number wins.
        """
        local, remote = int(self.config.router_id), int(peer_open.router_id)
        if local != remote:
            return local > remote
        return self.config.local_asn > peer_open.asn

    def _cease(self, conn: _Connection, subcode: CeaseSubcode, data: bytes) -> Notification:
        """A Cease, wrapped in a Hard Reset (RFC 8538 §3, §5) when the N bit makes that necessary."""
        if conn.negotiated is not None and conn.negotiated.graceful_notification and subcode in _HARD_CEASE:
            return Notification(
                NotificationCode.CEASE,
                CeaseSubcode.HARD_RESET,
                bytes([NotificationCode.CEASE, subcode]) + data,
            )
        return Notification(NotificationCode.CEASE, subcode, data)

    def _refuse(self, conn: int, subcode: CeaseSubcode) -> None:
        self._actions.append(Send(conn, encode_notification(Notification(NotificationCode.CEASE, subcode))))
        self._actions.append(Close(conn))

    def _send(self, conn: _Connection, data: bytes) -> None:
        self._actions.append(Send(conn.conn_id, data))

    def _send_notification(self, conn: _Connection, notification: Notification) -> None:
        # The data (e.g. a whole malformed attribute) must not push the NOTIFICATION past the
        # largest message the peer accepts.
        limit = (
            (conn.negotiated.codec.max_message if conn.negotiated is not None else MAX_MESSAGE)
            - HEADER_SIZE
            - 2
        )
        if len(notification.data) > limit:
            notification = Notification(notification.code, notification.subcode, notification.data[:limit])
        self._send(conn, encode_notification(notification))

    def _restart_hold(self, conn: _Connection, now: float) -> None:
        if conn.hold_deadline is not None and conn.negotiated is not None:
            conn.hold_deadline = now + conn.negotiated.hold_time

    def _keepalive_interval(self, conn: _Connection) -> float:
        assert conn.negotiated is not None
        return self._jitter(conn.negotiated.keepalive_time)

    def _jitter(self, seconds: float) -> float:
        """RFC 4271 §10: multiply by a random factor uniformly distributed in [0.75, 1.0]."""
        return seconds * (0.75 + 0.25 * self._rng())
