"""The one error type the BGP codec raises, with its protocol meaning attached.

Every decode failure carries what RFC 4271 §6 says to send (NOTIFICATION code, subcode, data) and
what RFC 7606 says to do (reset the session, treat the UPDATE as a withdraw, discard the attribute).
Bytes from the network never raise anything else (tests/bgp/codec fuzzes every decoder).
"""

from __future__ import annotations

import enum


class NotificationCode(enum.IntEnum):
    """RFC 4271 §4.5 error codes (plus RFC 7313 ROUTE-REFRESH message error)."""

    MESSAGE_HEADER = 1
    OPEN_MESSAGE = 2
    UPDATE_MESSAGE = 3
    HOLD_TIMER_EXPIRED = 4
    FSM = 5
    CEASE = 6
    ROUTE_REFRESH_MESSAGE = 7


class HeaderSubcode(enum.IntEnum):
    CONNECTION_NOT_SYNCHRONIZED = 1
    BAD_MESSAGE_LENGTH = 2
    BAD_MESSAGE_TYPE = 3


class OpenSubcode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    BAD_PEER_AS = 2
    BAD_BGP_IDENTIFIER = 3
    UNSUPPORTED_OPTIONAL_PARAMETER = 4
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7  # RFC 5492
    ROLE_MISMATCH = 11  # RFC 9234


class UpdateSubcode(enum.IntEnum):
    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
    MISSING_WELL_KNOWN_ATTRIBUTE = 3
    ATTRIBUTE_FLAGS_ERROR = 4
    ATTRIBUTE_LENGTH_ERROR = 5
    INVALID_ORIGIN_ATTRIBUTE = 6
    INVALID_NEXT_HOP_ATTRIBUTE = 8
    OPTIONAL_ATTRIBUTE_ERROR = 9
    INVALID_NETWORK_FIELD = 10
    MALFORMED_AS_PATH = 11


class CeaseSubcode(enum.IntEnum):
    """RFC 4486."""

    MAX_PREFIXES_REACHED = 1
    ADMINISTRATIVE_SHUTDOWN = 2
    PEER_DECONFIGURED = 3
    ADMINISTRATIVE_RESET = 4
    CONNECTION_REJECTED = 5
    OTHER_CONFIGURATION_CHANGE = 6
    CONNECTION_COLLISION_RESOLUTION = 7
    OUT_OF_RESOURCES = 8
    HARD_RESET = 9  # RFC 8538
    BFD_DOWN = 10  # RFC 9384


class FsmSubcode(enum.IntEnum):
    """RFC 6608."""

    UNSPECIFIED = 0
    UNEXPECTED_IN_OPENSENT = 1
    UNEXPECTED_IN_OPENCONFIRM = 2
    UNEXPECTED_IN_ESTABLISHED = 3


class ErrorAction(enum.Enum):
    """RFC 7606 §2 approaches, strongest first."""

    SESSION_RESET = "session-reset"
    AFI_SAFI_DISABLE = "afi-safi-disable"
    TREAT_AS_WITHDRAW = "treat-as-withdraw"
    ATTRIBUTE_DISCARD = "attribute-discard"


class BgpError(Exception):
    """A protocol error: what to send in the NOTIFICATION and what RFC 7606 action applies."""

    def __init__(
        self,
        code: int,
        subcode: int,
        message: str,
        data: bytes = b"",
        action: ErrorAction = ErrorAction.SESSION_RESET,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.data = data
        self.action = action
        self.message = message

    def __repr__(self) -> str:
        return f"BgpError({self.code}/{self.subcode} {self.action.value}: {self.message})"


def header_error(subcode: HeaderSubcode, message: str, data: bytes = b"") -> BgpError:
    return BgpError(NotificationCode.MESSAGE_HEADER, subcode, message, data)


def open_error(subcode: OpenSubcode, message: str, data: bytes = b"") -> BgpError:
    return BgpError(NotificationCode.OPEN_MESSAGE, subcode, message, data)


def update_error(
    subcode: UpdateSubcode, message: str, data: bytes = b"", action: ErrorAction = ErrorAction.SESSION_RESET
) -> BgpError:
    return BgpError(NotificationCode.UPDATE_MESSAGE, subcode, message, data, action)
