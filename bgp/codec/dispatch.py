"""Message dispatch: a framed (type, body) pair -> its model (RFC 4271 §4).

The Framer (bgp.codec.messages) has already checked the marker and the header's length and type; the
checks are repeated here so that decode_message is safe on any input on its own.
"""

from __future__ import annotations

import struct

from bgp.codec.errors import HeaderSubcode, header_error
from bgp.codec.messages import (
    HEADER_SIZE,
    MAX_MESSAGE,
    CodecContext,
    IgnoredRouteRefresh,
    Keepalive,
    MessageType,
    Notification,
    Open,
    RouteRefresh,
    decode_notification,
    decode_open,
    decode_route_refresh,
)
from bgp.codec.update import Update, decode_update
from bgp.types import PathAttributes

Message = Open | Update | Notification | Keepalive | RouteRefresh | IgnoredRouteRefresh

_KEEPALIVE = Keepalive()


def decode_message(
    msg_type: int, body: bytes, ctx: CodecContext, cache: dict[bytes, PathAttributes] | None = None
) -> Message:
    """Decode one message body; BgpError (with NOTIFICATION code/subcode and action) when malformed."""
    length = HEADER_SIZE + len(body)
    limit = MAX_MESSAGE if msg_type == MessageType.OPEN else ctx.max_message  # RFC 8654 §3
    if length > limit:
        raise header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH, f"length {length}", struct.pack(">H", length & 0xFFFF)
        )
    if msg_type == MessageType.UPDATE:
        return decode_update(body, ctx, cache)
    if msg_type == MessageType.KEEPALIVE:
        if body:
            # RFC 4271 §6.1: a KEEPALIVE is exactly 19 octets
            raise header_error(
                HeaderSubcode.BAD_MESSAGE_LENGTH, f"KEEPALIVE length {length}", struct.pack(">H", length)
            )
        return _KEEPALIVE
    if msg_type == MessageType.OPEN:
        return decode_open(body)
    if msg_type == MessageType.NOTIFICATION:
        return decode_notification(body)
    if msg_type == MessageType.ROUTE_REFRESH:
        return decode_route_refresh(body)
    raise header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"message type {msg_type}", bytes([msg_type & 0xFF]))
