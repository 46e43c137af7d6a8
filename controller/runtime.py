"""The agent core shared by the standalone mode and the operator: speakers, BFD, FIBs and table writers.

One asyncio process; the caller hands `Runtime.apply()` a `DesiredState` (controller/translate.py)
whenever the configuration changes, and the runtime reconciles: remove -> update -> create, leaving
whatever did not change alone (a peer whose settings are unchanged keeps its session).

Per route server (`RouteServerRuntime`): one `Speaker` (own ASN, router ID, listener, Loc-RIB), one
`Fib` (controller/fib.py), and per RouteTableAssociation one `TableRuntime` driving a writer
(controller/writers/netlink.py for node tables).

Data flow (DESIGN §5). The speaker's synchronous listener delivers every event inside the speaker's
own call stack, so nothing waits for a task switch:

- RoutesChanged: each RibChange becomes the prefix's next hops (ActivePassive: the best path's;
  ECMP: the equal-cost set up to maxPaths) -> `Fib.update_many` (only the prefixes that changed) ->
  each table's pending batch (filtered by its prefixFilter). A table's task writes pending changes
  as one batch; changes that arrive during a write are merged into the next one.
- PeerStateChanged: `Fib.sessions_changed` with the Established count (persist-routes: every
  session down holds the FIB; the recovery window runs on a loop timer at `Fib.next_deadline()`).
  The state change is published before the session's routes are withdrawn, which is the order the
  Fib needs to hold them: RoutesChanged of a peer that is no longer Established are paths that left
  with their session, which persist-routes holds for its grace (controller/fib.py).
- Restart (route-selection deferral, RFC 4724 §4.1 Selection_Deferral_Timer, like FRR's and BIRD's
  update-delay): a table that adopted routes of a previous run (persistRoutes) does not rewrite those
  prefixes while the sessions come back one by one, since the first peer to send its table may be the
  standby. Their FIB changes are deferred until every configured peer is Established and has sent
  End-of-RIB for the adopted families, then the converged FIB is written in one batch. Bounds: peers
  not Established after `establish_wait_seconds` are no longer waited for, and `max_seconds` ends
  it regardless. A session that goes down during the deferral ends it at once (an adopted route may
  point at the appliance that failed: failover is never deferred). Prefixes that were not adopted are
  written at once.
- Liveness (RFC 5882): for a peer with liveness BFD, a single-hop BFD session to the peer address
  from the BGP connection's local address is requested when the BGP session first becomes
  Established (only then is the local address known for sure; the peer must have come up once for
  anything to be at stake) and kept, across BGP flaps, until the peer is removed or its BFD settings
  or local address change. A BFD Up -> Down failure while BGP is Established calls
  `Speaker.peer_down(peer, BFD_DOWN)` in the same loop callback that delivered it: the session
  closes with Cease/BFD Down (RFC 9384), its routes leave the Loc-RIB, the FIB moves to the standby
  and the tables get the batch, all before the next task switch. A BFD session that never comes Up
  does not block BGP (the hold timer still protects it); a peer's AdminDown is not a failure
  (RFC 5882 §3.2).
- Every table is fully resynchronised from the FIB every `resync_interval` seconds (the writer
  re-reads the kernel, repairs drift, removes what we own but no longer want) and after any failed
  write (with backoff).

Stopping (`Runtime.stop`): a route server with persistRoutes enabled leaves its routes in the
tables (a restarted agent adopts them and keeps them for the persist window while sessions
return); otherwise its routes are withdrawn first, then every session is closed with Cease/
Administrative Shutdown. Graceful restart is only supported as the helper (receiving speaker), so
it does not change what a stopping agent does.

State changes a user cares about are logged as structured events (controller/logs.py) and counted
(controller/metrics.py); `status()` is the snapshot behind `/status`, `routeserver status` and the
state gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import gc
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from bfd.codec import Diag
from bfd.codec import State as BfdState
from bfd.service import BfdProfile, ServiceStatus, SessionStatus
from bfd.session import StateChange
from bgp.fsm.events import DownReason, State, TransitionReason
from bgp.rib.adj_rib_in import AdjRibIn
from bgp.rib.loc_rib import LocRib
from bgp.rib.path import Path
from bgp.rib.policy import ImportPolicy
from bgp.speaker import (
    ConnectionRefused,
    EndOfRib,
    PeerConfig,
    PeerStateChanged,
    PeerStatus,
    PrefixLimit,
    RoutesChanged,
    Speaker,
    SpeakerEvent,
)
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, IPAddress, key_to_prefix, prefix_key
from controller import logs
from controller.fib import Fib, PersistConfig, PersistState, SelectionMode, select_next_hops
from controller.metrics import Metrics
from controller.prefixes import prefix_from_key
from controller.status import (
    MAX_LISTED_REJECTIONS,
    AgentStatus,
    BfdView,
    ConfigView,
    PeerView,
    PersistView,
    RejectedRouteView,
    RouteServerView,
    RouteView,
    TableView,
    format_address,
)
from controller.translate import (
    BfdSettings,
    DesiredState,
    NodeTable,
    PeerDesired,
    RouteServerDesired,
    SelectionSettings,
    SpeakerSettings,
    TableDesired,
)
from controller.writers.base import Address, FibEntry, Prefix, Rejection, WriteReport
from controller.writers.netlink import DEFAULT_PROTOCOL, NodeTableWriter

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 30.0
OBSERVE_INTERVAL = 2.0
RETRY_MIN = 1.0
RETRY_MAX = 30.0
SPEAKER_RETRY = 10.0
CLOSE_TIMEOUT = 10.0
MAX_STATUS_ROUTES = 1000  # FIB and installed routes listed per route server / table in status
MAX_LOGGED_GROUPS = 5  # failover groups logged per change set (the rest are summarised)
# The cyclic collector's young-generation threshold while an agent runs. A route feed allocates about
# ten long-lived objects per prefix; at the default (700) the collector then runs thousands of times
# and rescans the growing route state, about a third of a 100k-prefix intake. Older generations keep
# their default ratios, so cyclic garbage is still collected, only in fewer, larger passes.
GC_YOUNG_THRESHOLD = 50_000

BFD_STATE_NAMES = {
    BfdState.ADMIN_DOWN: "AdminDown",
    BfdState.DOWN: "Down",
    BfdState.INIT: "Init",
    BfdState.UP: "Up",
}
GRACE_DETECTIONS = 2  # the persist grace covers this many of the slowest BFD peer's detection times


@dataclass(frozen=True, slots=True)
class RestartDeferral:
    """Route-selection deferral after a restart (module docstring; RFC 4724 §4.1).

    10 s bounds how long adopted routes ignore the FIB (peers that restart with us reconnect and
    send their tables within a second or two); peers still not Established after 5 s are taken for
    gone, as FRR's update-delay establish-wait does. `max_seconds` 0 disables the deferral.
    """

    max_seconds: float = 10.0
    establish_wait_seconds: float = 5.0


class DeferralEnd(enum.Enum):
    CONVERGED = "Converged"  # every awaited peer Established and sent End-of-RIB
    TIMER_EXPIRED = "TimerExpired"  # max_seconds passed
    SESSION_DOWN = "SessionDown"  # a session went down: failover is not deferred
    STOPPED = "Stopped"


def persist_config(desired: RouteServerDesired) -> PersistConfig:
    """The FIB's persist settings: the grace covers GRACE_DETECTIONS of the slowest BFD peer's
    detection time (sessions one failure takes down are detected up to about one apart)."""
    persist = desired.persist
    grace = persist.grace_seconds
    for peer in desired.peers:
        bfd = peer.bfd
        if bfd is not None:
            detection = bfd.detect_multiplier * max(bfd.min_tx_ms, bfd.min_rx_ms) / 1000.0
            grace = max(grace, GRACE_DETECTIONS * detection)
    return persist if grace == persist.grace_seconds else replace(persist, grace_seconds=grace)


# Session ends the operator asked for are not worth a warning.
_EXPECTED_DOWN = frozenset(
    {TransitionReason.MANUAL_STOP, TransitionReason.CONFIGURATION_CHANGE, TransitionReason.ADMIN_RESET}
)


# -- the backends, as the runtime uses them ------------------------------------------------------


class SpeakerLike(Protocol):
    """What the runtime needs of bgp.speaker.Speaker (a fake implements it in unit tests)."""

    loc_rib: LocRib

    async def start(self) -> None: ...

    async def stop(self, message: str = "") -> None: ...

    def listening(self) -> list[tuple[IPAddress, int]]: ...

    async def add_peer(self, config: PeerConfig) -> None: ...

    async def update_peer(self, config: PeerConfig) -> None: ...

    async def remove_peer(self, peer_id: str) -> None: ...

    def peer_down(self, peer_id: str, reason: DownReason = ..., graceful: bool = ...) -> None: ...

    def add_listener(self, callback: Callable[[SpeakerEvent], None]) -> Callable[[], None]: ...

    def set_route_selection(self, max_paths: int, always_compare_med: bool = ...) -> None: ...

    def status(self, peer_id: str) -> PeerStatus: ...

    def adj_rib_in(self, peer_id: str) -> AdjRibIn | None: ...


class TableWriter(Protocol):
    """A route table target: controller.writers.netlink.NodeTableWriter's public API."""

    async def start(self) -> WriteReport: ...

    async def apply(self, changes: Mapping[Prefix, FibEntry | None]) -> WriteReport: ...

    async def resync(self, desired: Mapping[Prefix, FibEntry]) -> WriteReport: ...

    async def withdraw_all(self) -> WriteReport: ...

    def installed(self) -> Mapping[Prefix, tuple[Address, ...]]: ...

    async def close(self) -> None: ...


