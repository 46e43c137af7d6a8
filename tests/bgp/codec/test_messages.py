"""Golden wire vectors for OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH, capabilities and dispatch.

Every vector is written out by hand, field by field (see the comments), decoded, checked against the
expected model, and re-encoded to the same bytes.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.codec.capabilities import (
    AddPath,
    AddPathMode,
    Capability,
    EnhancedRouteRefresh,
    ExtendedMessage,
    ExtendedNextHop,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefreshCapability,
    UnknownCapability,
    decode_capability,
    encode_capability,
)
from bgp.codec.dispatch import decode_message
from bgp.codec.errors import BgpError, ErrorAction
from bgp.codec.messages import (
    DEFAULT_CONTEXT,
    IgnoredRouteRefresh,
    Keepalive,
    MessageType,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshSubtype,
    decode_open,
    decode_route_refresh,
    encode_keepalive,
    encode_notification,
    encode_open,
    encode_route_refresh,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST

MARKER = "ff" * 16


def h(text: str) -> bytes:
    """Hex with whitespace and comments (after #) allowed."""
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()).replace(" ", ""))


def body_of(message: bytes) -> tuple[int, bytes]:
    assert message[:16] == b"\xff" * 16
    assert int.from_bytes(message[16:18], "big") == len(message)
    return message[18], message[19:]


# -- OPEN ---------------------------------------------------------------------------------------

OPEN_FULL = h(f"""
    {MARKER} 0054 01          # header: length 84, type OPEN
    04                        # version 4
    fde9                      # My AS 65001
    005a                      # hold time 90
    c6336401                  # BGP identifier 198.51.100.1
    37                        # optional parameters length 55
    02 35                     # parameter type 2 (capabilities), length 53
    01 04 0001 00 01          # multiprotocol IPv4 unicast (RFC 4760)
    01 04 0002 00 01          # multiprotocol IPv6 unicast
    02 00                     # route refresh (RFC 2918)
    46 00                     # enhanced route refresh (RFC 7313)
    06 00                     # extended message (RFC 8654)
    41 04 0000fde9            # 4-octet AS 65001 (RFC 6793)
    40 06 4078 0001 01 80     # graceful restart: N bit, 120 s; IPv4 unicast forwarding preserved
    45 04 0001 01 01          # ADD-PATH IPv4 unicast receive (RFC 7911)
    05 06 0001 0001 0002      # extended next hop: IPv4 unicast NLRI via IPv6 next hops (RFC 8950)
    49 03 016100              # code 73 (FQDN), not interpreted: kept verbatim
    80 00                     # pre-standard route refresh (code 128)
""")

OPEN_FULL_MODEL = Open(
    asn=65001,
    hold_time=90,
    router_id=IPv4Address("198.51.100.1"),
    capabilities=(
        Multiprotocol(IPV4_UNICAST),
        Multiprotocol(IPV6_UNICAST),
        RouteRefreshCapability(),
        EnhancedRouteRefresh(),
        ExtendedMessage(),
        FourOctetAs(65001),
        GracefulRestart(120, restarting=False, notification=True, families=((IPV4_UNICAST, True),)),
        AddPath(((IPV4_UNICAST, AddPathMode.RECEIVE),)),
        ExtendedNextHop(((IPV4_UNICAST, 2),)),
        UnknownCapability(73, b"\x01a\x00"),
        RouteRefreshCapability(old_code=True),
    ),
)

OPEN_AS4 = h(f"""
    {MARKER} 0025 01
    04 5ba0 00b4 0a000001     # version 4, My AS = AS_TRANS (23456), hold 180, identifier 10.0.0.1
    08 02 06                  # parameters length 8; capabilities, length 6
    41 04 00030d40            # 4-octet AS 200000
""")


def test_open_golden_all_capabilities_round_trips() -> None:
    msg_type, body = body_of(OPEN_FULL)
    assert msg_type == MessageType.OPEN
    decoded = decode_open(body)
    assert decoded == OPEN_FULL_MODEL
    assert encode_open(decoded) == OPEN_FULL


def test_open_golden_four_octet_asn_uses_the_capability_and_sends_as_trans() -> None:
    _, body = body_of(OPEN_AS4)
    decoded = decode_open(body)
    assert decoded.asn == 200000
    assert decoded.hold_time == 180
    assert decoded.router_id == IPv4Address("10.0.0.1")
    assert decoded.capabilities == (FourOctetAs(200000),)
    assert encode_open(decoded) == OPEN_AS4


def test_open_with_one_parameter_per_capability_decodes_like_frr_sends_it() -> None:
    body = h("""
        04 fde9 005a c6336401 14
        02 06 010400010001        # each capability in its own optional parameter
        02 02 0200
        02 06 41040000fde9
    """)
    decoded = decode_open(body)
    assert decoded.capabilities == (Multiprotocol(IPV4_UNICAST), RouteRefreshCapability(), FourOctetAs(65001))


