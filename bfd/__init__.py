"""BFD (RFC 5880/5881/5883): pure codec and session state machine, UDP transport and a threaded service.

Clients use the service (bfd.service): `BfdService().request(peer, local=..., interface=...,
profile=BfdProfile(...))` returns a `SessionHandle` to subscribe to `StateChange`s, read a
`SessionStatus`, change the profile and release. The pure cores (bfd.codec, bfd.auth, bfd.timers,
bfd.session, bfd.registry) are importable on their own and never touch sockets, clocks or threads.
"""

from bfd.auth import AuthConfig
from bfd.codec import AuthType, Diag, DropReason, State
from bfd.registry import PathKey
from bfd.service import (
    BfdProfile,
    BfdService,
    BfdServiceError,
    EventStream,
    ServiceStatus,
    SessionHandle,
    SessionStatus,
    Subscription,
    merge_profiles,
)
from bfd.session import StateChange, TransitionReason
from bfd.transport import MULTIHOP_PORT, SINGLE_HOP_PORT, Ports, TransportDrop

__all__ = [
    "MULTIHOP_PORT",
    "SINGLE_HOP_PORT",
    "AuthConfig",
    "AuthType",
    "BfdProfile",
    "BfdService",
    "BfdServiceError",
    "Diag",
    "DropReason",
    "EventStream",
    "PathKey",
    "Ports",
    "ServiceStatus",
    "SessionHandle",
    "SessionStatus",
    "State",
    "StateChange",
    "Subscription",
    "TransitionReason",
    "TransportDrop",
    "merge_profiles",
]
