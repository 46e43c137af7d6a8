"""Kubernetes Events (events.k8s.io/v1) for the user-visible events of the agent core.

Owns: the mapping from controller/events.py event values to Events on the object a user looks at
(`describe`, pure), the Event body (`event_body`, pure), and `KubeEventSink`, the EventSink that
queues them and writes them off the event loop, rate-limited and aggregated into series the way
client-go's EventRecorder does.

May not touch: the runtime, the agent, kopf, the API objects themselves (it only creates and
patches Events). Every API call goes through controller/operator/kube.py `Kube.call`.

Which events become Kubernetes Events, and on which object:

* RouteServerPeer: BgpSessionUp, BgpSessionDown (Warning unless the operator asked for it),
  BfdUp, BfdDown, BfdFailed, BfdUnavailable, MaxPrefix (threshold: MaxPrefixesThreshold; exceeded,
  rejected, teardown: MaxPrefixesReached), RoutesRejected (one Event per batch with the count and
  the reasons; never one per prefix), PeerFailed, PeerConfigured.
* RouteServer: RouteServerStarted, RouteServerStopped, RouteServerRestart, SpeakerFailed,
  Failover, RoutesLost, MoreFailovers, PersistStateChanged, PersistWindowEnded,
  PersistGraceEnded, DeferralEnded.
* RouteTableAssociation: TableWriteFailed (every failure: repeats of one error become the
  series of one Event), TableRecovered, TableRoutesRejected, RoutesAdopted, RoutesWithdrawn.

Left out: the metrics-only events (FibChanged, ConfigRefused: `log_level()` None); the DEBUG-level
per-transition events (BgpTransition, BfdStateChanged, EndOfRibReceived, TableWritten,
ConfigApplied), which run for every state change or write and would flood the API server with
what the session objects and metrics already show; BfdRequested (a configuration echo, the
session status shows it); PeerRemoved (the object is going away, an Event on it is never seen);
ConnectionRefusedEvent (triggered by any host on the network, one per source address: a remote
party could fill the Event store; the log line and metric cover it).

Objects of our API are cluster-scoped, so Events go into one fixed namespace. The API server
accepts Events about cluster-scoped objects only in "default" or "kube-system" (legacy Event
validation: an empty regarding.namespace must go with one of those; checked on a real API server:
"does not match event.namespace" elsewhere), hence the default, and the constructor refuses others.

Notes are built only from known fields of the event (addresses, states, counts, reason names,
error strings of the speaker/BFD/writers) and cut to NOTE_LIMIT bytes; events carry no keys or
passwords, and no free-form field of a configuration object is copied in.

The sink: `emit()` runs on the event loop inside the runtime's callbacks, so it only checks the
event type and puts (event, time) on a bounded queue (full: dropped and counted). The writer task
coalesces what is queued by (regarding, reason, note) while it waits for a token of the overall
token bucket (burst, per_second); an Event seen again within AGGREGATION_WINDOW becomes a merge
patch of the existing Event's series {count, lastObservedTime} instead of a new object. API errors
are counted and logged at most once per ERROR_LOG_INTERVAL; they never reach emit().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.events import (
    BfdDown,
    BfdFailed,
    BfdUnavailable,
    BfdUp,
    BgpSessionDown,
    BgpSessionUp,
    DeferralEnded,
    Event,
    Failover,
    MaxPrefix,
    MoreFailovers,
    ObjectProblem,
    PeerConfigured,
    PeerFailed,
    PersistGraceEnded,
    PersistStateChanged,
    PersistWindowEnded,
    RoutesAdopted,
    RouteServerRestart,
    RouteServerStarted,
    RouteServerStopped,
    RoutesLost,
    RoutesRejected,
    RoutesWithdrawn,
    SpeakerFailed,
    TableRecovered,
    TableRoutesRejected,
    TableWriteFailed,
)
from controller.operator.kube import API_VERSION, ASSOCIATIONS, KIND_OF_PLURAL, PEERS, ROUTE_SERVERS, Kube

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "routeserver.dev/agent"
NOTE_LIMIT = 1024  # bytes: the API server refuses longer notes
FIELD_LIMIT = 128  # reason, action, reportingInstance
NAME_LIMIT = 253
AGGREGATION_WINDOW = 600.0  # seconds: a repeat within this becomes a series update
ERROR_LOG_INTERVAL = 60.0
STOP_TIMEOUT = 5.0
SERIES_CACHE_SIZE = 4096  # aggregation keys remembered (least recently seen forgotten first)
EVENT_NAMESPACES = ("default", "kube-system")  # the only ones the API server accepts (see above)
NORMAL = "Normal"
WARNING = "Warning"

ROUTE_SERVER_KIND = KIND_OF_PLURAL[ROUTE_SERVERS]
PEER_KIND = KIND_OF_PLURAL[PEERS]
ASSOCIATION_KIND = KIND_OF_PLURAL[ASSOCIATIONS]


@dataclass(frozen=True, slots=True)
class KubeEventSpec:
    """What one Kubernetes Event says, before the time, names and uid are filled in."""

    kind: str  # of the regarding object
    name: str
    action: str
    reason: str
    type: str
    note: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Events with the same key are one series."""
        return (self.kind, self.name, self.reason, self.note)


