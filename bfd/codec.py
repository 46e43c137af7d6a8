"""BFD Control packet codec (RFC 5880 §4) and the stateless part of reception checks (§6.8.6).

Wire format (RFC 5880 §4.1), network byte order::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       My Discriminator                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      Your Discriminator                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Desired Min TX Interval                    |  microseconds
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   Required Min RX Interval                    |  microseconds
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 Required Min Echo RX Interval                 |  microseconds
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |   Auth Type   |   Auth Len    |  Auth Key ID  |  ...          |  only if A is set
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Authentication sections (§4.2-§4.4), Auth Len counts the whole section:

    Simple Password (type 1):  Type, Len = 3 + n, Key ID, Password (n = 1..16 bytes)
    Keyed MD5 (2) / Meticulous Keyed MD5 (3):    Type, Len = 24, Key ID, Reserved,
                                                 Sequence Number (4), Digest (16)
    Keyed SHA1 (4) / Meticulous Keyed SHA1 (5):  Type, Len = 28, Key ID, Reserved,
                                                 Sequence Number (4), Hash (20)

`decode` runs the §6.8.6 checks that need nothing but the packet (steps 1-6 and 8) in the RFC's order
and raises `BfdDecodeError` with a `DropReason`; nothing else escapes for any input. Steps 7 and 9
(demultiplexing) live in `bfd.registry`, steps 10-12 and 21 (authentication, AdminDown) in
`bfd.session`. A structurally broken or unknown authentication section is refused here: such a packet
could never be accepted, only the counted reason differs from a strict step-12 placement.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

BFD_VERSION = 1
HEADER_LEN = 24  # §4.1 mandatory section
MIN_AUTH_PACKET_LEN = 26  # §6.8.6 step 2: minimum Length when the A bit is set
SIMPLE_PASSWORD_MAX = 16  # §4.2
MD5_AUTH_LEN = 24  # §4.3
SHA1_AUTH_LEN = 28  # §4.4
MD5_DIGEST_LEN = 16
SHA1_DIGEST_LEN = 20
_KEYED_PREFIX_LEN = 8  # Type, Len, Key ID, Reserved, Sequence Number

_HEADER = struct.Struct("!BBBBIIIII")
_KEYED_PREFIX = struct.Struct("!BBBBI")

_FLAG_POLL = 0x20
_FLAG_FINAL = 0x10
_FLAG_CPI = 0x08
_FLAG_AUTH = 0x04
_FLAG_DEMAND = 0x02
_FLAG_MULTIPOINT = 0x01

U32_MAX = 0xFFFFFFFF


class State(enum.IntEnum):
    """Session state, the Sta field (§4.1)."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diag(enum.IntEnum):
    """Diagnostic codes (§4.1); values 9-31 are reserved and stay plain ints when received."""

    NO_DIAGNOSTIC = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_SESSION_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


class AuthType(enum.IntEnum):
    """Authentication types (§4.1 Auth Type)."""

    SIMPLE_PASSWORD = 1
    KEYED_MD5 = 2
    METICULOUS_KEYED_MD5 = 3
    KEYED_SHA1 = 4
    METICULOUS_KEYED_SHA1 = 5

    @property
    def keyed(self) -> bool:
        """True for the digest types, which carry a sequence number (§4.3, §4.4)."""
        return self is not AuthType.SIMPLE_PASSWORD

    @property
    def meticulous(self) -> bool:
        """Meticulous types require a strictly increasing sequence number (§6.7.3, §6.7.4)."""
        return self in (AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1)

    @property
    def section_len(self) -> int | None:
        """The fixed Auth Len of the keyed types; None for Simple Password (variable)."""
        if self in (AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5):
            return MD5_AUTH_LEN
        if self in (AuthType.KEYED_SHA1, AuthType.METICULOUS_KEYED_SHA1):
            return SHA1_AUTH_LEN
        return None