class BfdHandleLike(Protocol):
    """bfd.service.SessionHandle as the runtime uses it."""

    def subscribe(
        self,
        callback: Callable[[StateChange], object],
        loop: asyncio.AbstractEventLoop | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> object: ...

    def release(self) -> None: ...


class BfdServiceLike(Protocol):
    """bfd.service.BfdService as the runtime uses it (thread-safe, blocking round trips)."""

    @property
    def running(self) -> bool: ...

    def request(
        self,
        peer: IPAddress,
        *,
        local: IPAddress | None = None,
        interface: str | None = None,
        profile: BfdProfile | None = None,
    ) -> BfdHandleLike: ...

    def status(self) -> ServiceStatus: ...


SpeakerFactory = Callable[[SpeakerSettings, SelectionSettings], SpeakerLike]
WriterFactory = Callable[[TableDesired], TableWriter]


class UnsupportedTargetError(Exception):
    """No writer exists for this kind of table in this agent."""


def default_speaker_factory(settings: SpeakerSettings, selection: SelectionSettings) -> SpeakerLike:
    return Speaker(
        settings.asn,
        settings.router_id,
        settings.listen_addresses,
        settings.listen_port,
        max_paths=selection.rib_max_paths,
        always_compare_med=selection.always_compare_med,
    )


def node_writer_factory(table: TableDesired, protocol: int = DEFAULT_PROTOCOL) -> TableWriter:
    """Node tables get a NodeTableWriter; other targets need a writer this agent does not have.

    `protocol` is the rtnetlink protocol number that marks our routes (ownership, DESIGN §7.8).
    """
    target = table.target
    if isinstance(target, NodeTable):
        # The runtime resyncs every table from the FIB (the source of truth) on its own schedule; the
        # writer keeps its notification watcher but needs no periodic full pass of its own.
        return NodeTableWriter(target.table, metric=target.metric, protocol=protocol, resync_interval=None)
    raise UnsupportedTargetError(f"{target}: this agent has no writer for AWS route tables")


def bfd_profile(settings: BfdSettings) -> BfdProfile:
    return BfdProfile.from_ms(
        settings.min_tx_ms,
        settings.min_rx_ms,
        settings.detect_multiplier,
        auth=settings.auth,
        passive=settings.passive,
        multihop=settings.multihop,
    )


def next_hops(
    selection: SelectionSettings, best: Path | None, ecmp: Sequence[Path]
) -> tuple[IPv4Address | IPv6Address, ...]:
    """The FIB next hops for one prefix from its Loc-RIB best path and ECMP set."""
    if best is None or best.next_hop is None:
        return ()
    if selection.mode is SelectionMode.ACTIVE_PASSIVE:
        return (best.next_hop,)  # per prefix on every bulk intake: skip building the ECMP list
    hops = [p.next_hop for p in ecmp if p.next_hop is not None]
    return select_next_hops(selection.mode, best.next_hop, hops, selection.max_paths)


def session_local_address(speaker: SpeakerLike, peer_id: str) -> IPAddress | None:
    """Our address on the peer's Established TCP connection (where single-hop BFD must run from)."""
    if not isinstance(speaker, Speaker):
        return None
    try:
        driver = speaker.driver(peer_id)
    except KeyError:
        return None
    for conn in driver.connections():
        if conn.local is not None and not conn.closing:
            return conn.local[0]
    return None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _diag_name(diag: int) -> str:
    try:
        return _camel(Diag(diag).name)
    except ValueError:
        return str(diag)


# -- tables ---------------------------------------------------------------------------------------


class TableRuntime:
    """One RouteTableAssociation: a writer fed with FIB changes by its own task.

    `push` only records changes (latest wins per prefix) and wakes the task, so the speaker's event
    callback never waits on the kernel; the task writes everything pending as one batch.
    """

    def __init__(
        self,
        owner: RouteServerRuntime,
        desired: TableDesired,
        factory: WriterFactory,
        resync_interval: float,
    ) -> None:
        self.owner = owner
        self.desired = desired
        self.filter: ImportPolicy | None = desired.filter_policy()
        self.writer: TableWriter | None = None
        self._factory = factory
        self._resync_interval = resync_interval
        self._pending: dict[Prefix, FibEntry | None] = {}
        self._pending_since: float | None = None
        self._wake = asyncio.Event()
        self._resync_at: float | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.rejected: dict[Prefix, Rejection] = {}
        self.last_error: str | None = None
        self.last_sync_at: float | None = None
        self.last_write_at: float | None = None
        self.synced = False
        # Restart deferral (module docstring): the prefixes adopted at start while the owner defers
        # them (None: not deferring), their families, and those whose FIB changes were held back.
        self._adopted: frozenset[Prefix] | None = None
        self.adopted_families: frozenset[str] = frozenset()
        self._deferred: set[Prefix] = set()

    @property
    def name(self) -> str:
        return self.desired.name

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"table-{self.name}")

    def passes(self, prefix: Prefix) -> bool:
        return self.filter is None or self.filter.check_prefix(prefix_key(prefix)) is None

    def desired_routes(self) -> dict[Prefix, FibEntry]:
        return {
            prefix: FibEntry(prefix, hops)
            for prefix, hops in self.owner.fib.entries().items()
            if self.passes(prefix)
        }

    def _desired_hops(self) -> Mapping[Prefix, tuple[Address, ...]]:
        """What the table should hold, as prefix -> next hops (the FIB itself without a filter)."""
        entries = self.owner.fib.entries()
        if self.filter is None:
            return entries
        return {prefix: hops for prefix, hops in entries.items() if self.passes(prefix)}

    def push(self, changes: Mapping[Prefix, FibEntry | None]) -> None:
        if self.filter is None:
            added = bool(changes)
            self._pending.update(changes)  # latest wins per prefix; one C-level pass for a bulk feed
        else:
            added = False
            for prefix, entry in changes.items():
                if self.passes(prefix):
                    self._pending[prefix] = entry
                    added = True
        if added:
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._wake.set()

    def request_resync(self) -> None:
        self._resync_at = asyncio.get_running_loop().time()
        self._wake.set()

    def set_desired(self, desired: TableDesired) -> None:
        """A new prefix filter (the target is unchanged): resynchronise with it."""
        self.desired = desired
        self.filter = desired.filter_policy()
        self.request_resync()

    async def close(self, withdraw: bool) -> None:
        """Stop the task after the write in progress; withdraw our routes if asked; close the writer."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        writer = self.writer
        if writer is None:
            return
        try:
            if withdraw:
                report = await writer.withdraw_all()
                if report.removed:
                    logs.event(
                        log,
                        logging.INFO,
                        "routes_withdrawn",
                        "routes withdrawn from table",
                        route_server=self.owner.name,
                        table=self.name,
                        routes=report.removed,
                    )
        except Exception as exc:
            self._failed(exc, "withdraw")
        finally:
            await writer.close()

    # -- the task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = RETRY_MIN
        while not self._closing:
            try:
                if self.writer is None:
                    await self._open()
                now = loop.time()
                if self._resync_at is not None and now >= self._resync_at:
                    await self._resync()
                elif self._pending:
                    await self._apply()
                else:
                    self._wake.clear()
                    timeout = None if self._resync_at is None else self._resync_at - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    continue
                backoff = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, "write")
                # The batch may be lost: a full resync after the backoff is the recovery.
                self._resync_at = loop.time() + backoff
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._factory(self.desired)
        await writer.start()
        self.writer = writer
        adopted = len(writer.installed())
        persist = self.owner.desired.persist
        if adopted and persist.enabled:
            # Routes of a previous run: keep them for the persist window while sessions come back
            # (re-advertised prefixes replace them once the deferral ends); the first resync removes
            # the rest.
            self._resync_at = loop.time() + persist.duration_seconds
            if self.owner.deferring:
                self._adopted = frozenset(writer.installed())
                self.adopted_families = frozenset(
                    str(IPV4_UNICAST if p.version == 4 else IPV6_UNICAST) for p in self._adopted
                )
            logs.event(
                log,
                logging.INFO,
                "routes_adopted",
                "keeping routes of a previous run for the persist window",
                route_server=self.owner.name,
                table=self.name,
                routes=adopted,
                seconds=persist.duration_seconds,
            )
        else:
            self._resync_at = loop.time()
        self.owner.check_deferral()

    def end_deferral(self) -> int:
        """The owner's deferral ended: write the FIB of the adopted prefixes it held back (one batch)."""
        adopted, self._adopted = self._adopted, None
        deferred, self._deferred = self._deferred, set()
        if adopted is None or not deferred:
            return 0
        entries = self.owner.fib.entries()
        self.push({p: FibEntry(p, entries[p]) if p in entries else None for p in deferred})
        return len(deferred)

    def _defer(self, batch: dict[Prefix, FibEntry | None]) -> dict[Prefix, FibEntry | None]:
        """Hold back the changes of adopted prefixes (end_deferral writes their FIB later)."""
        adopted = self._adopted
        assert adopted is not None
        held = [p for p in batch if p in adopted]
        if not held:
            return batch
        self._deferred.update(held)
        return {p: e for p, e in batch.items() if p not in adopted}

    async def _apply(self) -> None:
        assert self.writer is not None
        batch, self._pending = self._pending, {}
        since, self._pending_since = self._pending_since, None
        if self._adopted is not None:  # restart deferral: adopted prefixes wait (end_deferral)
            batch = self._defer(batch)
            if not batch:
                return
        report = await self.writer.apply(batch)
        for prefix in batch:
            self.rejected.pop(prefix, None)
        self._record(report, "apply", since)

    async def _resync(self) -> None:
        assert self.writer is not None
        self._pending = {}
        since, self._pending_since = self._pending_since, None
        desired = self.desired_routes()
        if self._adopted is not None:
            # Restart deferral: adopted routes stay as installed; end_deferral writes the FIB's.
            self._deferred.update(p for p in self._adopted if p in desired)
            installed = self.writer.installed()
            desired.update({p: FibEntry(p, installed[p]) for p in self._adopted if p in installed})
        report = await self.writer.resync(desired)
        self.rejected = {}
        self._resync_at = asyncio.get_running_loop().time() + self._resync_interval
        self.last_sync_at = time.time()
        self.synced = True
        self._record(report, "resync", since)

    def _record(self, report: WriteReport, kind: str, since: float | None) -> None:
        metrics = self.owner.metrics
        metrics.table_writes.labels(self.owner.name, self.name, kind).inc()
        if since is not None:
            metrics.table_write_seconds.labels(self.owner.name, self.name).observe(time.monotonic() - since)
        self.last_write_at = time.time()
        if self.last_error is not None:
            logs.event(
                log,
                logging.INFO,
                "table_recovered",
                "table writes work again",
                route_server=self.owner.name,
                table=self.name,
            )
        self.last_error = None
        new = [r for r in report.rejected if self.rejected.get(r.prefix) != r]
        for rejection in report.rejected:
            self.rejected[rejection.prefix] = rejection
        if new:
            reasons: dict[str, int] = {}
            for r in new:
                reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
            logs.event(
                log,
                logging.WARNING,
                "table_routes_rejected",
                "routes could not be installed",
                route_server=self.owner.name,
                table=self.name,
                routes=len(new),
                reasons=reasons,
                example=f"{new[0].prefix}: {new[0].message}",
            )
        if report.installed or report.removed:
            logs.event(
                log,
                logging.DEBUG,
                "table_written",
                "table written",
                route_server=self.owner.name,
                table=self.name,
                kind=kind,
                installed=report.installed,
                removed=report.removed,
                messages=report.netlink_messages,
            )

    def _failed(self, exc: Exception, what: str) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.owner.metrics.table_write_errors.labels(self.owner.name, self.name).inc()
        if message != self.last_error:
            logs.event(
                log,
                logging.ERROR,
                "table_write_failed",
                f"table {what} failed",
                route_server=self.owner.name,
                table=self.name,
                error=message,
            )
        self.last_error = message

    # -- status -------------------------------------------------------------------------------------

    def view(self, max_routes: int = MAX_STATUS_ROUTES) -> TableView:
        """The table's status; up to `max_routes` installed routes listed (0: counts only)."""
        # Counts and one C-level dict comparison: this runs on the loop at every scrape, so nothing
        # per route is built here (a copy of a 100k-route table would block the loop for a long time).
        installed: Mapping[Prefix, tuple[Address, ...]] = (
            self.writer.installed() if self.writer is not None else {}
        )
        desired = self._desired_hops()
        table_id = getattr(self.writer, "table", None)
        reasons: dict[str, int] = {}
        for r in self.rejected.values():
            reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
        in_sync = (
            self.synced
            and self.last_error is None
            and not self._pending
            and len(installed) == len(desired)
            and installed == desired
        )
        return TableView(
            name=self.name,
            target=str(self.desired.target),
            table_id=table_id if isinstance(table_id, int) else None,
            routes_desired=len(desired),
            routes_installed=len(installed),
            routes_rejected=len(self.rejected),
            rejected_by_reason=reasons,
            in_sync=in_sync,
            installed=tuple(
                RouteView(str(p), tuple(str(h) for h in hops))
                for p, hops in _first_routes(installed, max_routes)
            ),
            rejected=tuple(
                RejectedRouteView(str(r.prefix), r.reason.value, r.message)
                for r in list(self.rejected.values())[:MAX_LISTED_REJECTIONS]
            ),
            last_sync_at=self.last_sync_at,
            last_write_at=self.last_write_at,
            last_error=self.last_error,
        )


