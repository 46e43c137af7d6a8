"""Coming up: Idle -> Connect/Active -> OpenSent -> OpenConfirm -> Established, active and passive."""

from __future__ import annotations

from bgp.codec.capabilities import (
    EnhancedRouteRefresh,
    ExtendedMessage,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefreshCapability,
)
from bgp.codec.messages import Keepalive, Open
from bgp.fsm import Established, State
from bgp.types import IPV4_UNICAST, IPV6_UNICAST
from tests.bgp.fsm.harness import (
    KEEPALIVE,
    LOCAL_ASN,
    LOCAL_ID,
    PEER_ASN,
    PEER_ID,
    Harness,
    make_config,
    peer_open,
)


def test_idle_manual_start_active_emits_connect_and_goes_connect() -> None:
    h = Harness().start()
    assert h.state() is State.CONNECT
    assert h.connects == [0.0]
    assert h.transitions() == [(State.IDLE, State.CONNECT, "ManualStart")]


def test_connect_tcp_cr_acked_sends_open_with_our_capabilities() -> None:
    h = Harness().start()
    h.connect(1, outgoing=True)
    assert h.state() is State.OPEN_SENT
    [sent] = h.take_sent(1)
    assert isinstance(sent, Open)
    assert (sent.asn, sent.hold_time, sent.router_id) == (LOCAL_ASN, 90, LOCAL_ID)
    caps = sent.capabilities
    assert Multiprotocol(IPV4_UNICAST) in caps
    assert Multiprotocol(IPV6_UNICAST) in caps
    assert RouteRefreshCapability() in caps
    assert EnhancedRouteRefresh() in caps
    assert FourOctetAs(LOCAL_ASN) in caps
    assert ExtendedMessage() in caps
    # Receiving speaker: restart time, every family listed, F bit clear, R bit clear.
    assert GracefulRestart(120, False, False, ((IPV4_UNICAST, False), (IPV6_UNICAST, False))) in caps
    assert h.transitions()[-1] == (State.CONNECT, State.OPEN_SENT, "TcpCrAcked")


def test_open_sent_open_received_sends_keepalive_and_goes_open_confirm() -> None:
    h = Harness().start()
    h.connect(1)
    h.take_sent(1)
    h.feed(1, peer_open())
    assert h.state() is State.OPEN_CONFIRM
    assert h.take_sent(1) == [Keepalive()]
    assert h.transitions()[-1] == (State.OPEN_SENT, State.OPEN_CONFIRM, "OpenReceived")


def test_open_confirm_keepalive_received_goes_established_with_negotiated() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open())
    h.feed(1, KEEPALIVE)
    assert h.state() is State.ESTABLISHED
    [up] = h.events_of(Established)
    n = up.negotiated
    assert n is h.session.negotiated
    assert (n.peer_asn, n.peer_router_id) == (PEER_ASN, PEER_ID)
    assert n.families == (IPV4_UNICAST, IPV6_UNICAST)
    assert (n.hold_time, n.keepalive_time) == (90, 30)
    assert n.four_octet_as and n.route_refresh and n.enhanced_route_refresh and n.extended_message
    assert h.session.established_at == h.now
    assert h.transitions() == [
        (State.IDLE, State.CONNECT, "ManualStart"),
        (State.CONNECT, State.OPEN_SENT, "TcpCrAcked"),
        (State.OPEN_SENT, State.OPEN_CONFIRM, "OpenReceived"),
        (State.OPEN_CONFIRM, State.ESTABLISHED, "KeepaliveReceived"),
    ]


def test_open_sent_messages_split_byte_by_byte_still_establish() -> None:
    h = Harness().start()
    h.connect(1)
    for byte in peer_open() + KEEPALIVE:
        h.feed(1, bytes([byte]))
    assert h.state() is State.ESTABLISHED


def test_open_sent_open_and_keepalive_in_one_segment_establish() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open(), KEEPALIVE)
    assert h.state() is State.ESTABLISHED


def test_connect_incoming_connection_accepted_goes_open_sent() -> None:
    h = Harness().start()
    h.connect(7, outgoing=False)
    assert h.state() is State.OPEN_SENT
    assert h.transitions()[-1] == (State.CONNECT, State.OPEN_SENT, "TcpConnectionConfirmed")
    h.feed(7, peer_open(), KEEPALIVE)
    assert h.state() is State.ESTABLISHED


def test_passive_manual_start_goes_active_and_never_connects() -> None:
    h = Harness(make_config(passive=True)).start()
    assert h.state() is State.ACTIVE
    assert h.transitions() == [(State.IDLE, State.ACTIVE, "ManualStart")]
    h.advance(600)
    assert h.connects == []
    assert h.state() is State.ACTIVE


def test_passive_active_incoming_connection_establishes() -> None:
    h = Harness(make_config(passive=True)).start()
    h.establish(3, outgoing=False)
    assert [type(m) for m in h.take_sent(3)] == [Open, Keepalive]


def test_passive_established_connection_lost_returns_to_active_without_connecting() -> None:
    h = Harness(make_config(passive=True, graceful_restart_time=None)).start()
    h.establish(3, outgoing=False)
    h.lose(3)
    assert h.state() is State.IDLE
    h.advance(h.config.idle_hold_time)
    assert h.state() is State.ACTIVE
    h.advance(600)
    assert h.connects == []


def test_connect_connection_failed_goes_active_then_retries_after_connect_retry() -> None:
    h = Harness().start()
    h.session.connection_failed(h.now, "connection refused")
    h.pump()
    assert h.state() is State.ACTIVE
    assert h.transitions()[-1] == (State.CONNECT, State.ACTIVE, "TcpConnectionFails")
    assert h.events[-1].detail == "connection refused"  # type: ignore[union-attr]
    h.advance(h.config.connect_retry_time)
    assert h.state() is State.CONNECT
    assert len(h.connects) == 2
    assert h.transitions()[-1] == (State.ACTIVE, State.CONNECT, "ConnectRetryTimerExpires")


def test_connect_connect_retry_expires_with_attempt_pending_emits_new_connect() -> None:
    h = Harness().start()
    h.advance(h.config.connect_retry_time)
    assert h.state() is State.CONNECT
    assert len(h.connects) == 2


def test_active_incoming_connection_while_retrying_accepted() -> None:
    h = Harness().start()
    h.session.connection_failed(h.now, "timeout")
    h.pump()
    h.connect(2, outgoing=False)
    assert h.state() is State.OPEN_SENT
    assert h.session.next_deadline() == h.now + h.config.open_hold_time  # ConnectRetry stopped
    assert isinstance(h.take_sent(2)[0], Open)


def test_open_sent_connection_lost_goes_active_and_reconnects_after_connect_retry() -> None:
    h = Harness().start()
    h.connect(1)
    h.lose(1, "reset by peer")
    assert h.state() is State.ACTIVE
    assert h.transitions()[-1] == (State.OPEN_SENT, State.ACTIVE, "TcpConnectionFails")
    h.advance(h.config.connect_retry_time)
    assert len(h.connects) == 2
    assert h.state() is State.CONNECT


def test_idle_incoming_connection_refused_with_cease_connection_rejected() -> None:
    h = Harness()
    h.connect(5, outgoing=False)
    assert h.state() is State.IDLE
    [refusal] = h.notifications_sent(5)
    assert (refusal.code, refusal.subcode) == (6, 5)
    assert h.closed == [5]


def test_idle_start_twice_is_one_start() -> None:
    h = Harness().start()
    h.start()
    assert h.connects == [0.0]