class DropReason(enum.Enum):
    """Why a received packet was discarded; the value is a bounded metric label.

    Listed in the order the checks run: decode (§6.8.6 steps 1-6, 8), demultiplexing (steps 7, 9),
    session (TTL per RFC 5881 §5 / RFC 5883 §5, steps 10-12, 21).
    """

    TRUNCATED = "truncated"  # fewer bytes than the fields the checks read
    BAD_VERSION = "bad_version"  # step 1
    BAD_LENGTH = "bad_length"  # step 2: Length < 24 (A clear) or < 26 (A set)
    LENGTH_EXCEEDS_PAYLOAD = "length_exceeds_payload"  # step 3
    ZERO_DETECT_MULT = "zero_detect_mult"  # step 4
    MULTIPOINT = "multipoint"  # step 5
    ZERO_MY_DISCRIMINATOR = "zero_my_discriminator"  # step 6
    ZERO_YOUR_DISCRIMINATOR_NOT_DOWN = "zero_your_discriminator_not_down"  # step 8
    BAD_AUTH_LENGTH = "bad_auth_length"  # §4.2-4.4: Auth Len inconsistent with the type or Length
    UNSUPPORTED_AUTH_TYPE = "unsupported_auth_type"  # §4.1: Auth Type not one of 1-5
    UNKNOWN_YOUR_DISCRIMINATOR = "unknown_your_discriminator"  # step 7
    NO_SESSION_FOR_ADDRESS = "no_session_for_address"  # step 9
    ADDRESS_MISMATCH = "address_mismatch"  # step 7 found a session bound to another path
    BAD_TTL = "bad_ttl"  # RFC 5881 §5 (must be 255) / RFC 5883 §5 (configured minimum)
    AUTH_UNEXPECTED = "auth_unexpected"  # step 10: A set, no authentication configured
    AUTH_MISSING = "auth_missing"  # step 11: A clear, authentication configured
    AUTH_TYPE_MISMATCH = "auth_type_mismatch"  # §6.7.2-6.7.4: Auth Type is not the one in use
    AUTH_BAD_KEY_ID = "auth_bad_key_id"  # §6.7.2-6.7.4: no such key configured
    AUTH_BAD_LENGTH = "auth_bad_length"  # §6.7.2: Auth Len is not password length + 3
    AUTH_BAD_PASSWORD = "auth_bad_password"  # §6.7.2
    AUTH_BAD_SEQUENCE = "auth_bad_sequence"  # §6.7.3/§6.7.4 sequence number outside the window
    AUTH_BAD_DIGEST = "auth_bad_digest"  # §6.7.3/§6.7.4
    SESSION_ADMIN_DOWN = "session_admin_down"  # step 21: our session is AdminDown