def _route_order(item: tuple[Prefix, object]) -> tuple[int, int, int]:
    prefix = item[0]
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def _first_routes(
    routes: Mapping[Prefix, tuple[Address, ...]], limit: int
) -> list[tuple[Prefix, tuple[Address, ...]]]:
    """The first `limit` routes in address order, without sorting a full table."""
    if limit <= 0:
        return []
    if len(routes) <= limit:
        return sorted(routes.items(), key=_route_order)
    return heapq.nsmallest(limit, routes.items(), key=_route_order)


# -- peers ------------------------------------------------------------------------------------------


@dataclass
class PeerRuntime:
    """What the runtime tracks about one peer beyond the speaker's own status."""

    desired: PeerDesired
    bgp_state: State = State.IDLE
    bfd_handle: BfdHandleLike | None = None
    bfd_path: tuple[IPAddress, IPAddress | None, BfdSettings] | None = None  # peer, local, settings
    bfd_generation: int = 0
    bfd_pending: bool = False
    bfd_state: BfdState | None = None
    bfd_last: StateChange | None = None
    bfd_failures: int = 0
    bfd_error: str | None = None
    rejected_logged: int = 0
    rejected_by_reason_logged: dict[str, int] = field(default_factory=dict)
    end_of_rib: set[str] = field(default_factory=set)  # families with End-of-RIB since Established

    @property
    def name(self) -> str:
        return self.desired.name


