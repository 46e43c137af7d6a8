"""RFC 4271 §8 session state machine: bytes, events and an explicit `now` in; bytes, events, deadline out."""

from bgp.fsm.config import SessionConfig
from bgp.fsm.events import (
    Action,
    Close,
    Connect,
    DownReason,
    Established,
    Event,
    RouteRefreshRequested,
    Send,
    SessionDown,
    State,
    StateChanged,
    TransitionReason,
    UpdateReceived,
)
from bgp.fsm.negotiation import Negotiated, build_open, check_open, negotiate
from bgp.fsm.session import Session, shutdown_communication

__all__ = [
    "Action",
    "Close",
    "Connect",
    "DownReason",
    "Established",
    "Event",
    "Negotiated",
    "RouteRefreshRequested",
    "Send",
    "Session",
    "SessionConfig",
    "SessionDown",
    "State",
    "StateChanged",
    "TransitionReason",
    "UpdateReceived",
    "build_open",
    "check_open",
    "negotiate",
    "shutdown_communication",
]