class BfdDecodeError(Exception):
    """The only exception `decode` raises: the packet is discarded for `reason` (and counted)."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class AuthSection:
    """An authentication section (§4.2-§4.4).

    For Simple Password `data` is the password and `sequence` is 0; for the keyed types `data` is the
    digest (or, while signing, the key padded to the digest length).
    """

    auth_type: AuthType
    key_id: int
    data: bytes
    sequence: int = 0

    @property
    def auth_len(self) -> int:
        fixed = self.auth_type.section_len
        return fixed if fixed is not None else 3 + len(self.data)


@dataclasses.dataclass(frozen=True, slots=True)
class ControlPacket:
    """A BFD Control packet (§4.1). Intervals are microseconds.

    `raw` keeps the received bytes (the first Length of them) so authentication can digest exactly
    what arrived; it is left out of equality. The A bit is `auth is not None`; the M bit is never
    set (§6.8.6 step 5 discards it, §4.1 says it MUST be zero).
    """

    state: State
    my_discr: int
    your_discr: int = 0
    diag: int = Diag.NO_DIAGNOSTIC
    poll: bool = False
    final: bool = False
    cpi: bool = False
    demand: bool = False
    detect_mult: int = 3
    desired_min_tx_us: int = 1_000_000
    required_min_rx_us: int = 1_000_000
    required_min_echo_rx_us: int = 0
    auth: AuthSection | None = None
    raw: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    @property
    def length(self) -> int:
        return HEADER_LEN + (self.auth.auth_len if self.auth is not None else 0)


def encode(packet: ControlPacket) -> bytes:
    """Serialise `packet`; raises ValueError for values that do not fit their fields (our own bug)."""
    if not 0 <= packet.diag <= 31:
        raise ValueError(f"diag {packet.diag} does not fit 5 bits")
    if not 0 <= packet.detect_mult <= 255:
        raise ValueError(f"detect mult {packet.detect_mult} does not fit 8 bits")
    flags = int(packet.state) << 6
    flags |= _FLAG_POLL if packet.poll else 0
    flags |= _FLAG_FINAL if packet.final else 0
    flags |= _FLAG_CPI if packet.cpi else 0
    flags |= _FLAG_AUTH if packet.auth is not None else 0
    flags |= _FLAG_DEMAND if packet.demand else 0
    try:
        header = _HEADER.pack(
            (BFD_VERSION << 5) | packet.diag,
            flags,
            packet.detect_mult,
            packet.length,
            packet.my_discr,
            packet.your_discr,
            packet.desired_min_tx_us,
            packet.required_min_rx_us,
            packet.required_min_echo_rx_us,
        )
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    if packet.auth is None:
        return header
    return header + _encode_auth(packet.auth)


def _encode_auth(auth: AuthSection) -> bytes:
    if not 0 <= auth.key_id <= 255:
        raise ValueError(f"auth key id {auth.key_id} does not fit 8 bits")
    if auth.auth_type is AuthType.SIMPLE_PASSWORD:
        if not 1 <= len(auth.data) <= SIMPLE_PASSWORD_MAX:
            raise ValueError("simple password must be 1-16 bytes (RFC 5880 §4.2)")
        return bytes((auth.auth_type, auth.auth_len, auth.key_id)) + auth.data
    digest_len = auth.auth_len - _KEYED_PREFIX_LEN
    if len(auth.data) != digest_len:
        raise ValueError(f"{auth.auth_type.name} digest must be {digest_len} bytes")
    if not 0 <= auth.sequence <= U32_MAX:
        raise ValueError(f"sequence {auth.sequence} does not fit 32 bits")
    return _KEYED_PREFIX.pack(auth.auth_type, auth.auth_len, auth.key_id, 0, auth.sequence) + auth.data


def decode(data: bytes | bytearray | memoryview) -> ControlPacket:
    """Parse one UDP payload; raise `BfdDecodeError` for anything §6.8.6 discards (steps 1-6, 8)."""
    view = memoryview(data)
    if len(view) < 4:
        raise BfdDecodeError(DropReason.TRUNCATED, f"{len(view)} bytes")
    vers_diag, flags, detect_mult, length = view[0], view[1], view[2], view[3]
    if vers_diag >> 5 != BFD_VERSION:  # step 1
        raise BfdDecodeError(DropReason.BAD_VERSION, f"version {vers_diag >> 5}")
    has_auth = bool(flags & _FLAG_AUTH)
    if length < (MIN_AUTH_PACKET_LEN if has_auth else HEADER_LEN):  # step 2
        raise BfdDecodeError(DropReason.BAD_LENGTH, f"Length {length}, A={int(has_auth)}")
    if length > len(view):  # step 3
        raise BfdDecodeError(DropReason.LENGTH_EXCEEDS_PAYLOAD, f"Length {length} > payload {len(view)}")
    if detect_mult == 0:  # step 4
        raise BfdDecodeError(DropReason.ZERO_DETECT_MULT)
    if flags & _FLAG_MULTIPOINT:  # step 5
        raise BfdDecodeError(DropReason.MULTIPOINT)
    _, _, _, _, my_discr, your_discr, desired_tx, required_rx, echo_rx = _HEADER.unpack_from(view, 0)
    if my_discr == 0:  # step 6
        raise BfdDecodeError(DropReason.ZERO_MY_DISCRIMINATOR)
    state = State(flags >> 6)
    if your_discr == 0 and state not in (State.DOWN, State.ADMIN_DOWN):  # step 8
        raise BfdDecodeError(DropReason.ZERO_YOUR_DISCRIMINATOR_NOT_DOWN, f"state {state.name}")
    auth = _decode_auth(view, length) if has_auth else None
    return ControlPacket(
        state=state,
        my_discr=my_discr,
        your_discr=your_discr,
        diag=_diag(vers_diag & 0x1F),
        poll=bool(flags & _FLAG_POLL),
        final=bool(flags & _FLAG_FINAL),
        cpi=bool(flags & _FLAG_CPI),
        demand=bool(flags & _FLAG_DEMAND),
        detect_mult=detect_mult,
        desired_min_tx_us=desired_tx,
        required_min_rx_us=required_rx,
        required_min_echo_rx_us=echo_rx,
        auth=auth,
        raw=bytes(view[:length]),
    )


def _diag(value: int) -> int:
    try:
        return Diag(value)
    except ValueError:
        return value  # reserved codes are carried, not refused: §6.8.6 does not discard them


def _decode_auth(view: memoryview, length: int) -> AuthSection:
    """§4.2-§4.4; the section must fill the packet exactly (the digest covers all Length bytes)."""
    raw_type, auth_len = view[HEADER_LEN], view[HEADER_LEN + 1]
    if HEADER_LEN + auth_len != length:
        raise BfdDecodeError(DropReason.BAD_AUTH_LENGTH, f"Auth Len {auth_len} with Length {length}")
    try:
        auth_type = AuthType(raw_type)
    except ValueError:
        raise BfdDecodeError(DropReason.UNSUPPORTED_AUTH_TYPE, f"Auth Type {raw_type}") from None
    fixed = auth_type.section_len
    if fixed is None:
        if not 4 <= auth_len <= 3 + SIMPLE_PASSWORD_MAX:
            raise BfdDecodeError(DropReason.BAD_AUTH_LENGTH, f"simple password Auth Len {auth_len}")
        key_id = view[HEADER_LEN + 2]
        return AuthSection(auth_type, key_id, bytes(view[HEADER_LEN + 3 : length]))
    if auth_len != fixed:
        raise BfdDecodeError(DropReason.BAD_AUTH_LENGTH, f"{auth_type.name} Auth Len {auth_len}")
    _, _, key_id, _reserved, sequence = _KEYED_PREFIX.unpack_from(view, HEADER_LEN)
    digest = bytes(view[HEADER_LEN + _KEYED_PREFIX_LEN : length])
    return AuthSection(auth_type, key_id, digest, sequence)