# -- notes ---------------------------------------------------------------------------------------


def _clip(text: str, limit: int = NOTE_LIMIT) -> str:
    """`text` cut to `limit` UTF-8 bytes (with an ellipsis when cut)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


def _counts(reasons: dict[str, int]) -> str:
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{reason}={count}" for reason, count in ordered)


def _hops(nexthops: list[str]) -> str:
    return ", ".join(nexthops) if nexthops else "none"


def _retry(seconds: float | None) -> str:
    return f"; retrying in {seconds:g}s" if seconds is not None else ""


def _camel(value: str) -> str:
    """An enum value (Holding, TimerExpired, timer_expired) as a CamelCase reason part."""
    parts = [p for p in value.replace("-", "_").replace(" ", "_").split("_") if p]
    return "".join(p[0].upper() + p[1:] for p in parts if p.isalnum())


# -- the mapping ---------------------------------------------------------------------------------


def _peer(e: Any, action: str, reason: str, type_: str, note: str) -> KubeEventSpec:
    return KubeEventSpec(PEER_KIND, e.peer, action, reason, type_, _clip(note))


def _server(e: Any, action: str, reason: str, type_: str, note: str) -> KubeEventSpec:
    return KubeEventSpec(ROUTE_SERVER_KIND, e.route_server, action, reason, type_, _clip(note))


def _table(e: Any, action: str, reason: str, type_: str, note: str) -> KubeEventSpec:
    return KubeEventSpec(ASSOCIATION_KIND, e.table, action, reason, type_, _clip(note))


def _bgp_up(e: BgpSessionUp) -> KubeEventSpec:
    return _peer(e, "BgpSessionUp", "BGPSessionUp", NORMAL, f"BGP session with {e.address} established")


def _bgp_down(e: BgpSessionDown) -> KubeEventSpec:
    note = f"BGP session with {e.address} down in {e.state}: {e.reason}"
    if e.notification:
        note += f"; notification {e.notification}"
    if e.detail:
        note += f" ({e.detail})"
    return _peer(e, "BgpSessionDown", "BGPSessionDown", NORMAL if e.expected else WARNING, note)


def _bfd_up(e: BfdUp) -> KubeEventSpec:
    return _peer(e, "BfdUp", "BFDUp", NORMAL, f"BFD session with {e.address} up")


def _bfd_down(e: BfdDown) -> KubeEventSpec:
    note = f"BFD session with {e.address} down: {e.reason}, diagnostic {e.diagnostic}"
    if e.established:
        note += "; tearing the BGP session down (RFC 5882)"
    return _peer(e, "BfdDown", "BFDDown", WARNING, note)


def _bfd_failed(e: BfdFailed) -> KubeEventSpec:
    note = f"BFD session cannot be created: {e.error}{_retry(e.retry_seconds)}"
    return _peer(e, "BfdFailed", "BFDFailed", WARNING, note)


def _bfd_unavailable(e: BfdUnavailable) -> KubeEventSpec:
    return _peer(e, "BfdUnavailable", "BFDUnavailable", WARNING, e.message)


def _max_prefix(e: MaxPrefix) -> KubeEventSpec:
    reason = "MaxPrefixesThreshold" if e.action == "threshold" else "MaxPrefixesReached"
    note = f"{e.log_message()}: {e.count} of {e.limit} prefixes ({e.action})"
    return _peer(e, "MaxPrefix", reason, WARNING, note)


def _routes_rejected(e: RoutesRejected) -> KubeEventSpec:
    note = f"{e.routes} routes rejected by import policy: {_counts(e.reasons)}"
    if e.examples:
        note += f"; e.g. {', '.join(e.examples[:3])}"
    return _peer(e, "RoutesRejected", "RoutesRejected", WARNING, note)


def _peer_failed(e: PeerFailed) -> KubeEventSpec:
    note = f"peer cannot be configured: {e.error}{_retry(e.retry_seconds)}"
    return _peer(e, "PeerFailed", "PeerFailed", WARNING, note)


def _peer_configured(e: PeerConfigured) -> KubeEventSpec:
    note = f"peer configured after {e.attempts} attempts"
    return _peer(e, "PeerConfigured", "PeerConfigured", NORMAL, note)


def _started(e: RouteServerStarted) -> KubeEventSpec:
    listening = ", ".join(e.listening) or "nothing"
    note = (
        f"route server started: AS {e.asn}, router ID {e.router_id}, listening on {listening}, "
        f"{e.peers} peers, {e.tables} tables"
    )
    return _server(e, "RouteServerStarted", "Started", NORMAL, note)


def _stopped(e: RouteServerStopped) -> KubeEventSpec:
    note = "route server stopped; " + ("routes kept" if e.routes_kept else "routes withdrawn")
    return _server(e, "RouteServerStopped", "Stopped", NORMAL, note)


def _restart(e: RouteServerRestart) -> KubeEventSpec:
    return _server(e, "RouteServerRestart", "SpeakerRestart", NORMAL, e.message)


def _speaker_failed(e: SpeakerFailed) -> KubeEventSpec:
    note = f"BGP speaker cannot start: {e.error}{_retry(e.retry_seconds)}"
    return _server(e, "SpeakerFailed", "SpeakerFailed", WARNING, note)


def _failover(e: Failover) -> KubeEventSpec:
    note = f"{e.prefixes} prefixes moved from [{_hops(e.old_nexthops)}] to [{_hops(e.new_nexthops)}]"
    if e.trigger_peer:
        note += f" after peer {e.trigger_peer} changed"
    note += f", e.g. {e.example}"
    return _server(e, "Failover", "Failover", NORMAL, note)


def _routes_lost(e: RoutesLost) -> KubeEventSpec:
    note = f"{e.prefixes} prefixes lost their last next hop [{_hops(e.old_nexthops)}]"
    if e.trigger_peer:
        note += f" after peer {e.trigger_peer} changed"
    note += f", e.g. {e.example}"
    return _server(e, "RoutesLost", "RoutesLost", WARNING, note)


def _more_failovers(e: MoreFailovers) -> KubeEventSpec:
    note = f"{e.groups} more next-hop groups moved, {e.prefixes} prefixes"
    return _server(e, "Failover", "Failover", NORMAL, note)


def _persist_state(e: PersistStateChanged) -> KubeEventSpec:
    note = f"{e.log_message()} ({e.routes} routes)"
    type_ = WARNING if e.state == "Holding" else NORMAL
    return _server(e, "PersistStateChanged", "Persist" + _camel(e.state), type_, note)


def _persist_window(e: PersistWindowEnded) -> KubeEventSpec:
    note = f"persist window ended: {e.routes} persisted routes not re-advertised were removed"
    return _server(e, "PersistWindowEnded", "PersistWindowEnded", NORMAL, note)


def _persist_grace(e: PersistGraceEnded) -> KubeEventSpec:
    note = f"persist grace ended: {e.routes} routes of sessions that went down were removed"
    return _server(e, "PersistGraceEnded", "PersistGraceEnded", NORMAL, note)


def _deferral(e: DeferralEnded) -> KubeEventSpec:
    note = f"route-selection deferral ended ({e.reason}) after {e.seconds:.1f}s; {e.routes} adopted routes"
    if e.peer:
        note += f"; last peer {e.peer}"
    if e.not_awaited:
        note += f"; not awaited: {', '.join(e.not_awaited)}"
    type_ = WARNING if e.reason == "TimerExpired" else NORMAL
    return _server(e, "DeferralEnded", "DeferralEnded", type_, note)


def _write_failed(e: TableWriteFailed) -> KubeEventSpec:
    return _table(e, "TableWriteFailed", "TableWriteFailed", WARNING, f"table {e.what} failed: {e.error}")


def _recovered(e: TableRecovered) -> KubeEventSpec:
    return _table(e, "TableRecovered", "TableRecovered", NORMAL, e.message)


def _table_rejected(e: TableRoutesRejected) -> KubeEventSpec:
    note = f"{e.routes} routes could not be installed: {_counts(e.reasons)}; e.g. {e.example}"
    return _table(e, "TableRoutesRejected", "TableRoutesRejected", WARNING, note)


def _adopted(e: RoutesAdopted) -> KubeEventSpec:
    note = f"keeping {e.routes} routes of a previous run for the {e.seconds}s persist window"
    return _table(e, "RoutesAdopted", "RoutesAdopted", NORMAL, note)


def _withdrawn(e: RoutesWithdrawn) -> KubeEventSpec:
    return _table(
        e, "RoutesWithdrawn", "RoutesWithdrawn", NORMAL, f"{e.routes} routes withdrawn from the table"
    )


def _object_problem(e: ObjectProblem) -> KubeEventSpec:
    reason = "AuthSecretMissing" if e.reason == "SecretNotFound" else _camel(e.reason)
    return KubeEventSpec(e.kind, e.object, "ConfigProblem", reason, WARNING, _clip(f"{e.field}: {e.problem}"))


_DESCRIBERS: dict[type[Event], Callable[[Any], KubeEventSpec]] = {
    ObjectProblem: _object_problem,
    BgpSessionUp: _bgp_up,
    BgpSessionDown: _bgp_down,
    BfdUp: _bfd_up,
    BfdDown: _bfd_down,
    BfdFailed: _bfd_failed,
    BfdUnavailable: _bfd_unavailable,
    MaxPrefix: _max_prefix,
    RoutesRejected: _routes_rejected,
    PeerFailed: _peer_failed,
    PeerConfigured: _peer_configured,
    RouteServerStarted: _started,
    RouteServerStopped: _stopped,
    RouteServerRestart: _restart,
    SpeakerFailed: _speaker_failed,
    Failover: _failover,
    RoutesLost: _routes_lost,
    MoreFailovers: _more_failovers,
    PersistStateChanged: _persist_state,
    PersistWindowEnded: _persist_window,
    PersistGraceEnded: _persist_grace,
    DeferralEnded: _deferral,
    TableWriteFailed: _write_failed,
    TableRecovered: _recovered,
    TableRoutesRejected: _table_rejected,
    RoutesAdopted: _adopted,
    RoutesWithdrawn: _withdrawn,
}
MAPPED_EVENTS: frozenset[type[Event]] = frozenset(_DESCRIBERS)


def describe(event: Event) -> KubeEventSpec | None:
    """The Kubernetes Event for `event`; None for events that are not published as Events."""
    describer = _DESCRIBERS.get(type(event))
    return describer(event) if describer is not None else None


# -- the body --------------------------------------------------------------------------------------


def micro_time(moment: datetime) -> str:
    """A MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(regarding_name: str, nanoseconds: int) -> str:
    """`<name>.<hex nanoseconds>` as client-go names Events, within the name length limit."""
    suffix = f".{nanoseconds:x}"
    return regarding_name[: NAME_LIMIT - len(suffix)] + suffix


