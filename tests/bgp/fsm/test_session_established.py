"""Established: UPDATEs, ROUTE-REFRESH both ways, NOTIFICATIONs, FSM errors, negotiated codec features."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.codec.capabilities import AddPathMode
from bgp.codec.messages import CodecContext, MessageType, Notification, RouteRefresh, header
from bgp.codec.update import Reach, Update, build_updates, encode_end_of_rib, encode_update
from bgp.fsm import RouteRefreshRequested, SessionDown, State, StateChanged, UpdateReceived
from bgp.types import (
    IPV4_UNICAST,
    IPV6_UNICAST,
    AsPath,
    AsPathSegment,
    Origin,
    PathAttributes,
    SegmentType,
    prefix_key,
)
from tests.bgp.fsm.harness import (
    KEEPALIVE,
    PEER_ADDRESS,
    PEER_ASN,
    Harness,
    make_config,
    notification,
    peer_open,
    route_refresh,
)

ATTRS = PathAttributes(
    origin=Origin.IGP,
    as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (PEER_ASN,)),)),
    next_hop=PEER_ADDRESS,
)
VIP = prefix_key(IPv4Network("203.0.113.10/32"))


def _peer_ctx(h: Harness) -> CodecContext:
    """How the peer writes to us: our receive-side features are its send side."""
    n = h.session.negotiated
    assert n is not None
    return replace(n.codec, add_path_send=n.codec.add_path_receive, add_path_receive=frozenset())


def _attr(flags: int, code: int, value: bytes) -> bytes:
    return bytes([flags, code, len(value)]) + value


def _raw_update(
    withdrawn: bytes = b"", attrs: bytes = b"", nlri: bytes = b"", *, bad_wlen: int | None = None
) -> bytes:
    wlen = len(withdrawn) if bad_wlen is None else bad_wlen
    body = wlen.to_bytes(2, "big") + withdrawn + len(attrs).to_bytes(2, "big") + attrs + nlri
    return header(MessageType.UPDATE, len(body)) + body


def test_established_update_received_passes_decoded_update() -> None:
    h = Harness()
    h.establish()
    [message] = build_updates(IPV4_UNICAST, ATTRS, [VIP], _peer_ctx(h))
    h.feed(1, message)
    [received] = h.events_of(UpdateReceived)
    [reach] = received.update.reach
    assert reach.prefixes == (VIP,)
    assert reach.attributes.next_hop == PEER_ADDRESS
    assert received.update.errors == ()


def test_established_update_received_restarts_hold_timer() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(hold_time=9))
    [message] = build_updates(IPV4_UNICAST, ATTRS, [VIP], _peer_ctx(h))
    for _ in range(5):
        h.advance(8)
        h.feed(1, message)
    assert h.state() is State.ESTABLISHED


def test_established_identical_attributes_are_interned() -> None:
    h = Harness()
    h.establish()
    other = prefix_key(IPv4Network("203.0.113.11/32"))
    first = build_updates(IPV4_UNICAST, ATTRS, [VIP], _peer_ctx(h))[0]
    second = build_updates(IPV4_UNICAST, ATTRS, [other], _peer_ctx(h))[0]
    h.feed(1, first, second)
    a, b = (e.update.reach[0].attributes for e in h.events_of(UpdateReceived))
    assert a is b


def test_established_end_of_rib_passes_through() -> None:
    h = Harness()
    h.establish()
    h.feed(1, encode_end_of_rib(IPV6_UNICAST))
    [received] = h.events_of(UpdateReceived)
    assert received.update.end_of_rib == IPV6_UNICAST


def test_established_treat_as_withdraw_update_passes_through_with_errors() -> None:
    h = Harness()
    h.establish()
    attrs = (
        _attr(0x40, 1, b"\x07")  # ORIGIN with an undefined value: RFC 7606 §7.1 treat-as-withdraw
        + _attr(0x40, 2, bytes([2, 1]) + PEER_ASN.to_bytes(4, "big"))
        + _attr(0x40, 3, PEER_ADDRESS.packed)
    )
    h.feed(1, _raw_update(attrs=attrs, nlri=bytes([32, 203, 0, 113, 10])))
    assert h.state() is State.ESTABLISHED
    assert h.notifications_sent(1) == []
    [received] = h.events_of(UpdateReceived)
    assert received.update.reach == ()
    assert [u.prefixes for u in received.update.unreach] == [(VIP,)]
    assert received.update.errors


def test_established_malformed_update_sends_update_error_and_goes_down() -> None:
    h = Harness()
    h.establish()
    h.feed(1, _raw_update(bad_wlen=200))  # withdrawn routes length runs past the message
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (3, 1)
    assert h.state() is State.IDLE
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "UpdateMessageError"
    assert down.notification_sent == sent
    assert down.graceful_restart is False  # a NOTIFICATION without the N bit ends GR eligibility


def test_established_route_refresh_received_emits_request() -> None:
    h = Harness()
    h.establish()
    h.feed(1, route_refresh(IPV6_UNICAST))
    [request] = h.events_of(RouteRefreshRequested)
    assert (request.family, request.subtype.name) == (IPV6_UNICAST, "NORMAL")


def test_established_route_refresh_for_unnegotiated_family_is_ignored() -> None:
    h = Harness(make_config(families=(IPV4_UNICAST,)))
    h.establish()
    h.feed(1, route_refresh(IPV6_UNICAST))
    assert h.events_of(RouteRefreshRequested) == []
    assert h.state() is State.ESTABLISHED


def test_established_route_refresh_for_unknown_afi_is_ignored() -> None:
    h = Harness()
    h.establish()
    body = bytes([0, 25, 0, 70])  # AFI 25 (L2VPN) / SAFI 70
    h.feed(1, header(MessageType.ROUTE_REFRESH, len(body)) + body)
    assert h.state() is State.ESTABLISHED
    assert h.events_of(RouteRefreshRequested) == []


def test_established_route_refresh_with_bad_length_sends_7_1() -> None:
    h = Harness()
    h.establish()
    body = bytes([0, 1, 0, 1, 0])
    h.feed(1, header(MessageType.ROUTE_REFRESH, len(body)) + body)
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (7, 1)
    assert h.transitions()[-1][2] == "RouteRefreshMessageError"


def test_established_borr_and_eorr_passed_with_enhanced_route_refresh() -> None:
    h = Harness()
    h.establish()
    h.feed(1, route_refresh(IPV4_UNICAST, 1), route_refresh(IPV4_UNICAST, 2), route_refresh(IPV4_UNICAST, 9))
    assert [r.subtype.name for r in h.events_of(RouteRefreshRequested)] == ["BEGIN", "END"]


def test_established_borr_ignored_without_enhanced_route_refresh() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(enhanced_route_refresh=False))
    h.feed(1, route_refresh(IPV4_UNICAST, 1))
    assert h.events_of(RouteRefreshRequested) == []


def test_established_request_route_refresh_sends_route_refresh() -> None:
    h = Harness()
    h.establish()
    h.take_sent(1)
    assert h.session.request_route_refresh(IPV4_UNICAST) is True
    h.pump()
    assert h.take_sent(1) == [RouteRefresh(IPV4_UNICAST, 0)]


def test_established_request_route_refresh_refused_when_peer_lacks_capability() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(route_refresh=False, enhanced_route_refresh=False))
    h.take_sent(1)
    assert h.session.request_route_refresh(IPV4_UNICAST) is False
    h.pump()
    assert h.take_sent(1) == []


def test_open_confirm_request_route_refresh_refused() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open())
    assert h.session.request_route_refresh(IPV4_UNICAST) is False


def test_established_notification_received_goes_down_keeping_code_and_subcode() -> None:
    h = Harness()
    h.establish()
    h.feed(1, notification(6, 2, b"\x0bmaintenance"))
    assert h.state() is State.IDLE
    last = h.transitions()[-1]
    assert last == (State.ESTABLISHED, State.IDLE, "NotificationReceived")
    [down] = h.events_of(SessionDown)
    assert down.notification_received == Notification(6, 2, b"\x0bmaintenance")
    assert down.detail == "maintenance"
    assert down.graceful_restart is False
    assert h.notifications_sent(1) == []  # never answer a NOTIFICATION
    assert h.closed == [1]


def test_open_sent_update_received_sends_fsm_error_5_1() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, _raw_update())
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode, sent.data) == (5, 1, bytes([MessageType.UPDATE]))
    assert h.transitions()[-1] == (State.OPEN_SENT, State.IDLE, "FsmError")


def test_open_sent_keepalive_received_sends_fsm_error_5_1() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, KEEPALIVE)
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (5, 1)


def test_open_confirm_update_received_sends_fsm_error_5_2() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open(), _raw_update())
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (5, 2)
    assert h.events_of(UpdateReceived) == []


def test_open_confirm_second_open_sends_fsm_error_5_2() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, peer_open(), peer_open())
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (5, 2)


def test_established_open_received_sends_fsm_error_5_3() -> None:
    h = Harness()
    h.establish()
    h.feed(1, peer_open())
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (5, 3)
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "FsmError"


def test_established_messages_after_a_fatal_one_in_the_same_segment_are_ignored() -> None:
    h = Harness()
    h.establish()
    [message] = build_updates(IPV4_UNICAST, ATTRS, [VIP], _peer_ctx(h))
    h.feed(1, peer_open(), message)
    assert h.events_of(UpdateReceived) == []


def test_established_send_messages_writes_to_the_established_connection() -> None:
    h = Harness()
    h.establish()
    h.take_sent(1)
    [message] = build_updates(IPV4_UNICAST, ATTRS, [VIP], h.session.negotiated.codec)  # type: ignore[union-attr]
    assert h.session.send_messages([message]) is True
    h.pump()
    assert h.take_sent(1) == [("UPDATE", message[19:])]


def test_open_sent_send_messages_refused() -> None:
    h = Harness().start()
    h.connect(1)
    h.take_sent(1)
    assert h.session.send_messages([KEEPALIVE]) is False
    h.pump()
    assert h.take_sent(1) == []


# -- negotiated codec features ----------------------------------------------------------------------


def test_established_add_path_receive_negotiated_where_peer_sends() -> None:
    config = make_config(add_path_receive=(IPV4_UNICAST, IPV6_UNICAST))
    h = Harness(config)
    h.establish(
        open_bytes=peer_open(add_path=[(IPV4_UNICAST, AddPathMode.SEND), (IPV6_UNICAST, AddPathMode.RECEIVE)])
    )
    n = h.session.negotiated
    assert n is not None
    assert n.add_path_receive == frozenset({IPV4_UNICAST})
    assert n.codec.add_path_receive == frozenset({IPV4_UNICAST})
    update = Update(reach=(Reach(IPV4_UNICAST, ATTRS, (VIP, VIP), (1, 2)),))
    h.feed(1, encode_update(update, _peer_ctx(h)))
    [received] = h.events_of(UpdateReceived)
    assert received.update.reach[0].path_ids == (1, 2)


def test_established_extended_message_accepts_large_update() -> None:
    h = Harness()
    h.establish()
    assert h.session.negotiated is not None
    assert h.session.negotiated.codec.max_message == 65535
    prefixes = [prefix_key(IPv4Network((0x0A000000 + (i << 8), 24))) for i in range(2000)]
    messages = build_updates(IPV4_UNICAST, ATTRS, prefixes, _peer_ctx(h))
    assert len(messages) == 1 and len(messages[0]) > 4096
    h.feed(1, messages[0])
    [received] = h.events_of(UpdateReceived)
    assert len(received.update.reach[0].prefixes) == 2000


def test_established_without_extended_message_large_message_sends_1_2() -> None:
    h = Harness(make_config(extended_message=False))
    h.establish()
    assert h.session.negotiated is not None
    assert not h.session.negotiated.extended_message
    big_ctx = replace(_peer_ctx(h), extended_message=True)
    prefixes = [prefix_key(IPv4Network((0x0A000000 + (i << 8), 24))) for i in range(2000)]
    h.feed(1, build_updates(IPV4_UNICAST, ATTRS, prefixes, big_ctx)[0])
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (1, 2)


def test_established_peer_without_multiprotocol_negotiates_ipv4_unicast_only() -> None:
    from tests.bgp.fsm.harness import raw_open

    h = Harness()
    h.establish(open_bytes=raw_open(my_as=PEER_ASN))
    assert h.session.negotiated is not None
    assert h.session.negotiated.families == (IPV4_UNICAST,)


def test_established_ibgp_codec_context_is_internal() -> None:
    h = Harness(make_config(peer_asn=65000))
    h.establish(open_bytes=peer_open(asn=65000, router_id=IPv4Address("10.9.9.9")))
    assert h.session.negotiated is not None
    assert h.session.negotiated.codec.external is False


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_established_arbitrary_bytes_never_raise(data: bytes) -> None:
    h = Harness()
    h.establish()
    h.feed(1, data)
    if h.state() is State.IDLE:  # went down: closed, with a NOTIFICATION one way or the other
        assert h.closed == [1]
        assert h.events_of(StateChanged)[-1].notification is not None


@pytest.mark.parametrize("state_setup", ["open_sent", "open_confirm"])
@settings(max_examples=50, deadline=None)
@given(data=st.binary(min_size=19, max_size=200))
def test_before_established_arbitrary_bytes_never_raise(state_setup: str, data: bytes) -> None:
    h = Harness().start()
    h.connect(1)
    if state_setup == "open_confirm":
        h.feed(1, peer_open())
    h.feed(1, b"\xff" * 16 + data[16:])
    if h.state() is State.IDLE:  # went down: closed, with a NOTIFICATION one way or the other
        assert h.closed == [1]
        assert h.events_of(StateChanged)[-1].notification is not None