# -- route servers --------------------------------------------------------------------------------


class RouteServerRuntime:
    """One RouteServer: its speaker, FIB, peers and tables. Created and driven by `Runtime`."""

    def __init__(self, runtime: Runtime, desired: RouteServerDesired) -> None:
        self.runtime = runtime
        self.desired = desired
        self.metrics = runtime.metrics
        self.fib = Fib(persist_config(desired))
        self.speaker: SpeakerLike | None = None
        self.peers: dict[str, PeerRuntime] = {}
        self.tables: dict[str, TableRuntime] = {}
        self.error: str | None = None
        self.sessions_up = 0
        self.refused = 0
        self._refused_logged: set[IPAddress] = set()
        self._detach: Callable[[], None] | None = None
        self._persist_timer: asyncio.TimerHandle | None = None
        self._persist_state = self.fib.state
        self._speaker_retry_at = 0.0
        self.deferring = False  # restart deferral running (module docstring)
        self._deferral_started = 0.0
        self._deferral_timer: asyncio.TimerHandle | None = None
        self._establish_wait_over = False
        self._not_awaited: set[str] = set()

    @property
    def name(self) -> str:
        return self.desired.name

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._begin_deferral()
        for table in self.desired.tables:
            self._add_table(table)
        await self._start_speaker()
        self.check_deferral()

    async def _start_speaker(self) -> None:
        """A speaker with every desired peer; a bind failure is kept as `error` and retried later."""
        desired = self.desired
        speaker = self.runtime.speaker_factory(desired.speaker, desired.selection)
        detach = speaker.add_listener(self._on_event)
        try:
            await speaker.start()
        except OSError as exc:
            detach()
            with contextlib.suppress(Exception):
                await speaker.stop()
            self.error = f"cannot listen on port {desired.speaker.listen_port}: {exc}"
            self._speaker_retry_at = self.loop.time() + SPEAKER_RETRY
            logs.event(
                log,
                logging.ERROR,
                "speaker_failed",
                "BGP speaker cannot start",
                route_server=self.name,
                error=self.error,
            )
            return
        self.speaker, self._detach, self.error = speaker, detach, None
        for peer in desired.peers:
            await self._add_peer(peer)
        logs.event(
            log,
            logging.INFO,
            "route_server_started",
            "route server started",
            route_server=self.name,
            asn=desired.speaker.asn,
            router_id=str(desired.speaker.router_id),
            listening=[format_address(a, p) for a, p in speaker.listening()],
            peers=len(desired.peers),
            tables=len(desired.tables),
        )

    async def retry(self) -> None:
        if self.speaker is None and self.loop.time() >= self._speaker_retry_at:
            await self._start_speaker()

    async def _stop_speaker(self, *, keep_routes: bool, message: str) -> None:
        speaker = self.speaker
        if speaker is None:
            return
        for peer in list(self.peers.values()):
            self._release_bfd(peer)
        if keep_routes and self._detach is not None:
            # Nothing the closing sessions withdraw may reach the FIB (or the tables).
            self._detach()
            self._detach = None
        await speaker.stop(message)
        if self._detach is not None:
            self._detach()
            self._detach = None
        self.speaker = None
        self.peers.clear()

    async def shutdown(self, *, keep_routes: bool, message: str = "") -> None:
        """Stop everything: routes withdrawn first (unless kept), then sessions closed."""
        if self._persist_timer is not None:
            self._persist_timer.cancel()
            self._persist_timer = None
        if self._detach is not None:
            self._detach()
            self._detach = None
        self._end_deferral(DeferralEnd.STOPPED)
        for table in list(self.tables.values()):
            await table.close(withdraw=not keep_routes)
        self.tables.clear()
        for name in list(self.peers):
            self.metrics.forget_peer(self.name, name)
        await self._stop_speaker(keep_routes=True, message=message)
        logs.event(
            log,
            logging.INFO,
            "route_server_stopped",
            "route server stopped",
            route_server=self.name,
            routes_kept=keep_routes,
        )

    # -- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, new: RouteServerDesired) -> None:
        """Move to `new`: remove -> update -> create; unchanged peers and tables are not touched."""
        old = self.desired
        if new == old:
            if self.speaker is None:
                await self.retry()
            return
        if new.speaker != old.speaker:
            # ASN, router ID or listen sockets: every session must restart with the new identity.
            # Withdrawals flow through the FIB as usual (persist-routes holds them if enabled).
            logs.event(
                log,
                logging.INFO,
                "route_server_restart",
                "speaker settings changed; restarting every session",
                route_server=self.name,
            )
            await self._reconcile_tables(new)
            self.desired = new
            self.fib.persist = persist_config(new)
            await self._stop_speaker(keep_routes=False, message="configuration changed")
            await self._start_speaker()
            return
        # Removals first.
        for name in [n for n in self.peers if new.peer(n) is None]:
            await self._remove_peer(name)
        await self._reconcile_tables(new)
        self.desired = new
        persist = persist_config(new)
        if persist != self.fib.persist:
            self.fib.persist = persist
            self._arm_persist_timer()
        if new.selection != old.selection and self.speaker is not None:
            self.speaker.set_route_selection(new.selection.rib_max_paths, new.selection.always_compare_med)
            self._recompute_fib()
        if self.speaker is None:
            await self.retry()
            return
        for peer in new.peers:
            current = self.peers.get(peer.name)
            if current is None:
                await self._add_peer(peer)
            elif current.desired != peer:
                await self._update_peer(current, peer)

    async def _reconcile_tables(self, new: RouteServerDesired) -> None:
        for name, table in list(self.tables.items()):
            wanted = new.table(name)
            if wanted is None or wanted.target != table.desired.target:
                del self.tables[name]
                await table.close(withdraw=True)
        for wanted in new.tables:
            existing = self.tables.get(wanted.name)
            if existing is None:
                self._add_table(wanted)
            elif existing.desired != wanted:
                existing.set_desired(wanted)

    def _add_table(self, desired: TableDesired) -> None:
        table = TableRuntime(self, desired, self.runtime.writer_factory, self.runtime.resync_interval)
        self.tables[desired.name] = table
        table.start()

    async def _add_peer(self, desired: PeerDesired) -> None:
        assert self.speaker is not None
        self.peers[desired.name] = PeerRuntime(desired)
        try:
            await self.speaker.add_peer(desired.config)
        except ValueError as exc:
            del self.peers[desired.name]
            logs.event(
                log,
                logging.ERROR,
                "peer_failed",
                "peer cannot be configured",
                route_server=self.name,
                peer=desired.name,
                error=str(exc),
            )

    async def _update_peer(self, peer: PeerRuntime, desired: PeerDesired) -> None:
        assert self.speaker is not None
        old = peer.desired
        peer.desired = desired
        if desired.config != old.config:
            await self.speaker.update_peer(desired.config)
        if (
            desired.bfd != old.bfd
            or desired.liveness != old.liveness
            or desired.config.peer_address != old.config.peer_address
        ):
            self._release_bfd(peer)
            if peer.bgp_state is State.ESTABLISHED:
                self._ensure_bfd(peer)

    async def _remove_peer(self, name: str) -> None:
        peer = self.peers.pop(name)
        self._release_bfd(peer)
        if self.speaker is not None:
            with contextlib.suppress(KeyError):
                await self.speaker.remove_peer(name)
        self.metrics.forget_peer(self.name, name)
        # Popped first, so its routes were withdrawn (not held) before the count drops.
        self._count_sessions()
        self.check_deferral()
        logs.event(log, logging.INFO, "peer_removed", "peer removed", route_server=self.name, peer=name)

    # -- speaker events (synchronous, inside the speaker) -----------------------------------------

    def _on_event(self, event: SpeakerEvent) -> None:
        if isinstance(event, RoutesChanged):
            self._on_routes(event)
        elif isinstance(event, PeerStateChanged):
            self._on_peer_state(event)
        elif isinstance(event, PrefixLimit):
            self._on_prefix_limit(event)
        elif isinstance(event, ConnectionRefused):
            self._on_refused(event)
        elif isinstance(event, EndOfRib):
            peer = self.peers.get(event.peer_id)
            if peer is not None:
                peer.end_of_rib.add(str(event.family))
                self.check_deferral()
            logs.event(
                log,
                logging.DEBUG,
                "end_of_rib",
                "peer sent its whole table",
                route_server=self.name,
                peer=event.peer_id,
                family=str(event.family),
            )

    def _on_routes(self, event: RoutesChanged) -> None:
        selection = self.desired.selection
        items: list[tuple[Prefix, tuple[Address, ...]]] = []
        before: dict[Prefix, tuple[Address, ...]] = {}
        for change in event.changes:
            prefix = prefix_from_key(change.prefix)
            items.append((prefix, next_hops(selection, change.new_best, change.new_ecmp)))
            if change.old_best is not None:  # a new prefix had nothing before (_report_fib's default)
                before[prefix] = next_hops(selection, change.old_best, change.old_ecmp)
        peer = self.peers.get(event.peer_id)
        # Paths that left with their session (not withdrawn by UPDATE): persist grace, controller/fib.py.
        down_at = None
        if peer is not None and peer.bgp_state is not State.ESTABLISHED and self.fib.persist.enabled:
            down_at = self.loop.time()
        changes = self.fib.update_many(items, down_at)
        if down_at is not None:
            self._arm_persist_timer()
        if changes:
            self._report_fib(event.peer_id, changes, before)
            self._push(changes)

    def _report_fib(
        self,
        peer: str,
        changes: Mapping[Prefix, FibEntry | None],
        before: Mapping[Prefix, tuple[Address, ...]],
    ) -> None:
        moved: dict[tuple[tuple[Address, ...], tuple[Address, ...]], list[Prefix]] = {}
        added = removed = 0
        for prefix, entry in changes.items():
            old = before.get(prefix, ())
            new = entry.nexthops if entry is not None else ()
            if not old:
                added += 1
            elif not new:
                removed += 1
                moved.setdefault((old, new), []).append(prefix)
            elif old != new:
                moved.setdefault((old, new), []).append(prefix)
        changed = len(changes) - added - removed
        for kind, count in (("added", added), ("removed", removed), ("changed", changed)):
            if count:
                self.metrics.fib_changes.labels(self.name, kind).inc(count)
        failovers = sum(len(p) for (old, new), p in moved.items() if new)
        if failovers:
            self.metrics.failovers.labels(self.name).inc(failovers)
        groups = sorted(moved.items(), key=lambda item: -len(item[1]))
        for (old, new), prefixes in groups[:MAX_LOGGED_GROUPS]:
            logs.event(
                log,
                logging.INFO if new else logging.WARNING,
                "failover" if new else "routes_lost",
                "routes moved to another next hop" if new else "routes lost their last next hop",
                route_server=self.name,
                trigger_peer=peer or None,
                old_nexthops=[str(h) for h in old],
                new_nexthops=[str(h) for h in new],
                prefixes=len(prefixes),
                example=str(prefixes[0]),
            )
        if len(groups) > MAX_LOGGED_GROUPS:
            rest = sum(len(p) for _, p in groups[MAX_LOGGED_GROUPS:])
            logs.event(
                log,
                logging.INFO,
                "failover",
                "more routes moved",
                route_server=self.name,
                groups=len(groups) - MAX_LOGGED_GROUPS,
                prefixes=rest,
            )

    def _push(self, changes: Mapping[Prefix, FibEntry | None]) -> None:
        if not changes:
            return
        for table in self.tables.values():
            table.push(changes)

    def _recompute_fib(self) -> None:
        """Every prefix again (the selection mode or width changed); only real differences go out."""
        speaker = self.speaker
        if speaker is None:
            return
        selection = self.desired.selection
        items: list[tuple[Prefix, tuple[Address, ...]]] = []
        for key, ecmp in speaker.loc_rib.selected():
            items.append((prefix_from_key(key), next_hops(selection, ecmp[0] if ecmp else None, ecmp)))
        seen = {prefix for prefix, _ in items}
        items += [(prefix, ()) for prefix in self.fib.entries() if prefix not in seen]
        self._push(self.fib.update_many(items))

    def _on_peer_state(self, event: PeerStateChanged) -> None:
        peer = self.peers.get(event.peer_id)
        if peer is None:
            return
        peer.bgp_state = event.new
        self.metrics.bgp_transition(self.name, peer.name, event.new.value, event.reason.value)
        if event.new is State.ESTABLISHED:
            logs.event(
                log,
                logging.INFO,
                "bgp_session_up",
                "BGP session established",
                route_server=self.name,
                peer=peer.name,
                address=str(peer.desired.config.peer_address),
            )
            # The speaker records the connection's local address right after this event.
            self.loop.call_soon(self._ensure_bfd, peer)
            peer.end_of_rib = set()
            self.check_deferral()  # converged already if it negotiated none of the adopted families
        elif event.old is State.ESTABLISHED:
            # Before its routes are withdrawn: adopted routes may point at this peer.
            self._end_deferral(DeferralEnd.SESSION_DOWN, peer.name)
            notification = event.notification
            logs.event(
                log,
                logging.INFO if event.reason in _EXPECTED_DOWN else logging.WARNING,
                "bgp_session_down",
                "BGP session down",
                route_server=self.name,
                peer=peer.name,
                address=str(peer.desired.config.peer_address),
                state=event.new.value,
                reason=event.reason.value,
                notification=f"{notification.code}/{notification.subcode}" if notification else None,
                detail=event.detail or None,
            )
        self._count_sessions()

    def _count_sessions(self) -> None:
        """Tell the FIB how many sessions are up (persist-routes holds the FIB when none is)."""
        up = sum(1 for p in self.peers.values() if p.bgp_state is State.ESTABLISHED)
        if up != self.sessions_up:
            self.sessions_up = up
            self._push(self.fib.sessions_changed(up, self.loop.time()))
            self._arm_persist_timer()

    def _on_prefix_limit(self, event: PrefixLimit) -> None:
        name = event.event.name.lower()
        self.metrics.max_prefix_event(self.name, event.peer_id, name)
        logs.event(
            log,
            logging.WARNING,
            "max_prefix",
            "peer reached its prefix limit" if name != "threshold" else "peer nears its prefix limit",
            route_server=self.name,
            peer=event.peer_id,
            action=name,
            count=event.count,
            limit=event.limit,
        )

    def _on_refused(self, event: ConnectionRefused) -> None:
        self.refused += 1
        self.metrics.connections_refused.labels(self.name).inc()
        if event.address not in self._refused_logged and len(self._refused_logged) < 256:
            self._refused_logged.add(event.address)
            logs.event(
                log,
                logging.INFO,
                "connection_refused",
                "BGP connection from an address that is not a configured peer refused",
                route_server=self.name,
                address=str(event.address),
            )

    # -- persist-routes -----------------------------------------------------------------------------

    def _arm_persist_timer(self) -> None:
        if self._persist_timer is not None:
            self._persist_timer.cancel()
            self._persist_timer = None
        deadline = self.fib.next_deadline()
        if deadline is not None:
            self._persist_timer = self.loop.call_at(deadline, self._persist_expired)
        self._note_persist_state()

    def _persist_expired(self) -> None:
        self._persist_timer = None
        now = self.loop.time()
        window = self.fib.recovery_deadline
        changes = self.fib.handle_timer(now)
        if changes:
            ended = window is not None and now >= window
            logs.event(
                log,
                logging.INFO,
                "persist_window_ended" if ended else "persist_grace_ended",
                "persisted routes not re-advertised were removed"
                if ended
                else "routes of sessions that went down were removed (other sessions stayed up)",
                route_server=self.name,
                routes=sum(1 for e in changes.values() if e is None),
            )
        self._push(changes)
        self._arm_persist_timer()

    def _note_persist_state(self) -> None:
        state = self.fib.state
        if state is not self._persist_state:
            self._persist_state = state
            logs.event(
                log,
                logging.WARNING if state is PersistState.HOLDING else logging.INFO,
                "persist_state",
                {
                    PersistState.HOLDING: "every session is down: holding the last routes",
                    PersistState.RECOVERING: "sessions are back: persisted routes kept for the window",
                    PersistState.LIVE: "routes are live again",
                }[state],
                route_server=self.name,
                state=state.value,
                routes=len(self.fib.persisted()),
            )

    # -- restart deferral (module docstring) ---------------------------------------------------------

    def _begin_deferral(self) -> None:
        settings = self.runtime.restart_deferral
        if not self.desired.persist.enabled or settings.max_seconds <= 0:
            return  # without persistRoutes nothing is adopted
        self.deferring = True
        self._deferral_started = self.loop.time()
        self._establish_wait_over = False
        self._not_awaited = set()
        wait = min(settings.establish_wait_seconds, settings.max_seconds)
        self._deferral_timer = self.loop.call_at(self._deferral_started + wait, self._deferral_timer_fired)

    def _deferral_timer_fired(self) -> None:
        self._deferral_timer = None
        settings = self.runtime.restart_deferral
        ends = self._deferral_started + settings.max_seconds
        if self._establish_wait_over or self.loop.time() >= ends:
            self._end_deferral(DeferralEnd.TIMER_EXPIRED)
            return
        # Peers not Established by now are clearly not coming soon: stop waiting for them.
        self._establish_wait_over = True
        self._not_awaited = {n for n, p in self.peers.items() if p.bgp_state is not State.ESTABLISHED}
        self._deferral_timer = self.loop.call_at(ends, self._deferral_timer_fired)
        self.check_deferral()

    def check_deferral(self) -> None:
        """End the deferral once every awaited peer is Established and sent its End-of-RIBs."""
        if not self.deferring or any(t.writer is None for t in self.tables.values()):
            return  # a table not open yet may still adopt routes
        families: set[str] = set()
        for table in self.tables.values():
            families |= table.adopted_families
        if families:
            # The configured peers (self.peers fills while the speaker starts).
            for wanted in self.desired.peers:
                if wanted.name not in self._not_awaited and not self._peer_converged(wanted.name, families):
                    return
        self._end_deferral(DeferralEnd.CONVERGED)

    def _peer_converged(self, name: str, families: set[str]) -> bool:
        peer = self.peers.get(name)
        if peer is None or peer.bgp_state is not State.ESTABLISHED or self.speaker is None:
            return False
        try:
            negotiated = self.speaker.status(peer.name).negotiated
        except KeyError:
            return False
        wanted = families if negotiated is None else families & set(negotiated.families)
        return wanted <= peer.end_of_rib

    def _end_deferral(self, reason: DeferralEnd, peer: str | None = None) -> None:
        if not self.deferring:
            return
        self.deferring = False
        if self._deferral_timer is not None:
            self._deferral_timer.cancel()
            self._deferral_timer = None
        if reason is DeferralEnd.STOPPED:
            return
        adopted = any(t.adopted_families for t in self.tables.values())
        written = sum(t.end_deferral() for t in self.tables.values())
        if adopted:
            logs.event(
                log,
                logging.WARNING if reason is DeferralEnd.TIMER_EXPIRED else logging.INFO,
                "route_selection_deferral_ended",
                "adopted routes follow the FIB again",
                route_server=self.name,
                reason=reason.value,
                peer=peer,
                seconds=round(self.loop.time() - self._deferral_started, 3),
                routes=written,
                not_awaited=sorted(self._not_awaited) or None,
            )

    # -- BFD ------------------------------------------------------------------------------------------

    def _ensure_bfd(self, peer: PeerRuntime) -> None:
        """Request (or keep) the peer's BFD session on the current BGP path."""
        bfd = self.runtime.bfd
        settings = peer.desired.bfd
        if self.peers.get(peer.name) is not peer or settings is None or self.speaker is None:
            return
        if bfd is None:
            if peer.bfd_error is None:
                peer.bfd_error = "no BFD service in this agent"
                logs.event(
                    log,
                    logging.WARNING,
                    "bfd_unavailable",
                    "peer wants BFD liveness but the agent runs without BFD; the hold timer protects it",
                    route_server=self.name,
                    peer=peer.name,
                )
            return
        local = session_local_address(self.speaker, peer.name) or peer.desired.config.local_address
        path = (peer.desired.config.peer_address, local, settings)
        if peer.bfd_path == path and (peer.bfd_handle is not None or peer.bfd_pending):
            return
        self._release_bfd(peer)
        peer.bfd_path = path
        peer.bfd_pending = True
        generation = peer.bfd_generation
        self.loop.create_task(self._request_bfd(peer, generation, local, settings), name=f"bfd-{peer.name}")

    async def _request_bfd(
        self, peer: PeerRuntime, generation: int, local: IPAddress | None, settings: BfdSettings
    ) -> None:
        bfd = self.runtime.bfd
        assert bfd is not None
        address = peer.desired.config.peer_address
        loop = asyncio.get_running_loop()
        callback = functools.partial(self._on_bfd, peer, generation)
        try:
            handle = await asyncio.to_thread(
                bfd.request, address, local=local, interface=None, profile=bfd_profile(settings)
            )
        except Exception as exc:
            if peer.bfd_generation == generation:
                peer.bfd_pending = False
                peer.bfd_path = None
                peer.bfd_error = f"{type(exc).__name__}: {exc}"
                logs.event(
                    log,
                    logging.ERROR,
                    "bfd_failed",
                    "BFD session cannot be created",
                    route_server=self.name,
                    peer=peer.name,
                    error=peer.bfd_error,
                )
            return
        if peer.bfd_generation != generation or self.peers.get(peer.name) is not peer:
            await asyncio.to_thread(handle.release)  # the peer changed or left while we asked
            return
        peer.bfd_handle, peer.bfd_pending, peer.bfd_error = handle, False, None
        try:
            subscription = await asyncio.to_thread(handle.subscribe, callback, loop)
        except Exception as exc:
            peer.bfd_error = f"{type(exc).__name__}: {exc}"
            return
        initial: SessionStatus | None = getattr(subscription, "initial", None)
        # Changes after the snapshot may already have been delivered (they win over it).
        if initial is not None and peer.bfd_generation == generation and peer.bfd_state is None:
            peer.bfd_state = initial.state
        logs.event(
            log,
            logging.INFO,
            "bfd_session_requested",
            "BFD session requested",
            route_server=self.name,
            peer=peer.name,
            address=str(address),
            local=str(local) if local is not None else None,
            min_tx_ms=settings.min_tx_ms,
            min_rx_ms=settings.min_rx_ms,
            multiplier=settings.detect_multiplier,
            state=BFD_STATE_NAMES[peer.bfd_state] if peer.bfd_state is not None else None,
        )

    def _release_bfd(self, peer: PeerRuntime) -> None:
        peer.bfd_generation += 1  # late callbacks and answers of the old session are ignored
        handle, peer.bfd_handle = peer.bfd_handle, None
        peer.bfd_path = None
        peer.bfd_pending = False
        peer.bfd_state = None
        peer.bfd_last = None
        if handle is not None:
            # The release sends AdminDown from the BFD thread; do not wait for it here.
            asyncio.get_running_loop().run_in_executor(None, handle.release)

    def _on_bfd(self, peer: PeerRuntime, generation: int, change: StateChange) -> None:
        """A BFD state change, delivered on the loop thread (call_soon_threadsafe)."""
        if peer.bfd_generation != generation or self.peers.get(peer.name) is not peer:
            return
        peer.bfd_state = change.new
        peer.bfd_last = change
        state = BFD_STATE_NAMES[change.new]
        self.metrics.bfd_transition(self.name, peer.name, state, change.reason.value)
        if change.failure:
            peer.bfd_failures += 1
            self.metrics.bfd_failure(self.name, peer.name)
            established = peer.bgp_state is State.ESTABLISHED
            logs.event(
                log,
                logging.WARNING,
                "bfd_down",
                "BFD down: tearing the BGP session down (RFC 5882)" if established else "BFD down",
                route_server=self.name,
                peer=peer.name,
                address=str(peer.desired.config.peer_address),
                reason=change.reason.value,
                diagnostic=_diag_name(change.diag),
            )
            if established and self.speaker is not None:
                with contextlib.suppress(KeyError):
                    self.speaker.peer_down(peer.name, DownReason.BFD_DOWN)
        elif change.new is BfdState.UP:
            logs.event(
                log,
                logging.INFO,
                "bfd_up",
                "BFD session up",
                route_server=self.name,
                peer=peer.name,
                address=str(peer.desired.config.peer_address),
            )
        else:
            logs.event(
                log,
                logging.DEBUG,
                "bfd_state",
                "BFD state changed",
                route_server=self.name,
                peer=peer.name,
                state=state,
                reason=change.reason.value,
            )

    # -- observation ----------------------------------------------------------------------------------

    def observe(self) -> None:
        """Periodic: log routes the peers' import policies rejected since the last look."""
        speaker = self.speaker
        if speaker is None:
            return
        for peer in self.peers.values():
            try:
                status = speaker.status(peer.name)
            except KeyError:
                continue
            if status.prefixes_rejected <= peer.rejected_logged:
                if status.prefixes_rejected < peer.rejected_logged:  # counters restarted with the session
                    peer.rejected_logged = status.prefixes_rejected
                    peer.rejected_by_reason_logged = dict(status.rejected_by_reason)
                continue
            delta = {
                reason: count - peer.rejected_by_reason_logged.get(reason, 0)
                for reason, count in status.rejected_by_reason.items()
                if count > peer.rejected_by_reason_logged.get(reason, 0)
            }
            adj = speaker.adj_rib_in(peer.name)
            examples = [str(key_to_prefix(r.prefix)) for r in list(adj.recent_rejections)[-3:]] if adj else []
            logs.event(
                log,
                logging.INFO,
                "routes_rejected",
                "routes rejected by import policy",
                route_server=self.name,
                peer=peer.name,
                routes=status.prefixes_rejected - peer.rejected_logged,
                reasons=delta,
                examples=examples,
            )
            peer.rejected_logged = status.prefixes_rejected
            peer.rejected_by_reason_logged = dict(status.rejected_by_reason)

    def view(
        self,
        bfd_sessions: Mapping[tuple[str, str | None], SessionStatus],
        max_routes: int = MAX_STATUS_ROUTES,
    ) -> RouteServerView:
        desired = self.desired
        speaker = self.speaker
        peers = tuple(self._peer_view(p, bfd_sessions) for p in self.peers.values())
        entries = self.fib.entries()
        fib = tuple(
            RouteView(str(p), tuple(str(h) for h in hops)) for p, hops in _first_routes(entries, max_routes)
        )
        deadline = self.fib.recovery_deadline
        remaining = None
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())  # the loop's clock is time.monotonic()
        return RouteServerView(
            name=self.name,
            asn=desired.speaker.asn,
            router_id=str(desired.speaker.router_id),
            listening=tuple(format_address(a, p) for a, p in speaker.listening())
            if speaker is not None
            else (),
            selection=desired.selection.mode.value,
            max_paths=desired.selection.max_paths if desired.selection.mode is SelectionMode.ECMP else 1,
            persist=PersistView(
                enabled=desired.persist.enabled,
                duration_seconds=desired.persist.duration_seconds,
                state=self.fib.state.value,
                persisted_routes=len(self.fib.persisted()),
                window_remaining_seconds=remaining,
            ),
            sessions_up=self.sessions_up,
            fib_routes=len(entries),
            fib=fib,
            peers=peers,
            tables=tuple(t.view(max_routes) for t in self.tables.values()),
            connections_refused=self.refused,
            error=self.error,
        )

    def _peer_view(
        self, peer: PeerRuntime, bfd_sessions: Mapping[tuple[str, str | None], SessionStatus]
    ) -> PeerView:
        config = peer.desired.config
        status: PeerStatus | None = None
        adj: AdjRibIn | None = None
        if self.speaker is not None:
            with contextlib.suppress(KeyError):
                status = self.speaker.status(peer.name)
                adj = self.speaker.adj_rib_in(peer.name)
        bfd = None
        if peer.desired.bfd is not None:
            bfd = self._bfd_view(peer, bfd_sessions)
        rejections: tuple[RejectedRouteView, ...] = ()
        if adj is not None:
            rejections = tuple(
                RejectedRouteView(str(key_to_prefix(r.prefix)), r.reason.value, peer=peer.name)
                for r in reversed(list(adj.recent_rejections)[-MAX_LISTED_REJECTIONS:])
            )
        sent = status.last_notification_sent if status is not None else None
        received = status.last_notification_received if status is not None else None
        return PeerView(
            name=peer.name,
            address=str(config.peer_address),
            asn=config.peer_asn,
            liveness=peer.desired.liveness.value,
            bgp_state=status.state if status is not None else peer.bgp_state.value,
            bfd=bfd,
            uptime_seconds=status.uptime if status is not None else None,
            established_at=status.established_at if status is not None else None,
            established_count=status.established_count if status is not None else 0,
            last_transition_reason=status.last_transition if status is not None else None,
            last_transition_detail=status.last_transition_detail if status is not None else "",
            last_transition_at=status.last_transition_at if status is not None else None,
            last_error=status.last_error if status is not None else None,
            last_notification_sent=sent.name if sent is not None else None,
            last_notification_received=received.name if received is not None else None,
            prefixes_received=status.prefixes_received if status is not None else 0,
            prefixes_accepted=status.prefixes_accepted if status is not None else 0,
            prefixes_rejected=status.prefixes_rejected if status is not None else 0,
            rejected_by_reason=dict(status.rejected_by_reason) if status is not None else {},
            prefixes_stale=status.prefixes_stale if status is not None else 0,
            recent_rejections=rejections,
            held_idle_reason=status.held_idle_reason if status is not None else None,
            held_idle_until=status.held_idle_until if status is not None else None,
        )

    def _bfd_view(
        self, peer: PeerRuntime, sessions: Mapping[tuple[str, str | None], SessionStatus]
    ) -> BfdView:
        settings = peer.desired.bfd
        assert settings is not None
        local = peer.bfd_path[1] if peer.bfd_path is not None else None
        live = sessions.get((str(peer.desired.config.peer_address), str(local) if local else None))
        last = peer.bfd_last
        state = peer.bfd_state
        if state is None:
            state_name = "Down" if peer.bfd_pending else "-"
        else:
            state_name = BFD_STATE_NAMES[state]
        return BfdView(
            state=state_name if peer.bfd_error is None or state is not None else "Error",
            local_address=str(local) if local is not None else None,
            interface=None,
            remote_state=BFD_STATE_NAMES[live.remote_state] if live is not None else None,
            diagnostic=_diag_name(last.diag) if last is not None else None,
            last_change_reason=last.reason.value if last is not None else peer.bfd_error,
            last_change_at=_wall(last.at) if last is not None else None,
            down_count=peer.bfd_failures,
            min_tx_ms=settings.min_tx_ms,
            min_rx_ms=settings.min_rx_ms,
            detect_multiplier=settings.detect_multiplier,
            detection_time_ms=(
                live.detection_time_us / 1000.0
                if live is not None and live.detection_time_us is not None
                else None
            ),
        )