def test_open_rfc9072_extended_parameters_decode() -> None:
    body = h("""
        04 fde9 005a c6336401
        ff ff 0005                # Non-Ext OP Len 255, Non-Ext OP Type 255, extended length 5
        02 0002 0200              # capabilities parameter with a 2-octet length: route refresh
    """)
    assert decode_open(body).capabilities == (RouteRefreshCapability(),)


def test_open_too_long_for_classic_parameters_uses_rfc9072_and_round_trips() -> None:
    caps = tuple(UnknownCapability(200 + i % 50, bytes(20)) for i in range(20))  # 440 octets
    message = Open(65001, 90, IPv4Address("198.51.100.1"), caps)
    wire = encode_open(message)
    _, body = body_of(wire)
    assert body[9] == 255 and body[10] == 255
    assert decode_open(body) == message


def test_open_unknown_optional_parameter_is_kept_and_re_encoded() -> None:
    body = h("04 fde9 005a c6336401 04 07 02 abcd")  # parameter type 7, 2 octets
    decoded = decode_open(body)
    assert decoded.unknown_parameters == ((7, b"\xab\xcd"),)
    assert body_of(encode_open(decoded))[1] == body


@pytest.mark.parametrize(
    ("body", "code", "subcode", "data"),
    [
        pytest.param("03 fde9 005a c6336401 00", 2, 1, b"\x00\x04", id="version-3"),
        pytest.param("04 fde9 0001 c6336401 00", 2, 6, b"", id="hold-time-1"),
        pytest.param("04 fde9 0002 c6336401 00", 2, 6, b"", id="hold-time-2"),
        pytest.param("04 fde9 005a 00000000 00", 2, 3, b"", id="identifier-zero"),
        pytest.param("04 0000 005a c6336401 00", 2, 2, b"", id="my-as-zero-rfc7607"),
        pytest.param("04 5ba0 005a c6336401 08 0206 4104 00000000", 2, 2, b"", id="as4-capability-zero"),
        pytest.param("04 fde9 005a c6336401 04 0206 0104", 2, 4, b"", id="parameter-overruns"),
        pytest.param("04 fde9 005a c6336401 01 02", 2, 4, b"", id="parameter-header-truncated"),
        pytest.param("04 fde9 005a c6336401 04 0202 0104", 2, 7, b"", id="capability-overruns"),
        pytest.param("04 fde9 005a c6336401 03 0201 01", 2, 7, b"", id="capability-header-truncated"),
        pytest.param(
            "04 fde9 005a c6336401 05 0203 410100", 2, 7, b"\x41\x01\x00", id="as4-capability-short"
        ),
        pytest.param("04 fde9 005a c6336401 03 0201", 1, 2, b"", id="opt-len-mismatch"),
        pytest.param("04 fde9 005a c633", 1, 2, b"\x00\x1a", id="short-open"),
    ],
)
def test_open_errors_carry_their_notification(body: str, code: int, subcode: int, data: bytes) -> None:
    with pytest.raises(BgpError) as info:
        decode_open(h(body))
    assert (info.value.code, info.value.subcode) == (code, subcode)
    assert info.value.action is ErrorAction.SESSION_RESET
    if data:
        assert info.value.data == data


# -- Capabilities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        ("01 04 0002 00 01", Multiprotocol(IPV6_UNICAST)),
        ("02 00", RouteRefreshCapability()),
        ("80 00", RouteRefreshCapability(old_code=True)),
        ("46 00", EnhancedRouteRefresh()),
        ("06 00", ExtendedMessage()),
        ("41 04 fffffffe", FourOctetAs(4294967294)),
        ("40 02 8005", GracefulRestart(5, restarting=True)),
        (
            "40 0a 0fff 0001 01 00 0002 01 80",
            GracefulRestart(4095, families=((IPV4_UNICAST, False), (IPV6_UNICAST, True))),
        ),
        (
            "45 08 0001 01 03 0002 01 02",
            AddPath(
                ((IPV4_UNICAST, AddPathMode.RECEIVE | AddPathMode.SEND), (IPV6_UNICAST, AddPathMode.SEND))
            ),
        ),
        ("05 0c 0001 0001 0002 0002 0001 0002", ExtendedNextHop(((IPV4_UNICAST, 2), (IPV6_UNICAST, 2)))),
        ("01 04 0019 00 46", UnknownCapability(1, b"\x00\x19\x00\x46")),  # L2VPN EVPN: not ours
        ("4a 00", UnknownCapability(74, b"")),
    ],
)
def test_capability_golden(wire: str, model: Capability) -> None:
    raw = h(wire)
    decoded = decode_capability(raw[0], raw[2:])
    assert decoded == model
    assert encode_capability(decoded) == raw


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        ("40 0a 0078 0001 80 80 0001 01 80", GracefulRestart(120, families=((IPV4_UNICAST, True),))),
        ("45 08 0001 80 01 0001 01 04", AddPath(())),
        ("05 0c 0001 0080 0002 0001 0001 0002", ExtendedNextHop(((IPV4_UNICAST, 2),))),
    ],
)
def test_capability_entries_for_families_we_do_not_run_are_dropped(wire: str, model: Capability) -> None:
    raw = h(wire)
    assert decode_capability(raw[0], raw[2:]) == model


