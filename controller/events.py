"""The user-visible events of the agent core, and the sinks that publish them.

Owns: one frozen dataclass per event a user cares about (a session up or down, BFD up or down, a
failover, routes lost, rejected routes, max-prefix, a table write that failed or recovered, the
persist state, the end of the restart deferral, ...), the `EventSink` protocol, and the two sinks
every agent has: `LogSink` (the structured log line of controller/logs.py: event name, message and
fields, exactly as before this module existed, since tests and the demo parse them) and
`MetricsSink` (the Prometheus counters of controller/metrics.py). `Fanout` hands one event to
several sinks; the operator adds a Kubernetes Event sink the same way.

So one call site in the runtime (`events.emit(BfdDown(...))`) produces the log line, the metric and,
later, the Kubernetes Event; the runtime never formats a log line or names a metric itself.

Must not touch: runtime state, sessions, tables. Events are values; sinks only publish them. A sink
runs inside the runtime's event callbacks (a BFD Down is handled before the next task switch), so it
must be cheap and must not block: no I/O beyond the logging handler, no awaiting.

Field order is the order of the log line's key=value pairs; None values are left out of the line
(logs.event). Fields named in `_HIDDEN` are for metrics or for choosing the level/message only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from controller import logs
from controller.metrics import Metrics

# -- the event base ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One user-visible state change. Subclasses set `name`, `message` and `level`."""

    name: ClassVar[str] = ""
    message: ClassVar[str] = ""
    level: ClassVar[int] = logging.INFO
    _HIDDEN: ClassVar[frozenset[str]] = frozenset()

    def log_level(self) -> int | None:
        """The level of the log line; None: this event is not logged (metrics only)."""
        return self.level

    def log_message(self) -> str:
        return self.message

    def fields(self) -> dict[str, object]:
        hidden = self._HIDDEN
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in hidden}


@dataclass(frozen=True, slots=True)
class RouteServerEvent(Event):
    route_server: str


@dataclass(frozen=True, slots=True)
class PeerEvent(RouteServerEvent):
    peer: str


@dataclass(frozen=True, slots=True)
class TableEvent(RouteServerEvent):
    table: str


class EventSink(Protocol):
    """Where events go. Called on the event loop, synchronously, from the runtime's callbacks."""

    def emit(self, event: Event) -> None: ...


# -- route servers and peers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteServerStarted(RouteServerEvent):
    name = "route_server_started"
    message = "route server started"
    asn: int
    router_id: str
    listening: list[str]
    peers: int
    tables: int


@dataclass(frozen=True, slots=True)
class RouteServerStopped(RouteServerEvent):
    name = "route_server_stopped"
    message = "route server stopped"
    routes_kept: bool


@dataclass(frozen=True, slots=True)
class RouteServerRestart(RouteServerEvent):
    name = "route_server_restart"
    message = "speaker settings changed; restarting every session"


@dataclass(frozen=True, slots=True)
class SpeakerFailed(RouteServerEvent):
    name = "speaker_failed"
    message = "BGP speaker cannot start"
    level = logging.ERROR
    error: str
    retry_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PeerFailed(PeerEvent):
    """The speaker refused a peer's configuration; it is retried with backoff (level-triggered)."""

    name = "peer_failed"
    message = "peer cannot be configured"
    level = logging.ERROR
    error: str
    retry_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PeerConfigured(PeerEvent):
    """A peer whose configuration had failed is configured now."""

    name = "peer_configured"
    message = "peer configured after earlier failures"
    attempts: int


@dataclass(frozen=True, slots=True)
class PeerRemoved(PeerEvent):
    name = "peer_removed"
    message = "peer removed"


@dataclass(frozen=True, slots=True)
class BgpTransition(PeerEvent):
    """Every BGP state change (metrics; a DEBUG line). Up and down also have their own events."""

    name = "bgp_state"
    message = "BGP state changed"
    level = logging.DEBUG
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class BgpSessionUp(PeerEvent):
    name = "bgp_session_up"
    message = "BGP session established"
    address: str