async def _guard(rs: RouteServerRuntime, what: str, step: Awaitable[None]) -> None:
    """One route server's failure is logged and shown in its status; the others carry on."""
    if rs.speaker is not None:
        rs.error = None
    try:
        await step
    except Exception as exc:
        rs.error = f"{what} failed: {type(exc).__name__}: {exc}"
        log.exception("route server %s: %s failed", rs.name, what)


def _wall(monotonic_at: float) -> float:
    """A time.monotonic() instant as wall-clock time (for status)."""
    return time.time() - (time.monotonic() - monotonic_at)


# -- the runtime ------------------------------------------------------------------------------------


class Runtime:
    """The agent: every route server of the desired state, reconciled by `apply`.

    Create, `await start()`, `await apply(desired)` on every configuration change (serialised), read
    `status()` / `healthy()`, and `await stop()` at the end. The BFD service (bfd.service.BfdService,
    started and stopped by the caller) is optional: without it, BFD peers are protected by the hold
    timer only and their status says so.
    """

    def __init__(
        self,
        *,
        bfd: BfdServiceLike | None = None,
        metrics: Metrics | None = None,
        speaker_factory: SpeakerFactory = default_speaker_factory,
        writer_factory: WriterFactory = node_writer_factory,
        resync_interval: float = RESYNC_INTERVAL,
        observe_interval: float = OBSERVE_INTERVAL,
        node_name: str = "",
        version: str = "",
        restart_deferral: RestartDeferral | None = None,
    ) -> None:
        self.bfd = bfd
        self.restart_deferral = restart_deferral or RestartDeferral()
        self.metrics = metrics or Metrics()
        self.speaker_factory = speaker_factory
        self.writer_factory = writer_factory
        self.resync_interval = resync_interval
        self.observe_interval = observe_interval
        self.node_name = node_name
        self.version = version
        self.desired = DesiredState()
        self.route_servers: dict[str, RouteServerRuntime] = {}
        self.started_at = time.time()
        self.generation = 0
        self.loaded_at: float | None = None
        self.sources: tuple[str, ...] = ()
        self.config_error: str | None = None
        self._lock = asyncio.Lock()
        self._observer: asyncio.Task[None] | None = None
        self._bfd_status: dict[tuple[str, str | None], SessionStatus] = {}
        self._running = False
        # Scrapes need counts only: no route lists to sort.
        self.metrics.observe_state(functools.partial(self.status, max_routes=0))

    async def start(self) -> None:
        young, middle, old = gc.get_threshold()
        if young:  # 0: the collector is off on purpose; leave it so
            gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
        self._running = True
        self._observer = asyncio.get_running_loop().create_task(self._observe(), name="runtime-observer")

    async def apply(self, desired: DesiredState) -> None:
        """Reconcile to `desired`: removed route servers first, then changed ones, then new ones."""
        async with self._lock:
            self.desired = desired
            for name in [n for n in self.route_servers if desired.route_server(n) is None]:
                rs = self.route_servers.pop(name)
                await _guard(rs, "stop", rs.shutdown(keep_routes=False, message="route server removed"))
            for wanted in desired.route_servers:
                current = self.route_servers.get(wanted.name)
                if current is not None:
                    await _guard(current, "reconcile", current.reconcile(wanted))
            for wanted in desired.route_servers:
                if wanted.name not in self.route_servers:
                    rs = RouteServerRuntime(self, wanted)
                    self.route_servers[wanted.name] = rs
                    await _guard(rs, "start", rs.start())
            self.generation += 1
            self.loaded_at = time.time()
            self.config_error = None
            self.metrics.config_reloads.labels("applied").inc()

    def refuse(self, message: str) -> None:
        """Record a configuration that was not applied (the running one stays)."""
        self.config_error = message
        self.metrics.config_reloads.labels("refused").inc()

    async def stop(self, keep_routes: bool | None = None) -> None:
        """Shut down every route server; `keep_routes` None: keep them where persistRoutes is enabled."""
        self._running = False
        if self._observer is not None:
            self._observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._observer
            self._observer = None
        async with self._lock:
            for rs in list(self.route_servers.values()):
                keep = rs.desired.persist.enabled if keep_routes is None else keep_routes
                await _guard(rs, "stop", rs.shutdown(keep_routes=keep, message="route server shutting down"))
            self.route_servers.clear()

    def route_server(self, name: str) -> RouteServerRuntime:
        return self.route_servers[name]

    # -- observation ------------------------------------------------------------------------------------

    async def _observe(self) -> None:
        while True:
            await asyncio.sleep(self.observe_interval)
            try:
                await self.observe_once()
            except Exception:
                log.exception("runtime observation failed")

    async def observe_once(self) -> None:
        """Log rejections, retry speakers that could not start, refresh the BFD timers for status."""
        for rs in list(self.route_servers.values()):
            rs.observe()
            if rs.speaker is None and not self._lock.locked():
                async with self._lock:
                    await rs.retry()
        bfd = self.bfd
        if bfd is not None and bfd.running:
            service = await asyncio.to_thread(bfd.status)
            self._bfd_status = {
                (str(s.key.peer), str(s.key.local) if s.key.local is not None else None): s
                for s in service.sessions
            }

    def healthy(self) -> bool:
        """Every route server listening, every table writing, and the BFD service (if any) running."""
        if not self._running:
            return False
        for rs in self.route_servers.values():
            if rs.error is not None or any(t.last_error is not None for t in rs.tables.values()):
                return False
        wants_bfd = any(p.bfd is not None for rs in self.desired.route_servers for p in rs.peers)
        return not (wants_bfd and self.bfd is not None and not self.bfd.running)

    def status(self, max_routes: int = MAX_STATUS_ROUTES) -> AgentStatus:
        """The snapshot behind /status; FIB and installed routes listed up to `max_routes` each."""
        desired = self.desired
        return AgentStatus(
            node=self.node_name or desired.node.name,
            version=self.version,
            started_at=self.started_at,
            healthy=self.healthy(),
            config=ConfigView(
                sources=self.sources,
                generation=self.generation,
                loaded_at=self.loaded_at,
                last_error=self.config_error,
                problems=tuple(str(p) for p in desired.problems),
                skipped=tuple(str(p) for p in desired.skipped),
            ),
            route_servers=tuple(rs.view(self._bfd_status, max_routes) for rs in self.route_servers.values()),
            bfd_running=self.bfd is not None and self.bfd.running,
        )
