"""Scripted two-sided sessions on a virtual clock.

`Harness` owns a Session and plays both the io layer and the remote speaker: it feeds connection
events and bytes the peer "sends" (encoded with the codec), executes the session's actions, and
decodes what the session wrote on each connection so tests assert on messages, not bytes.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, TypeVar

from bgp.codec.capabilities import (
    AddPath,
    AddPathMode,
    Capability,
    EnhancedRouteRefresh,
    ExtendedMessage,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefreshCapability,
    encode_capability,
)
from bgp.codec.messages import (
    MAX_EXTENDED_MESSAGE,
    Framer,
    Keepalive,
    MessageType,
    Notification,
    Open,
    RouteRefresh,
    decode_notification,
    decode_open,
    decode_route_refresh,
    encode_keepalive,
    encode_notification,
    encode_open,
    encode_route_refresh,
    header,
)
from bgp.fsm import (
    Close,
    Connect,
    Event,
    Send,
    Session,
    SessionConfig,
    State,
    StateChanged,
)
from bgp.types import AS_TRANS, IPV4_UNICAST, IPV6_UNICAST, Family

LOCAL_ASN = 65000
PEER_ASN = 65001
LOCAL_ID = IPv4Address("10.0.0.1")
PEER_ID = IPv4Address("10.0.0.2")
PEER_ADDRESS = IPv4Address("198.51.100.2")

E = TypeVar("E")


def make_config(**overrides: Any) -> SessionConfig:
    base = SessionConfig(
        local_asn=LOCAL_ASN,
        peer_asn=PEER_ASN,
        router_id=LOCAL_ID,
        peer_address=PEER_ADDRESS,
    )
    return replace(base, **overrides)


def peer_caps(
    asn: int = PEER_ASN,
    *,
    families: Sequence[Family] = (IPV4_UNICAST, IPV6_UNICAST),
    route_refresh: bool = True,
    enhanced_route_refresh: bool = True,
    extended_message: bool = True,
    graceful_restart: int | None = 120,
    notification_bit: bool = False,
    add_path: Sequence[tuple[Family, AddPathMode]] = (),
    four_octet: bool = True,
) -> tuple[Capability, ...]:
    """What a typical modern peer advertises, with knobs."""
    caps: list[Capability] = [Multiprotocol(f) for f in families]
    if route_refresh:
        caps.append(RouteRefreshCapability())
    if enhanced_route_refresh:
        caps.append(EnhancedRouteRefresh())
    if four_octet:
        caps.append(FourOctetAs(asn))
    if extended_message:
        caps.append(ExtendedMessage())
    if graceful_restart is not None:
        gr_families = tuple((f, True) for f in families)
        caps.append(GracefulRestart(graceful_restart, notification=notification_bit, families=gr_families))
    if add_path:
        caps.append(AddPath(tuple(add_path)))
    return tuple(caps)


def peer_open(
    asn: int = PEER_ASN,
    hold_time: int = 90,
    router_id: IPv4Address = PEER_ID,
    caps: Sequence[Capability] | None = None,
    **cap_options: Any,
) -> bytes:
    capabilities = tuple(caps) if caps is not None else peer_caps(asn, **cap_options)
    return encode_open(Open(asn, hold_time, router_id, capabilities))


def raw_open(
    my_as: int,
    hold_time: int = 90,
    router_id: IPv4Address = PEER_ID,
    caps: Iterable[Capability] = (),
    version: int = 4,
    extra_params: bytes = b"",
) -> bytes:
    """An OPEN built field by field, for what encode_open would not produce."""
    cap_bytes = b"".join(encode_capability(c) for c in caps)
    params = (bytes([2, len(cap_bytes)]) + cap_bytes if cap_bytes else b"") + extra_params
    body = struct.pack("!BHHIB", version, my_as, hold_time, int(router_id), len(params)) + params
    return header(MessageType.OPEN, len(body)) + body


KEEPALIVE = encode_keepalive()


def notification(code: int, subcode: int, data: bytes = b"") -> bytes:
    return encode_notification(Notification(code, subcode, data))


def route_refresh(family: Family, subtype: int = 0) -> bytes:
    return encode_route_refresh(RouteRefresh(family, subtype))


class SequenceRng:
    """Deterministic rng: cycles through the given values in [0, 1)."""

    def __init__(self, *values: float) -> None:
        self.values = values or (0.5,)
        self.calls = 0

    def __call__(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value


class Harness:
    def __init__(self, config: SessionConfig | None = None, rng: Callable[[], float] | None = None) -> None:
        self.config = config or make_config()
        self.session = Session(self.config, rng or SequenceRng(0.5))
        self.now = 0.0
        self._framers: dict[int, Framer] = {}
        self.sent: dict[int, list[object]] = defaultdict(list)
        self.sent_at: dict[int, list[tuple[float, object]]] = defaultdict(list)
        self.closed: list[int] = []
        self.connects: list[float] = []
        self.events: list[Event] = []

    # -- driving ----------------------------------------------------------------------------------

    def pump(self) -> None:
        for action in self.session.take_actions():
            if isinstance(action, Send):
                framer = self._framers.setdefault(action.conn, Framer(MAX_EXTENDED_MESSAGE))
                framer.feed(action.data)
                while (item := framer.next_message()) is not None:
                    message = _decode_sent(*item)
                    self.sent[action.conn].append(message)
                    self.sent_at[action.conn].append((self.now, message))
            elif isinstance(action, Close):
                self.closed.append(action.conn)
            elif isinstance(action, Connect):
                self.connects.append(self.now)
        self.events += self.session.take_events()

    def start(self) -> Harness:
        self.session.start(self.now)
        self.pump()
        return self

    def connect(self, conn: int = 1, outgoing: bool = True) -> None:
        self.session.connection_made(conn, self.now, outgoing)
        self.pump()

    def feed(self, conn: int, *messages: bytes) -> None:
        self.session.data_received(conn, b"".join(messages), self.now)
        self.pump()

    def lose(self, conn: int, error: str | None = None) -> None:
        self.session.connection_lost(conn, self.now, error)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every deadline on the way in order."""
        end = self.now + seconds
        while (deadline := self.session.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.session.handle_timer(self.now)
            self.pump()
        self.now = end
        self.session.handle_timer(self.now)
        self.pump()

    def establish(self, conn: int = 1, outgoing: bool = True, open_bytes: bytes | None = None) -> None:
        """From Idle: start (if needed), connect, exchange OPENs and KEEPALIVEs."""
        if self.state() is State.IDLE:
            self.start()
        self.connect(conn, outgoing)
        self.feed(conn, open_bytes if open_bytes is not None else peer_open())
        self.feed(conn, KEEPALIVE)
        assert self.state() is State.ESTABLISHED, self.events

    # -- inspecting -------------------------------------------------------------------------------

    def state(self) -> State:
        """The session state (a call, so type checkers do not narrow it across actions)."""
        return self.session.state

    def take_sent(self, conn: int = 1) -> list[object]:
        messages = self.sent[conn]
        self.sent[conn] = []
        return messages

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def events_of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def transitions(self) -> list[tuple[State, State, str]]:
        return [(e.old, e.new, e.reason.value) for e in self.events_of(StateChanged)]

    def notifications_sent(self, conn: int = 1) -> list[Notification]:
        return [m for m in self.sent[conn] if isinstance(m, Notification)]


def _decode_sent(msg_type: int, body: bytes) -> object:
    if msg_type == MessageType.OPEN:
        return decode_open(body)
    if msg_type == MessageType.KEEPALIVE:
        return Keepalive()
    if msg_type == MessageType.NOTIFICATION:
        return decode_notification(body)
    if msg_type == MessageType.ROUTE_REFRESH:
        return decode_route_refresh(body)
    return ("UPDATE", body)


__all__ = [
    "AS_TRANS",
    "KEEPALIVE",
    "LOCAL_ASN",
    "LOCAL_ID",
    "PEER_ADDRESS",
    "PEER_ASN",
    "PEER_ID",
    "Harness",
    "SequenceRng",
    "make_config",
    "notification",
    "peer_caps",
    "peer_open",
    "raw_open",
    "route_refresh",
]
