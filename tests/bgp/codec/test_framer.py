"""Framer: stream reassembly and RFC 4271 §6.1 header checks (RFC 8654 for extended messages)."""

from __future__ import annotations

import pytest

from bgp.codec.errors import BgpError, HeaderSubcode
from bgp.codec.messages import (
    MAX_EXTENDED_MESSAGE,
    Framer,
    MessageType,
    Notification,
    encode_keepalive,
    encode_notification,
    header,
)
from bgp.codec.update import encode_end_of_rib
from bgp.types import IPV4_UNICAST, IPV6_UNICAST

KEEPALIVE = encode_keepalive()


def drain(framer: Framer) -> list[tuple[int, bytes]]:
    out = []
    while (message := framer.next_message()) is not None:
        out.append(message)
    return out


def test_messages_fed_one_byte_at_a_time_come_out_whole_and_in_order() -> None:
    stream = (
        KEEPALIVE
        + encode_notification(Notification(6, 2, b"\x03bye"))
        + encode_end_of_rib(IPV6_UNICAST)
        + encode_end_of_rib(IPV4_UNICAST)
    )
    framer = Framer()
    seen = []
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
        seen.extend(drain(framer))
    assert [t for t, _ in seen] == [4, 3, 2, 2]
    assert seen[1][1] == b"\x06\x02\x03bye"
    assert seen[2][1] == encode_end_of_rib(IPV6_UNICAST)[19:]
    assert seen[3][1] == b"\x00\x00\x00\x00"
    assert framer.pending() == 0


def test_partial_message_waits_for_the_rest() -> None:
    framer = Framer()
    framer.feed(KEEPALIVE[:18])
    assert framer.next_message() is None
    framer.feed(KEEPALIVE[18:] + KEEPALIVE[:5])
    assert framer.next_message() == (4, b"")
    assert framer.next_message() is None
    assert framer.pending() == 5


def test_many_messages_in_one_chunk() -> None:
    framer = Framer()
    framer.feed(KEEPALIVE * 100)
    assert drain(framer) == [(4, b"")] * 100


def expect_header_error(data: bytes, subcode: HeaderSubcode, max_message: int = 4096) -> BgpError:
    framer = Framer(max_message)
    framer.feed(data)
    with pytest.raises(BgpError) as info:
        framer.next_message()
    assert (info.value.code, info.value.subcode) == (1, subcode)
    return info.value


def test_bad_marker_is_connection_not_synchronized() -> None:
    expect_header_error(b"\xff" * 15 + b"\xfe" + b"\x00\x13\x04", HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED)


@pytest.mark.parametrize(
    ("length", "msg_type"),
    [
        (18, 4),  # shorter than a header
        (4097, 2),  # longer than 4096 without the extended message capability
        (20, 4),  # KEEPALIVE is exactly 19
        (28, 1),  # OPEN is at least 29
        (22, 2),  # UPDATE is at least 23
        (20, 3),  # NOTIFICATION is at least 21
        (22, 5),  # ROUTE-REFRESH is at least 23
    ],
)
def test_bad_length_carries_the_length_field(length: int, msg_type: int) -> None:
    error = expect_header_error(
        b"\xff" * 16 + length.to_bytes(2, "big") + bytes([msg_type]), HeaderSubcode.BAD_MESSAGE_LENGTH
    )
    assert error.data == length.to_bytes(2, "big")


@pytest.mark.parametrize("msg_type", [0, 6, 255])
def test_bad_type_carries_the_type(msg_type: int) -> None:
    error = expect_header_error(header(msg_type, 0), HeaderSubcode.BAD_MESSAGE_TYPE)
    assert error.data == bytes([msg_type])


def test_extended_message_size_is_accepted_only_when_negotiated() -> None:
    body = b"\x00\x00\x00\x00" + bytes(5000)
    big = header(MessageType.UPDATE, len(body)) + body
    framer = Framer(MAX_EXTENDED_MESSAGE)
    framer.feed(big)
    assert framer.next_message() == (MessageType.UPDATE, body)
    expect_header_error(big, HeaderSubcode.BAD_MESSAGE_LENGTH)


def test_open_larger_than_4096_is_refused_even_with_extended_messages() -> None:
    # RFC 8654 §3: the extended size does not apply to OPEN.
    expect_header_error(
        header(MessageType.OPEN, 5000), HeaderSubcode.BAD_MESSAGE_LENGTH, MAX_EXTENDED_MESSAGE
    )
