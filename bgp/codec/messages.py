"""BGP message header, framing, and the OPEN, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH messages.

Header (RFC 4271 §4.1)::

    | Marker (16 octets of 0xFF) | Length (2) | Type (1) |

OPEN (§4.2)::

    | Version (1) | My AS (2) | Hold Time (2) | BGP Identifier (4) | Opt Parm Len (1) | Opt Parms |

with optional parameters [type (1), length (1), value]; type 2 carries capabilities. RFC 9072
extended form: Opt Parm Len 255, then Non-Ext OP Type 255, a 2-octet length, and parameters with
2-octet lengths.

NOTIFICATION (§4.5): | Error code (1) | Error subcode (1) | Data |. KEEPALIVE (§4.4): header only.
ROUTE-REFRESH (RFC 2918, RFC 7313): | AFI (2) | Subtype (1) | SAFI (1) |.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bgp.codec.capabilities import Capability, FourOctetAs, decode_capability, encode_capability
from bgp.codec.errors import (
    BgpError,
    CeaseSubcode,
    HeaderSubcode,
    NotificationCode,
    OpenSubcode,
    header_error,
    open_error,
)
from bgp.types import AFI, AS_TRANS, SAFI, Family

MARKER = b"\xff" * 16
HEADER = struct.Struct("!16sHB")
HEADER_SIZE = 19
MAX_MESSAGE = 4096
MAX_EXTENDED_MESSAGE = 65535  # RFC 8654


class MessageType(enum.IntEnum):
    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5


_MIN_LENGTH = {
    MessageType.OPEN: 29,
    MessageType.UPDATE: 23,
    MessageType.NOTIFICATION: 21,
    MessageType.KEEPALIVE: 19,
    MessageType.ROUTE_REFRESH: 23,
}


@dataclass(frozen=True, slots=True)
class CodecContext:
    """What the session negotiated, which changes how bytes are read and written."""

    four_octet_as: bool = True
    extended_message: bool = False
    add_path_receive: frozenset[Family] = frozenset()
    add_path_send: frozenset[Family] = frozenset()
    extended_next_hop: frozenset[Family] = frozenset()  # NLRI families that may carry IPv6 next hops
    external: bool = True  # eBGP: LOCAL_PREF from the peer is discarded (RFC 7606 §7.5)

    @property
    def max_message(self) -> int:
        return MAX_EXTENDED_MESSAGE if self.extended_message else MAX_MESSAGE


DEFAULT_CONTEXT = CodecContext()
# Before OPENs are exchanged nothing is negotiated: 2-octet ASNs in paths, 4096-byte messages.
PRE_OPEN_CONTEXT = CodecContext(four_octet_as=False)


@dataclass(frozen=True, slots=True)
class Open:
    asn: int  # the real ASN (from the 4-octet AS capability when present)
    hold_time: int
    router_id: IPv4Address
    capabilities: tuple[Capability, ...] = ()
    version: int = 4
    unknown_parameters: tuple[tuple[int, bytes], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Keepalive:
    pass


@dataclass(frozen=True, slots=True)
class Notification:
    code: int
    subcode: int
    data: bytes = b""

    def shutdown_message(self) -> str | None:
        """RFC 9003 shutdown communication of a Cease/Administrative Shutdown or Reset, if any."""
        if self.code != NotificationCode.CEASE or self.subcode not in (
            CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
            CeaseSubcode.ADMINISTRATIVE_RESET,
        ):
            return None
        if not self.data or self.data[0] + 1 > len(self.data):
            return None
        return self.data[1 : 1 + self.data[0]].decode("utf-8", errors="replace")


class RouteRefreshSubtype(enum.IntEnum):
    NORMAL = 0
    BEGIN = 1  # BoRR, RFC 7313
    END = 2  # EoRR


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    family: Family
    subtype: int = RouteRefreshSubtype.NORMAL


@dataclass(frozen=True, slots=True)
class IgnoredRouteRefresh:
    """A ROUTE-REFRESH the receiver MUST ignore (log only): an AFI/SAFI we do not know (RFC 2918 §4)
    or a Message Subtype other than 0, 1, 2 (RFC 7313 §5). A separate type so that nobody acts on it."""

    afi: int
    safi: int
    subtype: int


def header(msg_type: int, body_length: int) -> bytes:
    return HEADER.pack(MARKER, HEADER_SIZE + body_length, msg_type)


# -- OPEN ---------------------------------------------------------------------------------------


def decode_open(body: bytes) -> Open:
    """OPEN body -> Open, with RFC 4271 §6.2 checks that need no configuration."""
    if len(body) < 10:
        raise header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH, "OPEN too short", struct.pack("!H", len(body) + 19)
        )
    version, my_as, hold, router_id, opt_len = struct.unpack_from("!BHHIB", body)
    if version != 4:
        raise open_error(OpenSubcode.UNSUPPORTED_VERSION, f"BGP version {version}", struct.pack("!H", 4))
    if hold in (1, 2):
        raise open_error(OpenSubcode.UNACCEPTABLE_HOLD_TIME, f"hold time {hold}")
    if router_id == 0:
        raise open_error(OpenSubcode.BAD_BGP_IDENTIFIER, "BGP identifier 0.0.0.0")
    offset = 10
    extended = False
    if opt_len == 255 and len(body) >= 13 and body[10] == 255:
        # RFC 9072: extended optional parameters length
        (opt_len,) = struct.unpack_from("!H", body, 11)
        offset = 13
        extended = True
    if offset + opt_len != len(body):
        raise header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, "OPEN optional parameters length mismatch")
    caps: list[Capability] = []
    unknown: list[tuple[int, bytes]] = []
    end = offset + opt_len
    while offset < end:
        if extended:
            if offset + 3 > end:
                raise open_error(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, "truncated optional parameter")
            ptype, plen = struct.unpack_from("!BH", body, offset)
            offset += 3
        else:
            if offset + 2 > end:
                raise open_error(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, "truncated optional parameter")
            ptype, plen = body[offset], body[offset + 1]
            offset += 2
        if offset + plen > end:
            raise open_error(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, "optional parameter overruns OPEN")
        value = body[offset : offset + plen]
        offset += plen
        if ptype == 2:
            caps.extend(_decode_capabilities(value))
        else:
            unknown.append((ptype, value))
    asn = my_as
    for cap in caps:
        if isinstance(cap, FourOctetAs):
            asn = cap.asn  # RFC 6793 §4.1: the capability's ASN replaces My Autonomous System
    if asn == 0:
        # RFC 7607 §2: AS 0 in an OPEN (My AS or the 4-octet AS capability) is a Bad Peer AS.
        raise open_error(OpenSubcode.BAD_PEER_AS, "peer AS 0")
    return Open(asn, hold, IPv4Address(router_id), tuple(caps), version, tuple(unknown))


def _decode_capabilities(value: bytes) -> list[Capability]:
    caps: list[Capability] = []
    offset = 0
    while offset < len(value):
        if offset + 2 > len(value):
            raise open_error(OpenSubcode.UNSUPPORTED_CAPABILITY, "truncated capability")
        code, clen = value[offset], value[offset + 1]
        if offset + 2 + clen > len(value):
            raise open_error(OpenSubcode.UNSUPPORTED_CAPABILITY, "capability overruns its parameter")
        caps.append(decode_capability(code, value[offset + 2 : offset + 2 + clen]))
        offset += 2 + clen
    return caps


def encode_open(message: Open) -> bytes:
    """OPEN with every capability in one optional parameter, then any other parameters; the RFC 9072
    extended form (2-octet lengths) only when the parameters do not fit the classic one."""
    caps = b"".join(encode_capability(c) for c in message.capabilities)
    params: list[tuple[int, bytes]] = [(2, caps)] if caps else []
    params.extend(message.unknown_parameters)
    my_as = message.asn if message.asn <= 0xFFFF else AS_TRANS
    classic = b"".join(bytes([ptype, len(value)]) + value for ptype, value in params if len(value) <= 255)
    if len(classic) <= 255 and all(len(value) <= 255 for _, value in params):
        opt = bytes([len(classic)]) + classic
    else:
        extended = b"".join(struct.pack("!BH", ptype, len(value)) + value for ptype, value in params)
        opt = struct.pack("!BBH", 255, 255, len(extended)) + extended
    body = struct.pack("!BHHI", message.version, my_as, message.hold_time, int(message.router_id)) + opt
    return header(MessageType.OPEN, len(body)) + body


# -- KEEPALIVE, NOTIFICATION, ROUTE-REFRESH -----------------------------------------------------

KEEPALIVE_BYTES = header(MessageType.KEEPALIVE, 0)


def encode_keepalive() -> bytes:
    return KEEPALIVE_BYTES


def encode_notification(message: Notification) -> bytes:
    body = bytes([message.code, message.subcode]) + message.data
    return header(MessageType.NOTIFICATION, len(body)) + body


def notification_from_error(error: BgpError) -> Notification:
    return Notification(error.code, error.subcode, error.data)


def decode_notification(body: bytes) -> Notification:
    if len(body) < 2:
        raise header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, "NOTIFICATION too short")
    return Notification(body[0], body[1], bytes(body[2:]))


def encode_route_refresh(message: RouteRefresh) -> bytes:
    body = struct.pack("!HBB", message.family.afi, message.subtype, message.family.safi)
    return header(MessageType.ROUTE_REFRESH, len(body)) + body


def decode_route_refresh(body: bytes) -> RouteRefresh | IgnoredRouteRefresh:
    if len(body) != 4:
        # RFC 7313 §5: Error Code 7 (ROUTE-REFRESH Message Error), subcode 1 (Invalid Message Length),
        # data = the complete ROUTE-REFRESH message received.
        message = header(MessageType.ROUTE_REFRESH, len(body)) + bytes(body)
        raise BgpError(NotificationCode.ROUTE_REFRESH_MESSAGE, 1, "ROUTE-REFRESH length", message)
    afi, subtype, safi = struct.unpack("!HBB", body)
    if subtype not in _ROUTE_REFRESH_SUBTYPES:
        return IgnoredRouteRefresh(afi, safi, subtype)  # RFC 7313 §5
    try:
        family = Family(AFI(afi), SAFI(safi))
    except ValueError:
        return IgnoredRouteRefresh(afi, safi, subtype)  # RFC 2918 §4
    return RouteRefresh(family, RouteRefreshSubtype(subtype))


_ROUTE_REFRESH_SUBTYPES = frozenset(int(s) for s in RouteRefreshSubtype)


# -- Framing ------------------------------------------------------------------------------------


class Framer:
    """Stream reassembly: feed bytes as they arrive, take complete (type, body) messages out."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pending(self) -> int:
        return len(self._buffer)

    def next_message(self) -> tuple[int, bytes] | None:
        """The next complete message, or None; BgpError on a bad header (RFC 4271 §6.1)."""
        buf = self._buffer
        if len(buf) < HEADER_SIZE:
            return None
        if buf[:16] != MARKER:
            raise header_error(HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, "bad marker")
        length, msg_type = struct.unpack_from("!HB", buf, 16)
        if length < HEADER_SIZE or length > self.max_message:
            raise header_error(
                HeaderSubcode.BAD_MESSAGE_LENGTH, f"length {length}", struct.pack("!H", length)
            )
        if msg_type not in _MIN_LENGTH:
            raise header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"type {msg_type}", bytes([msg_type]))
        if (
            length < _MIN_LENGTH[MessageType(msg_type)]
            or (msg_type == MessageType.KEEPALIVE and length != HEADER_SIZE)
            # RFC 8654 §3: the extended size never applies to OPEN (nor KEEPALIVE)
            or (msg_type == MessageType.OPEN and length > MAX_MESSAGE)
        ):
            raise header_error(
                HeaderSubcode.BAD_MESSAGE_LENGTH, f"length {length}", struct.pack("!H", length)
            )
        if len(buf) < length:
            return None
        body = bytes(buf[HEADER_SIZE:length])
        del buf[:length]
        return msg_type, body
