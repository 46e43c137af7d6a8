"""Pure OPEN building, checking and negotiation (no session)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.codec.capabilities import AddPath, AddPathMode, ExtendedMessage, GracefulRestart, Multiprotocol
from bgp.codec.errors import BgpError
from bgp.codec.messages import Open
from bgp.fsm import SessionConfig, build_open, check_open, negotiate
from bgp.types import AS_TRANS, IPV4_UNICAST, IPV6_UNICAST
from tests.bgp.fsm.harness import PEER_ASN, PEER_ID, make_config, peer_caps


def _open(hold: int = 90, **options: object) -> Open:
    return Open(PEER_ASN, hold, PEER_ID, peer_caps(**options))  # type: ignore[arg-type]


def test_build_open_four_octet_local_asn_uses_as_trans_in_my_as() -> None:
    from bgp.codec.messages import encode_open

    message = build_open(make_config(local_asn=4_200_000_000))
    wire = encode_open(message)
    assert int.from_bytes(wire[20:22], "big") == AS_TRANS


def test_build_open_add_path_receive_for_configured_families_only() -> None:
    message = build_open(make_config(add_path_receive=(IPV6_UNICAST,)))
    [add_path] = [c for c in message.capabilities if isinstance(c, AddPath)]
    assert add_path.entries == ((IPV6_UNICAST, AddPathMode.RECEIVE),)


def test_build_open_without_gr_or_extended_message_when_disabled() -> None:
    message = build_open(make_config(graceful_restart_time=None, extended_message=False))
    assert not any(isinstance(c, GracefulRestart | ExtendedMessage) for c in message.capabilities)


def test_build_open_gr_n_bit_follows_configuration() -> None:
    message = build_open(make_config(graceful_restart_notification=True))
    [gr] = [c for c in message.capabilities if isinstance(c, GracefulRestart)]
    assert gr.notification and not gr.restarting
    assert all(not forwarding for _, forwarding in gr.families)


def test_negotiate_families_are_the_intersection_in_our_order() -> None:
    n = negotiate(make_config(), _open(families=(IPV6_UNICAST,)))
    assert n.families == (IPV6_UNICAST,)


def test_negotiate_add_path_only_where_peer_sends() -> None:
    config = make_config(add_path_receive=(IPV4_UNICAST, IPV6_UNICAST))
    both = AddPathMode.SEND | AddPathMode.RECEIVE
    n = negotiate(config, _open(add_path=[(IPV4_UNICAST, both), (IPV6_UNICAST, AddPathMode.RECEIVE)]))
    assert n.add_path_receive == frozenset({IPV4_UNICAST})
    assert n.codec.add_path_send == frozenset()


def test_negotiate_add_path_ignored_for_family_not_negotiated() -> None:
    config = make_config(add_path_receive=(IPV6_UNICAST,))
    n = negotiate(config, _open(families=(IPV4_UNICAST,), add_path=[(IPV6_UNICAST, AddPathMode.SEND)]))
    assert n.add_path_receive == frozenset()


def test_negotiate_extended_message_needs_both_sides() -> None:
    assert negotiate(make_config(), _open()).codec.max_message == 65535
    assert negotiate(make_config(), _open(extended_message=False)).codec.max_message == 4096
    assert negotiate(make_config(extended_message=False), _open()).codec.max_message == 4096


def test_negotiate_enhanced_route_refresh_needs_route_refresh() -> None:
    n = negotiate(make_config(), _open(route_refresh=False))
    assert not n.route_refresh and not n.enhanced_route_refresh


def test_negotiate_gr_stale_families_are_negotiated_families_the_peer_listed() -> None:
    caps = (
        Multiprotocol(IPV4_UNICAST),
        Multiprotocol(IPV6_UNICAST),
        GracefulRestart(60, families=((IPV6_UNICAST, False),)),
    )
    n = negotiate(make_config(), Open(PEER_ASN, 90, PEER_ID, caps))
    assert n.graceful_restart
    assert n.stale_families() == (IPV6_UNICAST,)
    assert (
        negotiate(make_config(graceful_restart_time=None), Open(PEER_ASN, 90, PEER_ID, caps)).stale_families()
        == ()
    )


def test_check_open_accepts_typical_peer() -> None:
    check_open(make_config(), _open(), PEER_ASN)


def test_check_open_bad_peer_as_raises_2_2() -> None:
    with pytest.raises(BgpError) as info:
        check_open(make_config(peer_asn=65002), _open(), PEER_ASN)
    assert (info.value.code, info.value.subcode) == (2, 2)


@pytest.mark.parametrize(
    "overrides",
    [
        {"hold_time": 2},
        {"hold_time": 70000},
        {"keepalive_time": 0},
        {"families": ()},
        {"add_path_receive": (IPV6_UNICAST,), "families": (IPV4_UNICAST,)},
        {"graceful_restart_time": 5000},
        {"idle_hold_time": 10.0, "max_idle_hold_time": 5.0},
        {"peer_asn": 0},
        {"connect_retry_time": 0},
    ],
)
def test_session_config_rejects_invalid_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_config(**overrides)


def test_session_config_defaults_are_valid() -> None:
    config = SessionConfig(65000, 65001, IPv4Address("10.0.0.1"), IPv4Address("198.51.100.2"))
    assert config.hold_time == 90 and config.keepalive_time is None and not config.ibgp