@dataclass(frozen=True, slots=True)
class BgpSessionDown(PeerEvent):
    name = "bgp_session_down"
    message = "BGP session down"
    _HIDDEN = frozenset({"expected"})
    address: str
    state: str
    reason: str
    notification: str | None = None
    detail: str | None = None
    expected: bool = False  # the operator asked for it: not worth a warning

    def log_level(self) -> int:
        return logging.INFO if self.expected else logging.WARNING


@dataclass(frozen=True, slots=True)
class EndOfRibReceived(PeerEvent):
    name = "end_of_rib"
    message = "peer sent its whole table"
    level = logging.DEBUG
    family: str


@dataclass(frozen=True, slots=True)
class MaxPrefix(PeerEvent):
    name = "max_prefix"
    level = logging.WARNING
    action: str  # MaxPrefixEvent name, lower case
    count: int
    limit: int

    def log_message(self) -> str:
        return (
            "peer nears its prefix limit" if self.action == "threshold" else "peer reached its prefix limit"
        )


@dataclass(frozen=True, slots=True)
class ConnectionRefusedEvent(RouteServerEvent):
    """Counted every time; logged for the first connections of each address only (`first`)."""

    name = "connection_refused"
    message = "BGP connection from an address that is not a configured peer refused"
    _HIDDEN = frozenset({"first"})
    address: str
    first: bool = True

    def log_level(self) -> int | None:
        return logging.INFO if self.first else None


@dataclass(frozen=True, slots=True)
class RoutesRejected(PeerEvent):
    name = "routes_rejected"
    message = "routes rejected by import policy"
    routes: int
    reasons: dict[str, int]
    examples: list[str]


# -- BFD (RFC 5880, RFC 5882) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BfdUnavailable(PeerEvent):
    name = "bfd_unavailable"
    message = "peer wants BFD liveness but the agent runs without BFD; the hold timer protects it"
    level = logging.WARNING


@dataclass(frozen=True, slots=True)
class BfdFailed(PeerEvent):
    """The BFD service could not create the session; the request is retried with backoff."""

    name = "bfd_failed"
    message = "BFD session cannot be created"
    level = logging.ERROR
    error: str
    retry_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class BfdRequested(PeerEvent):
    name = "bfd_session_requested"
    message = "BFD session requested"
    address: str
    local: str | None
    min_tx_ms: int
    min_rx_ms: int
    multiplier: int
    state: str | None = None


@dataclass(frozen=True, slots=True)
class BfdUp(PeerEvent):
    name = "bfd_up"
    message = "BFD session up"
    _HIDDEN = frozenset({"reason"})
    address: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BfdDown(PeerEvent):
    """An Up session lost liveness (RFC 5882 §3.2); with BGP Established the session is torn down."""

    name = "bfd_down"
    level = logging.WARNING
    _HIDDEN = frozenset({"established"})
    address: str
    reason: str
    diagnostic: str
    established: bool = False

    def log_message(self) -> str:
        return "BFD down: tearing the BGP session down (RFC 5882)" if self.established else "BFD down"


@dataclass(frozen=True, slots=True)
class BfdStateChanged(PeerEvent):
    name = "bfd_state"
    message = "BFD state changed"
    level = logging.DEBUG
    state: str
    reason: str


