"""BFD Control packet codec: golden packets, every decode drop reason, round-trips and fuzzing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfd.codec import (
    AuthSection,
    AuthType,
    BfdDecodeError,
    ControlPacket,
    Diag,
    DropReason,
    State,
    decode,
    encode,
)

FRR_DOWN = "20 40 03 18  00000001  00000000  000f4240  000493e0  0000c350"
BIRD_UP = "20 c0 05 18  5a4b3c2d  00000001  000186a0  00002710  00000000"

# Hand-built captures. Byte 0 = version 1 << 5 | diag, byte 1 = state << 6 | P F C A D M.
GOLDEN = [
    pytest.param(
        # An FRR bfdd session starting up: Down, slow 1 s TX while not Up, 300 ms RX, 50 ms echo.
        FRR_DOWN,
        ControlPacket(
            state=State.DOWN,
            my_discr=1,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=300_000,
            required_min_echo_rx_us=50_000,
        ),
        id="frr-down",
    ),
    pytest.param(
        # BIRD defaults once Up: multiplier 5, min TX 100 ms, min RX 10 ms, no echo.
        BIRD_UP,
        ControlPacket(
            state=State.UP,
            my_discr=0x5A4B3C2D,
            your_discr=1,
            detect_mult=5,
            desired_min_tx_us=100_000,
            required_min_rx_us=10_000,
        ),
        id="bird-up",
    ),
    pytest.param(
        # Up with Poll: a timer change on a live session (§6.5).
        "20 e0 03 18  00000002  00000003  000493e0  000493e0  00000000",
        ControlPacket(
            state=State.UP,
            my_discr=2,
            your_discr=3,
            poll=True,
            desired_min_tx_us=300_000,
            required_min_rx_us=300_000,
        ),
        id="up-poll",
    ),
    pytest.param(
        # Up with Final and the C bit (a control-plane-independent hardware peer).
        "20 d8 03 18  00000003  00000002  000493e0  000493e0  00000000",
        ControlPacket(
            state=State.UP,
            my_discr=3,
            your_discr=2,
            final=True,
            cpi=True,
            desired_min_tx_us=300_000,
            required_min_rx_us=300_000,
        ),
        id="up-final-cpi",
    ),
    pytest.param(
        # Administrative shutdown: AdminDown with diag 7.
        "27 00 03 18  00000004  00000005  000f4240  000493e0  00000000",
        ControlPacket(
            state=State.ADMIN_DOWN,
            my_discr=4,
            your_discr=5,
            diag=Diag.ADMINISTRATIVELY_DOWN,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=300_000,
        ),
        id="admin-down",
    ),
    pytest.param(
        # After a detection timeout: Down, diag 1, Your Discriminator forgotten.
        "21 40 03 18  00000004  00000000  000f4240  000493e0  00000000",
        ControlPacket(
            state=State.DOWN,
            my_discr=4,
            diag=Diag.CONTROL_DETECTION_TIME_EXPIRED,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=300_000,
        ),
        id="down-detect-expired",
    ),
    pytest.param(
        # Up asking for Demand mode (D bit).
        "20 c2 03 18  00000006  00000007  000f4240  000f4240  00000000",
        ControlPacket(
            state=State.UP,
            my_discr=6,
            your_discr=7,
            demand=True,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=1_000_000,
        ),
        id="up-demand",
    ),
    pytest.param(
        # Simple Password "secret", key id 1: Auth Len 9, Length 33.
        "20 44 03 21  00000008  00000000  000f4240  000493e0  00000000  01 09 01 736563726574",
        ControlPacket(
            state=State.DOWN,
            my_discr=8,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=300_000,
            auth=AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"secret"),
        ),
        id="simple-password",
    ),
    pytest.param(
        # Meticulous Keyed SHA1 section layout (the digest is opaque to the codec).
        "20 c4 03 34  00000009  0000000a  000493e0  000493e0  00000000  05 1c 02 00 deadbeef" + " 11" * 20,
        ControlPacket(
            state=State.UP,
            my_discr=9,
            your_discr=10,
            desired_min_tx_us=300_000,
            required_min_rx_us=300_000,
            auth=AuthSection(AuthType.METICULOUS_KEYED_SHA1, 2, b"\x11" * 20, 0xDEADBEEF),
        ),
        id="meticulous-sha1",
    ),
    pytest.param(
        # Keyed MD5 section layout.
        "20 44 03 30  0000000b  00000000  000f4240  000493e0  00000000  02 18 07 00 00000001" + " ab" * 16,
        ControlPacket(
            state=State.DOWN,
            my_discr=11,
            desired_min_tx_us=1_000_000,
            required_min_rx_us=300_000,
            auth=AuthSection(AuthType.KEYED_MD5, 7, b"\xab" * 16, 1),
        ),
        id="keyed-md5",
    ),
]


def _bytes(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


@pytest.mark.parametrize(("wire", "packet"), GOLDEN)
def test_golden_packet_decodes_and_encodes(wire: str, packet: ControlPacket) -> None:
    data = _bytes(wire)
    decoded = decode(data)
    assert decoded == packet
    assert decoded.raw == data
    assert encode(packet) == data


def test_reserved_diag_is_carried_not_refused() -> None:
    data = bytearray(_bytes(FRR_DOWN))
    data[0] = 0x20 | 17
    assert decode(bytes(data)).diag == 17


def test_bytes_after_length_are_ignored() -> None:
    data = _bytes(BIRD_UP) + b"\x00\x01\x02"
    packet = decode(data)
    assert packet.raw == data[:24]
    assert encode(packet) == data[:24]


def _valid() -> bytearray:
    return bytearray(_bytes(BIRD_UP))


def _with_auth(section: bytes) -> bytearray:
    data = _valid()
    data[1] |= 0x04
    data += section
    data[3] = len(data)
    return data


DROPS = [
    pytest.param(b"", DropReason.TRUNCATED, id="empty"),
    pytest.param(b"\x20\xc0\x03", DropReason.TRUNCATED, id="three-bytes"),
    pytest.param(bytes([0x40]) + bytes(_valid()[1:]), DropReason.BAD_VERSION, id="version-2"),
    pytest.param(bytes([0x00]) + bytes(_valid()[1:]), DropReason.BAD_VERSION, id="version-0"),
    pytest.param(bytes(_valid()[:3]) + b"\x17" + bytes(_valid()[4:]), DropReason.BAD_LENGTH, id="length-23"),
    pytest.param(
        bytes(_valid()[:1]) + b"\xc4\x05\x19" + bytes(_valid()[4:]) + b"\x01",
        DropReason.BAD_LENGTH,
        id="auth-length-25",
    ),
    pytest.param(bytes(_valid()[:3]) + b"\x19" + bytes(_valid()[4:]), DropReason.LENGTH_EXCEEDS_PAYLOAD),
    pytest.param(bytes(_valid()[:20]), DropReason.LENGTH_EXCEEDS_PAYLOAD, id="short-payload"),
    pytest.param(bytes(_valid()[:2]) + b"\x00" + bytes(_valid()[3:]), DropReason.ZERO_DETECT_MULT),
    pytest.param(bytes(_valid()[:1]) + b"\xc1" + bytes(_valid()[2:]), DropReason.MULTIPOINT),
    pytest.param(bytes(_valid()[:4]) + bytes(4) + bytes(_valid()[8:]), DropReason.ZERO_MY_DISCRIMINATOR),
    pytest.param(
        bytes(_valid()[:8]) + bytes(4) + bytes(_valid()[12:]),
        DropReason.ZERO_YOUR_DISCRIMINATOR_NOT_DOWN,
        id="up-without-your-discr",
    ),
    pytest.param(
        bytes([0x20, 0x80]) + bytes(_valid()[2:8]) + bytes(4) + bytes(_valid()[12:]),
        DropReason.ZERO_YOUR_DISCRIMINATOR_NOT_DOWN,
        id="init-without-your-discr",
    ),
    pytest.param(bytes(_with_auth(b"\x01\x05\x01x")), DropReason.BAD_AUTH_LENGTH, id="auth-len-past-end"),
    pytest.param(bytes(_with_auth(b"\x01\x03\x01x")), DropReason.BAD_AUTH_LENGTH, id="auth-len-short"),
    pytest.param(bytes(_with_auth(b"\x01\x03\x01")), DropReason.BAD_AUTH_LENGTH, id="empty-password"),
    pytest.param(bytes(_with_auth(b"\x01\x04\x01xy")), DropReason.BAD_AUTH_LENGTH, id="bytes-after-auth"),
    pytest.param(bytes(_with_auth(b"\x01\x14\x01" + b"p" * 17)), DropReason.BAD_AUTH_LENGTH, id="long-pw"),
    pytest.param(
        bytes(_with_auth(b"\x02\x1c\x01\x00" + bytes(24))), DropReason.BAD_AUTH_LENGTH, id="md5-len-28"
    ),
    pytest.param(
        bytes(_with_auth(b"\x04\x18\x01\x00" + bytes(20))), DropReason.BAD_AUTH_LENGTH, id="sha1-len-24"
    ),
    pytest.param(bytes(_with_auth(b"\x06\x04\x01x")), DropReason.UNSUPPORTED_AUTH_TYPE, id="auth-type-6"),
    pytest.param(bytes(_with_auth(b"\x00\x04\x01x")), DropReason.UNSUPPORTED_AUTH_TYPE, id="auth-type-0"),
]


@pytest.mark.parametrize(("data", "reason"), DROPS)
def test_decode_discards_with_reason(data: bytes, reason: DropReason) -> None:
    with pytest.raises(BfdDecodeError) as info:
        decode(data)
    assert info.value.reason is reason


def test_checks_run_in_rfc_order() -> None:
    """§6.8.6: a packet broken in several ways is dropped for the earliest rule."""
    data = bytearray(_valid())
    data[0] = 0x40  # bad version (step 1)
    data[2] = 0  # zero multiplier (step 4)
    data[4:8] = bytes(4)  # zero My Discriminator (step 6)
    with pytest.raises(BfdDecodeError) as info:
        decode(bytes(data))
    assert info.value.reason is DropReason.BAD_VERSION
    data[0] = 0x20
    with pytest.raises(BfdDecodeError) as info:
        decode(bytes(data))
    assert info.value.reason is DropReason.ZERO_DETECT_MULT


def test_down_and_admin_down_may_have_zero_your_discriminator() -> None:
    for state in (State.DOWN, State.ADMIN_DOWN):
        assert decode(encode(ControlPacket(state=state, my_discr=1))).your_discr == 0


@pytest.mark.parametrize(
    "packet",
    [
        ControlPacket(state=State.UP, my_discr=1, your_discr=2, diag=32),
        ControlPacket(state=State.UP, my_discr=1, your_discr=2, detect_mult=256),
        ControlPacket(state=State.UP, my_discr=1 << 32, your_discr=2),
        ControlPacket(state=State.UP, my_discr=1, your_discr=2, desired_min_tx_us=-1),
        ControlPacket(state=State.DOWN, my_discr=1, auth=AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"")),
        ControlPacket(state=State.DOWN, my_discr=1, auth=AuthSection(AuthType.SIMPLE_PASSWORD, 256, b"x")),
        ControlPacket(state=State.DOWN, my_discr=1, auth=AuthSection(AuthType.KEYED_SHA1, 1, bytes(16))),
        ControlPacket(state=State.DOWN, my_discr=1, auth=AuthSection(AuthType.KEYED_MD5, 1, bytes(16), -1)),
    ],
)
def test_encode_refuses_values_that_do_not_fit(packet: ControlPacket) -> None:
    with pytest.raises(ValueError):
        encode(packet)


# ---- property tests ------------------------------------------------------------------------------

U32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def auth_sections(draw: st.DrawFn) -> AuthSection:
    auth_type = draw(st.sampled_from(AuthType))
    key_id = draw(st.integers(0, 255))
    if auth_type is AuthType.SIMPLE_PASSWORD:
        return AuthSection(auth_type, key_id, draw(st.binary(min_size=1, max_size=16)))
    size = 16 if auth_type in (AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5) else 20
    return AuthSection(auth_type, key_id, draw(st.binary(min_size=size, max_size=size)), draw(U32))


@st.composite
def control_packets(draw: st.DrawFn) -> ControlPacket:
    state = draw(st.sampled_from(State))
    low = 0 if state in (State.DOWN, State.ADMIN_DOWN) else 1
    return ControlPacket(
        state=state,
        my_discr=draw(st.integers(1, 0xFFFFFFFF)),
        your_discr=draw(st.integers(low, 0xFFFFFFFF)),
        diag=draw(st.integers(0, 31)),
        poll=draw(st.booleans()),
        final=draw(st.booleans()),
        cpi=draw(st.booleans()),
        demand=draw(st.booleans()),
        detect_mult=draw(st.integers(1, 255)),
        desired_min_tx_us=draw(U32),
        required_min_rx_us=draw(U32),
        required_min_echo_rx_us=draw(U32),
        auth=draw(st.none() | auth_sections()),
    )


@given(control_packets())
def test_encode_decode_round_trip(packet: ControlPacket) -> None:
    data = encode(packet)
    decoded = decode(data)
    assert decoded == packet
    assert decoded.raw == data
    assert len(data) == packet.length


def _assert_reencodes(decoded: ControlPacket) -> None:
    """What decodes re-encodes to the same bytes, apart from the ignored keyed-auth Reserved byte."""
    original = bytearray(decoded.raw)
    if decoded.auth is not None and decoded.auth.auth_type.keyed:
        original[27] = 0
    assert encode(decoded) == bytes(original)


@given(st.binary(max_size=80))
def test_fuzz_decode_raises_only_its_own_error(data: bytes) -> None:
    try:
        packet = decode(data)
    except BfdDecodeError as exc:
        assert isinstance(exc.reason, DropReason)
    else:
        _assert_reencodes(packet)


@given(control_packets(), st.data())
def test_fuzz_mutated_valid_packets(packet: ControlPacket, data: st.DataObject) -> None:
    wire = bytearray(encode(packet))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        decoded = decode(bytes(wire[:cut]))
    except BfdDecodeError:
        return
    _assert_reencodes(decoded)


def test_raw_is_not_part_of_equality() -> None:
    packet = ControlPacket(state=State.DOWN, my_discr=1)
    assert dataclasses.replace(packet, raw=b"x") == packet


def test_decode_accepts_memoryview_and_bytearray() -> None:
    data = _valid()
    assert decode(memoryview(data)) == decode(bytes(data)) == decode(data)
