"""OpenSent: the peer's OPEN is checked (RFC 4271 §6.2, RFC 6793, RFC 5492) and refused with its code."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.codec.capabilities import Capability, FourOctetAs, Multiprotocol
from bgp.codec.messages import MARKER, Notification
from bgp.fsm import State, StateChanged
from bgp.types import AS_TRANS, IPV4_UNICAST, IPV6_UNICAST
from tests.bgp.fsm.harness import LOCAL_ASN, LOCAL_ID, PEER_ASN, Harness, make_config, peer_open, raw_open


def _refused(h: Harness, open_bytes: bytes) -> Notification:
    h.start()
    h.connect(1)
    h.take_sent(1)
    h.feed(1, open_bytes)
    [sent] = h.notifications_sent(1)
    assert h.closed == [1]
    assert h.state() is State.IDLE
    last = h.events_of(StateChanged)[-1]
    assert (last.old, last.new) == (State.OPEN_SENT, State.IDLE)
    assert last.notification == sent
    return sent


def test_open_sent_wrong_peer_as_sends_bad_peer_as_2_2() -> None:
    h = Harness()
    sent = _refused(h, peer_open(asn=65099))
    assert (sent.code, sent.subcode) == (2, 2)
    assert h.transitions()[-1] == (State.OPEN_SENT, State.IDLE, "OpenMessageError")


def test_open_sent_my_as_field_inconsistent_with_4_octet_capability_sends_2_2() -> None:
    # 4-octet capability says 65001 but the 2-octet field says something else.
    caps: list[Capability] = [Multiprotocol(IPV4_UNICAST), FourOctetAs(PEER_ASN)]
    sent = _refused(Harness(), raw_open(my_as=64999, caps=caps))
    assert (sent.code, sent.subcode) == (2, 2)


def test_open_sent_non_mappable_asn_without_as_trans_sends_2_2() -> None:
    big = 4_200_000_001
    h = Harness(make_config(peer_asn=big))
    sent = _refused(h, raw_open(my_as=big & 0xFFFF, caps=[Multiprotocol(IPV4_UNICAST), FourOctetAs(big)]))
    assert (sent.code, sent.subcode) == (2, 2)


def test_open_sent_four_octet_peer_with_as_trans_is_accepted() -> None:
    big = 4_200_000_001
    h = Harness(make_config(peer_asn=big))
    h.establish(open_bytes=raw_open(my_as=AS_TRANS, caps=[Multiprotocol(IPV4_UNICAST), FourOctetAs(big)]))
    assert h.session.negotiated is not None
    assert h.session.negotiated.peer_asn == big


def test_open_sent_old_speaker_cannot_match_four_octet_peer_as_sends_2_2() -> None:
    h = Harness(make_config(peer_asn=4_200_000_001))
    sent = _refused(h, raw_open(my_as=AS_TRANS, caps=[Multiprotocol(IPV4_UNICAST)]))
    assert (sent.code, sent.subcode) == (2, 2)


def test_open_sent_old_speaker_two_octet_as_accepted_without_four_octet_capability() -> None:
    h = Harness()
    h.establish(open_bytes=raw_open(my_as=PEER_ASN, caps=[Multiprotocol(IPV4_UNICAST)]))
    n = h.session.negotiated
    assert n is not None
    assert not n.four_octet_as
    assert not n.codec.four_octet_as


def test_open_sent_ibgp_peer_with_our_identifier_sends_bad_bgp_identifier_2_3() -> None:
    h = Harness(make_config(peer_asn=LOCAL_ASN))
    sent = _refused(h, peer_open(asn=LOCAL_ASN, router_id=LOCAL_ID))
    assert (sent.code, sent.subcode) == (2, 3)


def test_open_sent_ebgp_peer_with_our_identifier_is_accepted() -> None:
    h = Harness()
    h.establish(open_bytes=peer_open(router_id=LOCAL_ID))  # RFC 6286 §2.2
    assert h.state() is State.ESTABLISHED


def test_open_sent_zero_identifier_sends_2_3() -> None:
    sent = _refused(Harness(), raw_open(my_as=PEER_ASN, router_id=IPv4Address("0.0.0.0")))
    assert (sent.code, sent.subcode) == (2, 3)


def test_open_sent_unsupported_version_sends_2_1_with_our_version() -> None:
    sent = _refused(Harness(), raw_open(my_as=PEER_ASN, version=3))
    assert (sent.code, sent.subcode) == (2, 1)
    assert sent.data == b"\x00\x04"


@pytest.mark.parametrize("hold", [1, 2])
def test_open_sent_hold_time_one_or_two_sends_unacceptable_hold_time_2_6(hold: int) -> None:
    sent = _refused(Harness(), peer_open(hold_time=hold))
    assert (sent.code, sent.subcode) == (2, 6)


def test_open_sent_unknown_optional_parameter_sends_2_4() -> None:
    sent = _refused(Harness(), raw_open(my_as=PEER_ASN, extra_params=bytes([9, 1, 0])))
    assert (sent.code, sent.subcode) == (2, 4)


def test_open_sent_no_family_in_common_sends_unsupported_capability_2_7() -> None:
    h = Harness(make_config(families=(IPV6_UNICAST,)))
    sent = _refused(h, raw_open(my_as=PEER_ASN))  # no multiprotocol: IPv4 unicast only (RFC 4760 §8)
    assert (sent.code, sent.subcode) == (2, 7)
    assert sent.data == bytes([1, 4, 0, 2, 0, 1])  # our multiprotocol capability for IPv6 unicast


def test_open_sent_bad_marker_sends_header_error_1_1() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, b"\x00" * 16 + b"\x00\x13\x04")
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (1, 1)
    assert h.transitions()[-1] == (State.OPEN_SENT, State.IDLE, "HeaderError")


def test_open_sent_oversized_message_before_negotiation_sends_1_2() -> None:
    h = Harness().start()
    h.connect(1)
    h.feed(1, MARKER + (5000).to_bytes(2, "big") + b"\x02")
    [sent] = h.notifications_sent(1)
    assert (sent.code, sent.subcode) == (1, 2)


def test_open_sent_open_error_counts_for_idle_hold_backoff() -> None:
    h = Harness()
    _refused(h, peer_open(asn=65099))
    assert h.session.next_deadline() == h.now + 1.0
    assert h.session.idle_hold_time == 2.0