# -- FIB ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FibChanged(RouteServerEvent):
    """Counts of one change set (metrics only: runs for every UPDATE)."""

    name = "fib_changed"
    added: int
    removed: int
    changed: int
    failovers: int

    def log_level(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Failover(RouteServerEvent):
    """Prefixes that moved from one next-hop set to another (one event per group)."""

    name = "failover"
    message = "routes moved to another next hop"
    trigger_peer: str | None
    old_nexthops: list[str]
    new_nexthops: list[str]
    prefixes: int
    example: str


@dataclass(frozen=True, slots=True)
class RoutesLost(Failover):
    """Prefixes whose last next hop left (`new_nexthops` empty)."""

    name = "routes_lost"
    message = "routes lost their last next hop"
    level = logging.WARNING


@dataclass(frozen=True, slots=True)
class MoreFailovers(RouteServerEvent):
    """The groups beyond the logged ones, summarised."""

    name = "failover"
    message = "more routes moved"
    groups: int
    prefixes: int


@dataclass(frozen=True, slots=True)
class PersistWindowEnded(RouteServerEvent):
    name = "persist_window_ended"
    message = "persisted routes not re-advertised were removed"
    routes: int


@dataclass(frozen=True, slots=True)
class PersistGraceEnded(RouteServerEvent):
    name = "persist_grace_ended"
    message = "routes of sessions that went down were removed (other sessions stayed up)"
    routes: int


_PERSIST_MESSAGES = {
    "Holding": "every session is down: holding the last routes",
    "Recovering": "sessions are back: persisted routes kept for the window",
    "Live": "routes are live again",
}


@dataclass(frozen=True, slots=True)
class PersistStateChanged(RouteServerEvent):
    name = "persist_state"
    state: str  # PersistState value
    routes: int

    def log_level(self) -> int:
        return logging.WARNING if self.state == "Holding" else logging.INFO

    def log_message(self) -> str:
        return _PERSIST_MESSAGES.get(self.state, "persist state changed")


@dataclass(frozen=True, slots=True)
class DeferralEnded(RouteServerEvent):
    """Route-selection deferral after a restart ended (RFC 4724 §4.1)."""

    name = "route_selection_deferral_ended"
    message = "adopted routes follow the FIB again"
    reason: str  # DeferralEnd value
    peer: str | None
    seconds: float
    routes: int
    not_awaited: list[str] | None = None

    def log_level(self) -> int:
        return logging.WARNING if self.reason == "TimerExpired" else logging.INFO


# -- tables --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutesAdopted(TableEvent):
    name = "routes_adopted"
    message = "keeping routes of a previous run for the persist window"
    routes: int
    seconds: int


@dataclass(frozen=True, slots=True)
class RoutesWithdrawn(TableEvent):
    name = "routes_withdrawn"
    message = "routes withdrawn from table"
    routes: int


@dataclass(frozen=True, slots=True)
class TableWritten(TableEvent):
    """Every write (metrics); the DEBUG line only for writes that changed something."""

    name = "table_written"
    message = "table written"
    level = logging.DEBUG
    _HIDDEN = frozenset({"seconds"})
    kind: str  # apply | resync | failover (BFD Down: groups moved to their backups, before the RIB)
    installed: int  # for a failover: the routes the rewritten groups carry
    removed: int
    messages: int
    seconds: float | None = None  # since the oldest change of the batch arrived

    def log_level(self) -> int | None:
        return logging.DEBUG if self.installed or self.removed else None


@dataclass(frozen=True, slots=True)
class TableRoutesRejected(TableEvent):
    name = "table_routes_rejected"
    message = "routes could not be installed"
    level = logging.WARNING
    routes: int
    reasons: dict[str, int]
    example: str


@dataclass(frozen=True, slots=True)
class TableWriteFailed(TableEvent):
    """Counted every time; logged when the error differs from the previous one (`first`)."""

    name = "table_write_failed"
    level = logging.ERROR
    _HIDDEN = frozenset({"what", "first"})
    error: str
    what: str = "write"
    first: bool = True

    def log_level(self) -> int | None:
        return logging.ERROR if self.first else None

    def log_message(self) -> str:
        return f"table {self.what} failed"


@dataclass(frozen=True, slots=True)
class TableRecovered(TableEvent):
    name = "table_recovered"
    message = "table writes work again"


# -- configuration ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigApplied(Event):
    name = "config_applied"
    message = "configuration applied"
    level = logging.DEBUG
    generation: int


@dataclass(frozen=True, slots=True)
class ConfigRefused(Event):
    name = "config_refused"
    _HIDDEN = frozenset({"error"})
    error: str

    def log_level(self) -> None:
        return None  # the source logs why (it knows the file); this counts it


@dataclass(frozen=True, slots=True)
class ObjectProblem(Event):
    """An object (or part of it) that is not applied: invalid, a reference that does not resolve, a
    Secret that is missing or may not be read. Emitted by the operator's source once per problem
    as it appears (standalone refuses the whole configuration instead)."""

    name = "config_problem"
    message = "object not applied"
    level = logging.WARNING
    kind: str
    object: str
    field: str
    reason: str  # a ProblemReason value
    problem: str  # the message; never a key (Secret values are never put in a problem)


# -- sinks ------------------------------------------------------------------------------------------------


class LogSink:
    """The structured log line of each event (controller/logs.py), on one logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def emit(self, event: Event) -> None:
        level = event.log_level()
        if level is None or not self.logger.isEnabledFor(level):
            return
        logs.event(self.logger, level, event.name, event.log_message(), **event.fields())


class MetricsSink:
    """The counters behind each event (controller/metrics.py); events without a metric are ignored."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._handlers: dict[type[Event], Callable[[Event], None]] = {
            BgpTransition: self._bgp_transition,
            BfdUp: self._bfd_up,
            BfdDown: self._bfd_down,
            BfdStateChanged: self._bfd_state,
            FibChanged: self._fib_changed,
            MaxPrefix: self._max_prefix,
            ConnectionRefusedEvent: self._refused,
            TableWritten: self._table_written,
            TableWriteFailed: self._table_failed,
            ConfigApplied: self._config_applied,
            ConfigRefused: self._config_refused,
            ObjectProblem: self._object_problem,
        }

    def emit(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _object_problem(self, e: Event) -> None:
        assert isinstance(e, ObjectProblem)
        self.metrics.config_problems.labels(e.kind, e.reason).inc()

    def _bgp_transition(self, e: Event) -> None:
        assert isinstance(e, BgpTransition)
        self.metrics.bgp_transition(e.route_server, e.peer, e.state, e.reason)

    def _bfd_up(self, e: Event) -> None:
        assert isinstance(e, BfdUp)
        self.metrics.bfd_transition(e.route_server, e.peer, "Up", e.reason)

    def _bfd_down(self, e: Event) -> None:
        assert isinstance(e, BfdDown)
        self.metrics.bfd_transition(e.route_server, e.peer, "Down", e.reason)
        self.metrics.bfd_failure(e.route_server, e.peer)

    def _bfd_state(self, e: Event) -> None:
        assert isinstance(e, BfdStateChanged)
        self.metrics.bfd_transition(e.route_server, e.peer, e.state, e.reason)

    def _fib_changed(self, e: Event) -> None:
        assert isinstance(e, FibChanged)
        m = self.metrics
        for kind, count in (("added", e.added), ("removed", e.removed), ("changed", e.changed)):
            if count:
                m.fib_changes.labels(e.route_server, kind).inc(count)
        if e.failovers:
            m.failovers.labels(e.route_server).inc(e.failovers)

    def _max_prefix(self, e: Event) -> None:
        assert isinstance(e, MaxPrefix)
        self.metrics.max_prefix_event(e.route_server, e.peer, e.action)

    def _refused(self, e: Event) -> None:
        assert isinstance(e, ConnectionRefusedEvent)
        self.metrics.connections_refused.labels(e.route_server).inc()

    def _table_written(self, e: Event) -> None:
        assert isinstance(e, TableWritten)
        m = self.metrics
        m.table_writes.labels(e.route_server, e.table, e.kind).inc()
        if e.seconds is not None:
            m.table_write_seconds.labels(e.route_server, e.table).observe(e.seconds)

    def _table_failed(self, e: Event) -> None:
        assert isinstance(e, TableWriteFailed)
        self.metrics.table_write_errors.labels(e.route_server, e.table).inc()

    def _config_applied(self, e: Event) -> None:
        self.metrics.config_reloads.labels("applied").inc()

    def _config_refused(self, e: Event) -> None:
        self.metrics.config_reloads.labels("refused").inc()


class Fanout:
    """Every event to every sink, in order (a failing sink is logged and skipped: events never raise)."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:
                logging.getLogger(__name__).exception("event sink %r failed on %s", sink, event.name)