def event_body(
    spec: KubeEventSpec,
    *,
    node_name: str,
    namespace: str,
    moment: datetime,
    uid: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The events.k8s.io/v1 Event body for `spec`, first observed at `moment`.

    `name` defaults to `event_name` of the moment; a sink passes its own so that two Events on one
    object in the same microsecond do not collide.
    """
    if name is None:
        name = event_name(spec.name, int(moment.timestamp()) * 10**9 + moment.microsecond * 1000)
    regarding: dict[str, str] = {"apiVersion": API_VERSION, "kind": spec.kind, "name": spec.name}
    if uid:
        regarding["uid"] = uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "eventTime": micro_time(moment),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": node_name[:FIELD_LIMIT],
        "action": spec.action[:FIELD_LIMIT],
        "reason": spec.reason[:FIELD_LIMIT],
        "type": spec.type,
        "note": _clip(spec.note),
        "regarding": regarding,
    }


def series_patch(count: int, last_observed: datetime) -> dict[str, Any]:
    """The merge patch that records `count` occurrences of an existing Event."""
    return {"series": {"count": count, "lastObservedTime": micro_time(last_observed)}}


# -- rate limiting ---------------------------------------------------------------------------------


class TokenBucket:
    """`burst` tokens, refilled at `per_second`; `take()` waits for one."""

    def __init__(self, burst: int, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("burst must be >= 1 and per_second > 0")
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.per_second

    async def take(self) -> None:
        delay = self.wait_time()
        if delay > 0:
            await asyncio.sleep(delay)
        self._refill()
        self._tokens -= 1.0  # below zero if the sleep ended early: the next wait pays it back


# -- the sink --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """Occurrences of one key waiting for a write."""

    spec: KubeEventSpec
    first: datetime
    last: datetime
    occurrences: int


@dataclass(slots=True)
class _Series:
    """An Event already written: its name, how many occurrences it records, when last seen."""

    name: str
    count: int
    last_seen: float  # monotonic


class KubeEventSink:
    """An EventSink writing Kubernetes Events; `start()` on the running loop, `await stop()` at the end.

    Counters: `written` (API writes that succeeded, creates and series patches), `dropped` (events
    lost: queue full, or still queued or in flight when stop() gave up), `aggregated` (occurrences
    folded into an existing or pending Event instead of a new one), `failed` (API writes that failed).
    """

    def __init__(
        self,
        kube: Kube,
        node_name: str,
        namespace: str = "default",
        uid_of: Callable[[str, str], str | None] | None = None,
        *,
        queue_size: int = 1000,
        burst: int = 25,
        per_second: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if namespace not in EVENT_NAMESPACES:
            raise ValueError(
                f"Events about cluster-scoped objects must go into {' or '.join(EVENT_NAMESPACES)}, "
                f"not {namespace!r} (the API server refuses them elsewhere)"
            )
        self.kube = kube
        self.node_name = node_name
        self.namespace = namespace
        self.uid_of = uid_of
        self._clock = clock
        self._queue: asyncio.Queue[tuple[Event, datetime]] = asyncio.Queue(queue_size)
        self._bucket = TokenBucket(burst, per_second, clock)
        self._pending: OrderedDict[tuple[str, str, str, str], _Pending] = OrderedDict()
        self._series: OrderedDict[tuple[str, str, str, str], _Series] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._last_error_log: float | None = None
        self._last_nanoseconds = 0
        self._in_flight: _Pending | None = None
        self._idle = asyncio.Event()  # nothing queued, pending or being written
        self._idle.set()
        self.written = 0
        self.dropped = 0
        self.aggregated = 0
        self.failed = 0

    # -- the EventSink side (on the loop, never blocks) --

    def emit(self, event: Event) -> None:
        if type(event) not in _DESCRIBERS:
            return
        try:
            self._queue.put_nowait((event, datetime.now(UTC)))
        except asyncio.QueueFull:
            self.dropped += 1
        else:
            self._idle.clear()

    # -- lifecycle --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kube-events")

    async def stop(self) -> None:
        """Write what is queued (for at most STOP_TIMEOUT), then end the task; the rest is dropped."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._flush()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        lost = self._queue.qsize() + sum(p.occurrences for p in self._pending.values())
        if self._in_flight is not None:  # cancelled mid-write: the server may or may not have it
            lost += self._in_flight.occurrences
            self._in_flight = None
        self.dropped += lost
        self._pending.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _flush(self) -> None:
        while not (self._idle.is_set() and self._queue.empty()):
            await self._idle.wait()

    # -- the writer task --

    def _absorb_queued(self) -> None:
        """Move everything queued into the pending writes, merging repeats of one key."""
        while not self._queue.empty():
            self._take(*self._queue.get_nowait())

    def _take(self, event: Event, moment: datetime) -> None:
        try:
            spec = describe(event)
            if spec is not None:
                self._add_pending(spec, moment)
        except Exception:
            log.exception("cannot describe %s as a Kubernetes Event", event.name)

    def _add_pending(self, spec: KubeEventSpec, moment: datetime) -> None:
        pending = self._pending.get(spec.key)
        if pending is None:
            self._pending[spec.key] = _Pending(spec, moment, moment, 1)
        else:
            pending.occurrences += 1
            pending.last = max(pending.last, moment)
            self.aggregated += 1

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._queue.empty():
                    self._idle.set()
                self._take(*await self._queue.get())
            self._absorb_queued()
            if not self._pending:
                continue
            await self._bucket.take()
            self._absorb_queued()  # what arrived while waiting joins its series
            key, pending = self._pending.popitem(last=False)
            self._in_flight = pending
            await self._write(key, pending)
            self._in_flight = None

    def _known_series(self, key: tuple[str, str, str, str]) -> _Series | None:
        now = self._clock()
        series = self._series.get(key)
        if series is not None and now - series.last_seen > AGGREGATION_WINDOW:
            del self._series[key]
            return None
        return series

    def _remember(self, key: tuple[str, str, str, str], series: _Series) -> None:
        self._series[key] = series
        self._series.move_to_end(key)
        while len(self._series) > SERIES_CACHE_SIZE:
            self._series.popitem(last=False)

    async def _write(self, key: tuple[str, str, str, str], pending: _Pending) -> None:
        series = self._known_series(key)
        try:
            if series is not None:
                count = series.count + pending.occurrences
                try:
                    await self.kube.call(
                        "events",
                        self.kube.events.patch_namespaced_event,
                        series.name,
                        self.namespace,
                        series_patch(count, pending.last),
                        _content_type="application/merge-patch+json",
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    series = None  # expired on the server: start a new Event
                else:
                    self.aggregated += 1  # the first occurrence of the batch joined an existing Event
                    self._remember(key, _Series(series.name, count, self._clock()))
                    self.written += 1
                    return
            body = self._body(pending)
            created = await self.kube.call(
                "events", self.kube.events.create_namespaced_event, self.namespace, body
            )
            name = _created_name(created, body["metadata"]["name"])
            self._remember(key, _Series(name, pending.occurrences, self._clock()))
            self.written += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            self._log_error(pending.spec, exc)

    def _body(self, pending: _Pending) -> dict[str, Any]:
        spec = pending.spec
        uid = self._uid(spec)
        body = event_body(
            spec,
            node_name=self.node_name,
            namespace=self.namespace,
            moment=pending.first,
            uid=uid,
            name=event_name(spec.name, self._unique_nanoseconds()),
        )
        if pending.occurrences > 1:
            body.update(series_patch(pending.occurrences, pending.last))
        return body

    def _unique_nanoseconds(self) -> int:
        """Wall-clock nanoseconds, strictly increasing within this sink (Event names never repeat)."""
        self._last_nanoseconds = max(time.time_ns(), self._last_nanoseconds + 1)
        return self._last_nanoseconds

    def _uid(self, spec: KubeEventSpec) -> str | None:
        if self.uid_of is None:
            return None
        try:
            return self.uid_of(spec.kind, spec.name)
        except Exception:
            log.exception("uid lookup for %s %s failed", spec.kind, spec.name)
            return None

    def _log_error(self, spec: KubeEventSpec, exc: Exception) -> None:
        now = self._clock()
        if self._last_error_log is not None and now - self._last_error_log < ERROR_LOG_INTERVAL:
            return
        self._last_error_log = now
        detail = (
            f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else f"{type(exc).__name__}: {exc}"
        )
        log.warning(
            "cannot write Kubernetes Event %s on %s %s (%d failed so far; logged once a minute): %s",
            spec.reason,
            spec.kind,
            spec.name,
            self.failed,
            detail,
        )


def _created_name(created: Any, fallback: str) -> str:
    metadata = getattr(created, "metadata", None)
    if metadata is None and isinstance(created, dict):
        metadata = created.get("metadata")
    name = getattr(metadata, "name", None) if not isinstance(metadata, dict) else metadata.get("name")
    return name if isinstance(name, str) and name else fallback


__all__ = [
    "AGGREGATION_WINDOW",
    "EVENT_NAMESPACES",
    "MAPPED_EVENTS",
    "NOTE_LIMIT",
    "REPORTING_CONTROLLER",
    "KubeEventSink",
    "KubeEventSpec",
    "TokenBucket",
    "describe",
    "event_body",
    "event_name",
    "micro_time",
    "series_patch",
]