@pytest.mark.parametrize(
    "wire",
    [
        "01 03 000100",
        "02 01 00",
        "46 01 00",
        "06 01 00",
        "41 02 0001",
        "40 01 00",
        "40 05 0078 0001 01",
        "45 00",
        "45 03 000101",
        "05 00",
        "05 04 00010001",
    ],
)
def test_malformed_capability_is_unsupported_capability(wire: str) -> None:
    raw = h(wire)
    with pytest.raises(BgpError) as info:
        decode_capability(raw[0], raw[2:])
    assert (info.value.code, info.value.subcode) == (2, 7)


# -- KEEPALIVE, NOTIFICATION, ROUTE-REFRESH -----------------------------------------------------

KEEPALIVE = h(f"{MARKER} 0013 04")
NOTIFICATION_SHUTDOWN = h(f"""
    {MARKER} 0021 03
    06 02                       # Cease / Administrative Shutdown (RFC 4486)
    0b 6d61696e74656e616e6365   # RFC 9003 shutdown communication: "maintenance"
""")
NOTIFICATION_HOLD = h(f"{MARKER} 0015 03 04 00")


def test_keepalive_golden() -> None:
    assert encode_keepalive() == KEEPALIVE
    msg_type, body = body_of(KEEPALIVE)
    assert decode_message(msg_type, body, DEFAULT_CONTEXT) == Keepalive()


def test_notification_golden_with_shutdown_communication() -> None:
    msg_type, body = body_of(NOTIFICATION_SHUTDOWN)
    decoded = decode_message(msg_type, body, DEFAULT_CONTEXT)
    assert decoded == Notification(6, 2, b"\x0bmaintenance")
    assert isinstance(decoded, Notification)
    assert decoded.shutdown_message() == "maintenance"
    assert encode_notification(decoded) == NOTIFICATION_SHUTDOWN


def test_notification_golden_hold_timer_expired() -> None:
    msg_type, body = body_of(NOTIFICATION_HOLD)
    decoded = decode_message(msg_type, body, DEFAULT_CONTEXT)
    assert decoded == Notification(4, 0)
    assert isinstance(decoded, Notification)
    assert decoded.shutdown_message() is None
    assert encode_notification(decoded) == NOTIFICATION_HOLD


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        (f"{MARKER} 0017 05 0001 00 01", RouteRefresh(IPV4_UNICAST)),
        (f"{MARKER} 0017 05 0002 01 01", RouteRefresh(IPV6_UNICAST, RouteRefreshSubtype.BEGIN)),
        (f"{MARKER} 0017 05 0001 02 01", RouteRefresh(IPV4_UNICAST, RouteRefreshSubtype.END)),
    ],
)
def test_route_refresh_golden(wire: str, model: RouteRefresh) -> None:
    raw = h(wire)
    msg_type, body = body_of(raw)
    assert decode_message(msg_type, body, DEFAULT_CONTEXT) == model
    assert encode_route_refresh(model) == raw


def test_route_refresh_with_unknown_subtype_or_family_is_ignored() -> None:
    # RFC 7313 §5: other subtypes MUST be ignored; RFC 2918 §4: unknown AFI/SAFI are ignored.
    assert decode_route_refresh(h("0001 07 01")) == IgnoredRouteRefresh(1, 1, 7)
    assert decode_route_refresh(h("0019 00 46")) == IgnoredRouteRefresh(25, 70, 0)


def test_route_refresh_bad_length_is_rfc7313_invalid_message_length_with_the_message() -> None:
    with pytest.raises(BgpError) as info:
        decode_route_refresh(h("0001 01 01 00"))
    assert (info.value.code, info.value.subcode) == (7, 1)
    assert info.value.data == h(f"{MARKER} 0018 05 0001 01 01 00")


# -- Dispatch -----------------------------------------------------------------------------------


def test_decode_message_dispatches_open() -> None:
    msg_type, body = body_of(OPEN_FULL)
    assert decode_message(msg_type, body, DEFAULT_CONTEXT) == OPEN_FULL_MODEL


@pytest.mark.parametrize(
    ("msg_type", "body", "subcode", "data"),
    [
        pytest.param(4, b"\x00", 2, b"\x00\x14", id="keepalive-with-body"),
        pytest.param(9, b"", 3, b"\x09", id="unknown-type"),
        pytest.param(2, b"\x00\x00\x00", 2, b"\x00\x16", id="update-too-short"),
        pytest.param(3, b"\x06", 2, b"", id="notification-too-short"),
        pytest.param(2, bytes(4078), 2, b"\x10\x01", id="update-over-4096"),
    ],
)
def test_decode_message_header_errors(msg_type: int, body: bytes, subcode: int, data: bytes) -> None:
    with pytest.raises(BgpError) as info:
        decode_message(msg_type, body, DEFAULT_CONTEXT)
    assert (info.value.code, info.value.subcode) == (1, subcode)
    if data:
        assert info.value.data == data
