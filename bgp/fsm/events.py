"""What a Session tells its io layer (actions) and its owner (events), and why things happened.

Actions are the only way the sans-IO session touches the network: write bytes to a connection,
open a connection to the peer, close a connection. Events are for the speaker, the RIB and status:
state changes with an enumerated reason (GoBGP-style, bounded for metric labels), the negotiated
parameters when the session comes up, received UPDATEs and ROUTE-REFRESH requests, and the session
going down with what the RIB must do about the peer's routes (flush or keep as stale, RFC 4724).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bgp.codec.messages import Notification, RouteRefreshSubtype
from bgp.codec.update import Update
from bgp.fsm.negotiation import Negotiated
from bgp.types import Family


class State(enum.Enum):
    """RFC 4271 §8.2.2 session states; values are the RFC spelling, for display."""

    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"

    @property
    def rank(self) -> int:
        """How far the session got; the session shows its most advanced connection."""
        return _RANK[self]


_RANK = {
    State.IDLE: 0,
    State.CONNECT: 1,
    State.ACTIVE: 2,
    State.OPEN_SENT: 3,
    State.OPEN_CONFIRM: 4,
    State.ESTABLISHED: 5,
}


class TransitionReason(enum.Enum):
    """Why a transition happened (RFC 4271 §8.1 event names where one exists)."""

    MANUAL_START = "ManualStart"
    MANUAL_STOP = "ManualStop"
    IDLE_HOLD_TIMER_EXPIRED = "IdleHoldTimerExpires"  # automatic restart after damping (RFC 4271 §8.1.1)
    AUTOMATIC_START = "AutomaticStart"  # a held session's restart time elapsed (RFC 4271 §8.1.2 Event 3)
    CONNECT_RETRY_EXPIRED = "ConnectRetryTimerExpires"
    TCP_CR_ACKED = "TcpCrAcked"  # our outgoing connection succeeded
    TCP_CONNECTION_CONFIRMED = "TcpConnectionConfirmed"  # the peer's connection was accepted
    TCP_CONNECTION_FAILS = "TcpConnectionFails"  # connect attempt failed or connection lost
    OPEN_RECEIVED = "OpenReceived"
    KEEPALIVE_RECEIVED = "KeepaliveReceived"
    HOLD_TIMER_EXPIRED = "HoldTimerExpires"
    NOTIFICATION_RECEIVED = "NotificationReceived"
    HEADER_ERROR = "HeaderError"  # NOTIFICATION 1/x sent
    OPEN_ERROR = "OpenMessageError"  # NOTIFICATION 2/x sent
    UPDATE_ERROR = "UpdateMessageError"  # NOTIFICATION 3/x sent
    ROUTE_REFRESH_ERROR = "RouteRefreshMessageError"  # NOTIFICATION 7/x sent
    FSM_ERROR = "FsmError"  # NOTIFICATION 5/x sent (RFC 6608)
    COLLISION_RESOLVED = "CollisionResolved"  # RFC 4271 §6.8
    PEER_RESTARTED = "PeerRestarted"  # new OPEN from a GR peer while Established (RFC 4724 §4.2)
    BFD_DOWN = "BfdDown"
    ADMIN_RESET = "AdminReset"
    MAX_PREFIXES = "MaxPrefixes"
    CONFIGURATION_CHANGE = "ConfigurationChange"
    OUT_OF_RESOURCES = "OutOfResources"


class DownReason(enum.Enum):
    """Why the owner forces a session down (Session.force_down); each maps to a Cease subcode."""

    BFD_DOWN = "BfdDown"  # RFC 5882 §4.2 liveness hook, Cease/BFD Down (RFC 9384)
    ADMIN_RESET = "AdminReset"  # Cease/Administrative Reset (RFC 4486)
    MAX_PREFIXES = "MaxPrefixes"  # Cease/Maximum Number of Prefixes Reached (RFC 4486)
    CONFIGURATION_CHANGE = "ConfigurationChange"  # Cease/Other Configuration Change
    OUT_OF_RESOURCES = "OutOfResources"  # Cease/Out of Resources


# -- Actions for the io layer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the connection."""

    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a TCP connection to the peer; it supersedes (cancels) any attempt still pending."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection after writing what was sent before it."""

    conn: int


Action = Send | Connect | Close


# -- Events for the owner -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: State
    new: State
    reason: TransitionReason
    notification: Notification | None = None  # sent or received, when one caused the change
    detail: str = ""  # human-readable (socket error text, decode error message)


@dataclass(frozen=True, slots=True)
class Established:
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    update: Update  # RFC 7606 treat-as-withdraw results arrive here too, with update.errors set


@dataclass(frozen=True, slots=True)
class RouteRefreshRequested:
    """The peer asked for our routes again (NORMAL) or demarcates its own refresh (BoRR/EoRR, RFC 7313)."""

    family: Family
    subtype: RouteRefreshSubtype


@dataclass(frozen=True, slots=True)
class SessionDown:
    """An Established session ended; tells the RIB whether to keep the peer's routes as stale.

    `graceful_restart` is True when the peer negotiated graceful restart and the loss qualifies
    (RFC 4724 §4.2, RFC 8538 §4): the RIB marks routes of `stale_families` stale and deletes them
    after `restart_time` seconds unless the peer comes back and refreshes them. Otherwise it flushes.
    """

    reason: TransitionReason
    graceful_restart: bool
    notification_sent: Notification | None = None
    notification_received: Notification | None = None
    restart_time: int = 0
    stale_families: tuple[Family, ...] = ()
    detail: str = ""


Event = StateChanged | Established | UpdateReceived | RouteRefreshRequested | SessionDown
