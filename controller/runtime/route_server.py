"""One RouteServer at run time, converged to its desired state by itself (level-triggered).

Owns: `RouteServerRuntime`: the route server's speaker (bgp.api.Speaker), its FIB (controller/fib.py),
its peers (controller/runtime/peers.py), its tables (controller/runtime/tables.py), their BFD sessions
(controller/runtime/liveness.py), persist-routes timers and the restart deferral's decisions
(controller/runtime/deferral.py); and `RouteServerContext`, what it gets from the agent (factories,
the BFD service, where events go, intervals). It is driven by `reconcile(desired)` and by its own
convergence loop, never by its caller's internals.

Level-triggered convergence (DESIGN §7.6). `reconcile` only records the new desired state, makes the
structural changes that cannot be retried piecemeal (a new speaker identity, a table whose target
changed) and runs one convergence pass. `converge()` compares desired with ACTUAL and repairs:

- the speaker: none running (its port was taken) -> start it again after SPEAKER_RETRY;
- peers: removed ones first, then a peer whose configuration the speaker does not hold (`applied` is
  not the desired PeerConfig, or the speaker no longer knows it) is added or updated; a failure
  leaves the error in status and is retried with exponential backoff (1 s .. 30 s);
- BFD: each peer's held session is compared with the one it should have (`Liveness.ensure`); a
  failed or lost request is asked again after its backoff.

The pass runs after every reconcile, every CONVERGE_INTERVAL seconds (the source of truth), at once
when a failure or a lost BFD session wakes it, and when the earliest backoff is due. Unchanged peers
are never touched: a pass that finds nothing to do does nothing. Tables converge on their own tasks
(pending batches, periodic resync, backoff).

Data flow (DESIGN §5). The speaker's listener delivers every event inside the speaker's own call
stack, so nothing waits for a task switch:

- RoutesChanged: each RibChange becomes the prefix's next hops (ActivePassive: the best path's; ECMP:
  the equal-cost set up to maxPaths), computed once per change -> `Fib.update_many`, which reports
  each changed prefix's previous next hops for the failover events -> every table's pending batch.
- PeerStateChanged: `Fib.sessions_changed` with the Established count (persist-routes holds the FIB
  when every session is down; its timers run at `Fib.next_deadline()`). The state change arrives
  before the session's routes are withdrawn, the order the FIB needs: RoutesChanged of a peer that
  is no longer Established are paths that left with their session (persist grace, controller/fib.py).
  On Established the event carries the connection's local address, and the peer's BFD session is
  requested at once from it (single-hop BFD runs from there, RFC 5881 §4).
- BFD Down while Established: `Speaker.peer_down(BFD_DOWN)` in the same callback (liveness.py).

Must not touch: other route servers, the agent's configuration lock, concrete writers or speakers
(it gets them from its context's factories), the RIB's internals (only the Speaker protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Protocol

from bgp.api import (
    ConnectionRefused,
    EndOfRib,
    PeerStateChanged,
    PrefixLimit,
    RoutesChanged,
    Speaker,
    SpeakerEvent,
)
from bgp.fsm.events import State, TransitionReason
from bgp.rib.path import Path
from bgp.types import IPAddress, key_str
from controller.desired import (
    Backed,
    Hops,
    PeerDesired,
    RouteChanges,
    RouteKey,
    RouteServerDesired,
    SelectionSettings,
    TableDesired,
)
from controller.events import (
    BgpSessionDown,
    BgpSessionUp,
    BgpTransition,
    ConnectionRefusedEvent,
    DeferralEnded,
    EndOfRibReceived,
    EventSink,
    Failover,
    FibChanged,
    MaxPrefix,
    MoreFailovers,
    PeerConfigured,
    PeerFailed,
    PeerRemoved,
    PersistGraceEnded,
    PersistStateChanged,
    PersistWindowEnded,
    RouteServerRestart,
    RouteServerStarted,
    RouteServerStopped,
    RoutesLost,
    RoutesRejected,
    SpeakerFailed,
)
from controller.fib import Fib, HopsInterner, MoveTally, PersistConfig, SelectionMode, select_next_hops
from controller.runtime.deferral import Deferral, DeferralEnd, RestartDeferral
from controller.runtime.installed import InstalledCounts
from controller.runtime.liveness import Liveness
from controller.runtime.peers import PeerRuntime
from controller.runtime.ports import BfdService, SpeakerFactory, WriterFactory
from controller.runtime.routes import RouteIndex
from controller.runtime.tables import TableRuntime
from controller.status import format_address

log = logging.getLogger(__name__)

SPEAKER_RETRY = 10.0
CONVERGE_INTERVAL = 5.0  # the periodic full pass (peers and BFD; tables resync on their own)
MAX_LOGGED_GROUPS = 5  # failover groups logged per change set (the rest are summarised)
GRACE_DETECTIONS = 2  # the persist grace covers this many of the slowest BFD peer's detection times

# Session ends the operator asked for are not worth a warning.
_EXPECTED_DOWN = frozenset(
    {TransitionReason.MANUAL_STOP, TransitionReason.CONFIGURATION_CHANGE, TransitionReason.ADMIN_RESET}
)


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


MEMO_LIMIT = 65_536  # distinct best paths whose next hops are remembered (hops_function)
BULK_REMOVAL = 10_000  # RoutesChanged at least this large that only remove take the bulk path
_PREFIX, _NEW_BEST = itemgetter(0), itemgetter(2)  # RibChange fields, read in C (map)


class HopsOf(Protocol):
    """A prefix's FIB next hops from its best path, ECMP set and backup path (`hops_function`)."""

    def __call__(self, best: Path | None, ecmp: Sequence[Path], backup: Path | None = None) -> Hops: ...


def hops_function(selection: SelectionSettings) -> HopsOf:
    """The FIB next hops of one prefix from its best path and ECMP set (chosen once per change set),
    with its backup (`Backed`) when the Loc-RIB has a path through another next hop.

    The tuples are interned (controller/fib.py `HopsInterner`): every prefix behind one next-hop set
    shares one object in the FIB and in every table's pending changes, and so does every prefix
    behind one (next hops, backup) pair.
    """
    intern = HopsInterner()
    backed: dict[tuple[Hops, Hops], Hops] = {}
    backed_memo: dict[tuple[int, int], tuple[Hops, Path, Hops]] = {}  # (id(hops), id(backup path))

    def with_backup(hops: Hops, backup: Path) -> Hops:
        known = backed_memo.get((id(hops), id(backup)))
        if known is not None and known[0] is hops and known[1] is backup:
            return known[2]
        hop = backup.next_hop
        if hop is None or hop in hops:
            result = hops
        else:
            spare = intern.one(hop)
            result = backed.get((hops, spare)) or Backed(hops, spare)
            if len(backed) >= MEMO_LIMIT:
                backed.clear()
            backed[(hops, spare)] = result
        if len(backed_memo) >= MEMO_LIMIT:
            backed_memo.clear()
        backed_memo[(id(hops), id(backup))] = (hops, backup, result)
        return result

    if selection.mode is SelectionMode.ACTIVE_PASSIVE:
        one = intern.one
        # Paths are interned by the Adj-RIB-In, so a feed's prefixes share a few Path objects: their
        # hops are looked up by identity (hashing a Path or an address is Python code). The Path is
        # kept in the entry, so its id is not reused while the entry exists.
        memo: dict[int, tuple[Path, Hops]] = {}

        def active_passive(best: Path | None, ecmp: Sequence[Path], backup: Path | None = None) -> Hops:
            if best is None:
                return ()
            known = memo.get(id(best))
            if known is not None and known[0] is best:
                hops = known[1]
            else:
                hop = best.next_hop
                hops = one(hop) if hop is not None else ()  # bulk intake: no ECMP list built
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[id(best)] = (best, hops)
            return with_backup(hops, backup) if backup is not None and hops else hops

        return active_passive
    mode, max_paths = selection.mode, selection.max_paths

    def equal_cost(best: Path | None, ecmp: Sequence[Path], backup: Path | None = None) -> Hops:
        if best is None or best.next_hop is None:
            return ()
        hops = [p.next_hop for p in ecmp if p.next_hop is not None]
        chosen = intern(select_next_hops(mode, best.next_hop, hops, max_paths))
        return with_backup(chosen, backup) if backup is not None and chosen else chosen

    return equal_cost


def _speaker_knows(speaker: Speaker, peer_id: str) -> bool:
    try:
        speaker.status(peer_id)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class RouteServerContext:
    """What a route server gets from the agent that runs it."""

    speaker_factory: SpeakerFactory
    writer_factory: WriterFactory
    bfd: BfdService | None
    events: EventSink
    resync_interval: float
    restart_deferral: RestartDeferral
    forget_peer: Callable[[str, str], None]  # drop a removed peer's metric series


class RouteServerRuntime:
    """One RouteServer: its speaker, FIB, peers and tables, converged to `desired` (module docstring)."""

    def __init__(self, context: RouteServerContext, desired: RouteServerDesired) -> None:
        self.context = context
        self.desired = desired
        self._events = context.events
        self.fib = Fib(persist_config(desired))
        self._hops = hops_function(desired.selection)
        self.installed = InstalledCounts(desired.selection.mode, self._hops)  # per peer, for status
        self.speaker: Speaker | None = None
        self.peers: dict[str, PeerRuntime] = {}
        self.tables: dict[str, TableRuntime] = {}
        self.liveness = Liveness(self, context.bfd)
        self.error: str | None = None
        self.sessions_up = 0
        self.refused = 0
        self._refused_logged: set[IPAddress] = set()
        self._detach: Callable[[], None] | None = None
        self._persist_timer: asyncio.TimerHandle | None = None
        self._persist_state = self.fib.state
        self._speaker_retry_at = 0.0
        # Always armed: a restart adopts the previous run's routes with or without persistRoutes.
        self._deferral = Deferral(context.restart_deferral, self.loop.time(), True)
        self._deferral_timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one reconcile or convergence pass at a time
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self.route_index = RouteIndex()  # /routes (controller/runtime/routes.py): built on request

    @property
    def name(self) -> str:
        return self.desired.name

    @property
    def events(self) -> EventSink:
        return self._events

    @property
    def persist(self) -> PersistConfig:
        return self.desired.persist

    @property
    def deferring(self) -> bool:
        return self._deferral.active

    @property
    def deferral_bound(self) -> float:
        return self._deferral.settings.max_seconds

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def fib_entries(self) -> Mapping[RouteKey, Hops]:
        return self.fib.entries()

    def current(self, peer: PeerRuntime) -> bool:
        return self.peers.get(peer.name) is peer

    def wake(self) -> None:
        self._wake.set()

    def fail_over(self, peer: PeerRuntime) -> None:
        """BFD declared the peer dead: the next hops only its paths use are gone, and every table
        moves what points at them to the backups now, before the RIB withdraws a single prefix
        (Liveness calls this, then tears the session down; the FIB's changes then confirm it)."""
        speaker = self.speaker
        if speaker is None or not self.tables:
            return
        gateways = speaker.loc_rib.sole_next_hops(peer.name)
        if not gateways:
            return
        for table in self.tables.values():
            table.fail_over(gateways)

    def table_opened(self) -> None:
        self.check_deferral()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._arm_deferral_timer()
        for table in self.desired.tables:
            self._add_table(table)
        async with self._lock:
            await self._start_speaker()
        self.check_deferral()
        self._loop_task = self.loop.create_task(self._converge_loop(), name=f"converge-{self.name}")

    async def _start_speaker(self) -> None:
        """A speaker; a bind failure is kept as `error` and retried by the convergence loop."""
        desired = self.desired
        speaker = self.context.speaker_factory(desired.speaker, desired.selection)
        speaker.loc_rib.track_backups = True  # the FIB keeps each prefix's backup (Backed hops)
        detach = speaker.add_listener(self._on_event)
        try:
            await speaker.start()
        except OSError as exc:
            detach()
            with contextlib.suppress(Exception):
                await speaker.stop()
            self.error = f"cannot listen on port {desired.speaker.listen_port}: {exc}"
            self._speaker_retry_at = self.loop.time() + SPEAKER_RETRY
            self.events.emit(SpeakerFailed(self.name, self.error, SPEAKER_RETRY))
            return
        self.speaker, self._detach, self.error = speaker, detach, None
        # Every desired peer; a failure stays in its status and is retried (level-triggered).
        for wanted in desired.peers:
            self.peers[wanted.name] = PeerRuntime(wanted)
        await self._converge_peers()
        self.events.emit(
            RouteServerStarted(
                self.name,
                desired.speaker.asn,
                str(desired.speaker.router_id),
                [format_address(a, p) for a, p in speaker.listening()],
                len(desired.peers),
                len(desired.tables),
            )
        )

    async def retry(self) -> None:
        """Start the speaker again if it could not start and its retry is due."""
        if self.speaker is None and not self._closing and self.loop.time() >= self._speaker_retry_at:
            await self._start_speaker()

    async def _stop_speaker(self, *, keep_routes: bool, message: str) -> None:
        speaker = self.speaker
        if speaker is None:
            return
        for peer in list(self.peers.values()):
            self.liveness.release(peer)
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
        self.installed.clear()

    async def shutdown(self, *, keep_routes: bool, message: str = "") -> None:
        """Stop everything: routes withdrawn first (unless kept), then sessions closed."""
        self._closing = True
        self._wake.set()
        self.route_index.close()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._persist_timer is not None:
            self._persist_timer.cancel()
            self._persist_timer = None
        if self._detach is not None:
            self._detach()
            self._detach = None
        self._deferral.stop()
        self._arm_deferral_timer()
        for table in list(self.tables.values()):
            await table.close(withdraw=not keep_routes)
        self.tables.clear()
        for name in list(self.peers):
            self.context.forget_peer(self.name, name)
        await self._stop_speaker(keep_routes=True, message=message)
        self.events.emit(RouteServerStopped(self.name, keep_routes))

    # -- reconcile (structural changes) -----------------------------------------------------------------

    async def reconcile(self, new: RouteServerDesired) -> None:
        """Move to `new`: structural changes here, then one convergence pass (even if unchanged)."""
        async with self._lock:
            await self._reconcile(new)
            await self._converge()

    async def _reconcile(self, new: RouteServerDesired) -> None:
        old = self.desired
        if new == old:
            return
        if new.speaker != old.speaker:
            # ASN, router ID or listen sockets: every session must restart with the new identity.
            # Withdrawals flow through the FIB as usual (persist-routes holds them if enabled).
            self.events.emit(RouteServerRestart(self.name))
            await self._reconcile_tables(new)
            self.desired = new
            self.fib.persist = persist_config(new)
            await self._stop_speaker(keep_routes=False, message="configuration changed")
            await self._start_speaker()
            return
        await self._reconcile_tables(new)
        self.desired = new
        persist = persist_config(new)
        if persist != self.fib.persist:
            self.fib.persist = persist
            self._arm_persist_timer()
        self._hops = hops_function(new.selection)
        self.installed.configure(new.selection.mode, self._hops)
        if new.selection != old.selection and self.speaker is not None:
            self.speaker.set_route_selection(new.selection.rib_max_paths, new.selection.always_compare_med)
            self._recompute_fib()

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
        context = self.context
        table = TableRuntime(self, desired, context.writer_factory, context.resync_interval)
        self.tables[desired.name] = table
        table.start()

    # -- convergence (level-triggered) ------------------------------------------------------------------

    async def _converge_loop(self) -> None:
        loop = self.loop
        while not self._closing:
            timeout = CONVERGE_INTERVAL
            deadline = self._next_retry()
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._closing:
                return
            try:
                async with self._lock:
                    await self._converge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("route server %s: convergence pass failed", self.name)

    async def converge(self) -> None:
        """One pass now (tests and the agent's observation call it; the loop runs it by itself)."""
        async with self._lock:
            await self._converge()

    async def _converge(self) -> None:
        if self._closing:
            return
        if self.speaker is None:
            await self.retry()
            if self.speaker is None:
                return
        await self._converge_peers()
        now = self.loop.time()
        for peer in list(self.peers.values()):
            self.liveness.ensure(peer, now)

    def _next_retry(self) -> float | None:
        """The earliest backoff that is due: a peer's configuration or a BFD request."""
        deadlines: list[float] = []
        if self.speaker is None:
            deadlines.append(self._speaker_retry_at)
        for peer in self.peers.values():
            if peer.applied is None or peer.applied != peer.desired.config:
                at = peer.backoff.deadline()
                if at is not None:
                    deadlines.append(at)
            at = self.liveness.deadline(peer)
            if at is not None:
                deadlines.append(at)
        return min(deadlines) if deadlines else None

    async def _converge_peers(self) -> None:
        """Remove -> update -> create, against what the speaker holds (module docstring)."""
        speaker = self.speaker
        if speaker is None:
            return
        desired = self.desired
        for name in [n for n in self.peers if desired.peer(n) is None]:
            await self._remove_peer(name)
        now = self.loop.time()
        for wanted in desired.peers:
            peer = self.peers.get(wanted.name)
            if peer is None:
                peer = self.peers[wanted.name] = PeerRuntime(wanted)
            elif peer.desired != wanted:
                self._desired_changed(peer, wanted)
            known = _speaker_knows(speaker, peer.name)
            if not known:
                peer.applied = None  # never added, or the speaker lost it: configure it (again)
            if peer.applied == wanted.config or not peer.backoff.due(now):
                continue
            try:
                if known:
                    await speaker.update_peer(wanted.config)
                else:
                    await speaker.add_peer(wanted.config)
            except Exception as exc:
                peer.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
                delay = peer.backoff.failed(self.loop.time())
                self.events.emit(PeerFailed(self.name, peer.name, peer.error, delay))
                continue
            if peer.backoff.failures:
                self.events.emit(PeerConfigured(self.name, peer.name, peer.backoff.failures + 1))
            peer.applied, peer.error = wanted.config, None
            peer.backoff.succeeded()

    def _desired_changed(self, peer: PeerRuntime, wanted: PeerDesired) -> None:
        """New settings for a known peer: a changed BFD path is replaced (liveness converges it)."""
        old = peer.desired
        peer.desired = wanted
        peer.backoff.succeeded()  # new settings are tried at once
        if (
            wanted.bfd != old.bfd
            or wanted.liveness != old.liveness
            or wanted.config.peer_address != old.config.peer_address
        ):
            self.liveness.release(peer)
            peer.bfd_backoff.succeeded()
            peer.bfd_error = None
            if peer.bgp_state is not State.ESTABLISHED:
                peer.came_up = False  # the new path is requested when it is Established again

    async def _remove_peer(self, name: str) -> None:
        peer = self.peers.pop(name)
        self.liveness.release(peer)
        if self.speaker is not None and peer.applied is not None:
            with contextlib.suppress(KeyError):
                await self.speaker.remove_peer(name)
        self.context.forget_peer(self.name, name)
        # Popped first, so its routes were withdrawn (not held) before the count drops.
        self._count_sessions()
        self.check_deferral()
        self.events.emit(PeerRemoved(self.name, name))

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
            self.events.emit(EndOfRibReceived(self.name, event.peer_id, str(event.family)))

    def _on_routes(self, event: RoutesChanged) -> None:
        hops = self._hops
        rib_changes = event.changes
        peer = self.peers.get(event.peer_id)
        # Paths that left with their session (not withdrawn by UPDATE): persist grace, controller/fib.py.
        down_at = None
        if peer is not None and peer.bgp_state is not State.ESTABLISHED and self.fib.persist.enabled:
            down_at = self.loop.time()
        tally = MoveTally()
        if len(rib_changes) >= BULK_REMOVAL and list(map(_NEW_BEST, rib_changes)).count(None) == len(
            rib_changes
        ):
            # Every prefix lost its last path (the only peer went down with its table): in bulk.
            self.installed.apply_removals(rib_changes)
            changes = self.fib.remove_many(list(map(_PREFIX, rib_changes)), down_at, tally)
        else:
            rib = self.speaker.loc_rib if self.speaker is not None else None
            if rib is not None and rib.distinct_next_hops() > 1:
                # Each prefix's backup too (the Loc-RIB as of now: a later change brings the rest).
                backup = rib.backup
                items = [(c.prefix, hops(c.new_best, c.new_ecmp, backup(c.prefix))) for c in rib_changes]
            else:
                items = [(c.prefix, hops(c.new_best, c.new_ecmp)) for c in rib_changes]
            self.installed.apply(rib_changes)
            changes = self.fib.update_many(items, down_at, tally)
            del items
        if down_at is not None:
            self._arm_persist_timer()
        if changes:
            self._push(changes)  # first: the tables' writers are woken before the report is built
            self._report_fib(event.peer_id, len(changes), tally)

    def _report_fib(self, peer: str, changed: int, tally: MoveTally) -> None:
        """Counts, and the failover groups: prefixes that moved from one next-hop set to another
        (counted by the FIB in its own pass: nothing here is per prefix)."""
        # A move of the backup alone (the standby's path came or went) is no failover.
        moves = sorted(
            (m for m in tally.moves.values() if not (m.old and m.new and tuple(m.old) == tuple(m.new))),
            key=lambda move: -move.count,
        )
        removed = sum(move.count for move in moves if not move.new)
        failovers = sum(move.count for move in moves if move.new)
        events = self.events
        events.emit(FibChanged(self.name, tally.added, removed, changed - tally.added - removed, failovers))
        if not moves:
            return
        trigger = peer or None
        for move in moves[:MAX_LOGGED_GROUPS]:
            kind = Failover if move.new else RoutesLost
            old, new = [str(h) for h in move.old], [str(h) for h in move.new]
            events.emit(kind(self.name, trigger, old, new, move.count, key_str(move.first)))
        if len(moves) > MAX_LOGGED_GROUPS:
            rest = sum(move.count for move in moves[MAX_LOGGED_GROUPS:])
            events.emit(MoreFailovers(self.name, len(moves) - MAX_LOGGED_GROUPS, rest))

    def _push(self, changes: RouteChanges) -> None:
        if not changes:
            return
        tables = list(self.tables.values())
        for index, table in enumerate(tables):
            # The FIB's change set is ours (it keeps no reference): the last table may keep it.
            table.push(changes, owned=index == len(tables) - 1)

    def _recompute_fib(self) -> None:
        """Every prefix again (the selection mode or width changed); only real differences go out."""
        speaker = self.speaker
        if speaker is None:
            return
        hops = self._hops
        items: list[tuple[RouteKey, Hops]] = []
        backup = speaker.loc_rib.backup
        for key, ecmp in speaker.loc_rib.selected():
            items.append((key, hops(ecmp[0] if ecmp else None, ecmp, backup(key))))
        self.installed.recount((ecmp[0] if ecmp else None, ecmp) for _, ecmp in speaker.loc_rib.selected())
        seen = {prefix for prefix, _ in items}
        items += [(prefix, ()) for prefix in self.fib.entries() if prefix not in seen]
        self._push(self.fib.update_many(items))

    def _on_peer_state(self, event: PeerStateChanged) -> None:
        peer = self.peers.get(event.peer_id)
        if peer is None:
            return
        peer.bgp_state = event.new
        address = str(peer.desired.config.peer_address)
        events = self.events
        events.emit(BgpTransition(self.name, peer.name, event.new.value, event.reason.value))
        if event.new is State.ESTABLISHED:
            events.emit(BgpSessionUp(self.name, peer.name, address))
            peer.came_up = True
            if event.local_address is not None:
                peer.local_address = event.local_address
            # The event carries the connection's local address: BFD is requested from it right here.
            self.liveness.ensure(peer, self.loop.time())
            peer.end_of_rib = set()
            self.check_deferral()  # converged already if it negotiated none of the adopted families
        elif event.old is State.ESTABLISHED:
            # Before its routes are withdrawn: adopted routes may point at this peer.
            end = self._deferral.session_down()
            if end is not None:
                self._deferral_ended(end, peer.name)
            notification = event.notification
            events.emit(
                BgpSessionDown(
                    self.name,
                    peer.name,
                    address,
                    event.new.value,
                    event.reason.value,
                    f"{notification.code}/{notification.subcode}" if notification else None,
                    event.detail or None,
                    event.reason in _EXPECTED_DOWN,
                )
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
        self.events.emit(
            MaxPrefix(self.name, event.peer_id, event.event.name.lower(), event.count, event.limit)
        )

    def _on_refused(self, event: ConnectionRefused) -> None:
        self.refused += 1
        first = event.address not in self._refused_logged and len(self._refused_logged) < 256
        if first:
            self._refused_logged.add(event.address)
        self.events.emit(ConnectionRefusedEvent(self.name, str(event.address), first))

    # -- persist-routes -----------------------------------------------------------------------------

    def _rearm(
        self, timer: asyncio.TimerHandle | None, deadline: float | None, callback: Callable[[], None]
    ) -> asyncio.TimerHandle | None:
        """One loop timer per pure core, at its `next_deadline()` (None: no timer)."""
        if timer is not None:
            timer.cancel()
        return self.loop.call_at(deadline, callback) if deadline is not None else None

    def _arm_persist_timer(self) -> None:
        self._persist_timer = self._rearm(
            self._persist_timer, self.fib.next_deadline(), self._persist_expired
        )
        self._note_persist_state()

    def _persist_expired(self) -> None:
        self._persist_timer = None
        now = self.loop.time()
        window = self.fib.recovery_deadline
        changes = self.fib.handle_timer(now)
        if changes:
            routes = sum(1 for e in changes.values() if e is None)
            ended = window is not None and now >= window
            self.events.emit((PersistWindowEnded if ended else PersistGraceEnded)(self.name, routes))
        self._push(changes)
        self._arm_persist_timer()

    def _note_persist_state(self) -> None:
        state = self.fib.state
        if state is not self._persist_state:
            self._persist_state = state
            self.events.emit(PersistStateChanged(self.name, state.value, len(self.fib.persisted())))

    # -- restart deferral (controller/runtime/deferral.py decides; this carries it out) ---------------

    def _arm_deferral_timer(self) -> None:
        self._deferral_timer = self._rearm(
            self._deferral_timer, self._deferral.next_deadline(), self._deferral_timer_fired
        )

    def _deferral_timer_fired(self) -> None:
        self._deferral_timer = None
        deferral = self._deferral
        established = self._established
        end = deferral.handle_timer(self.loop.time(), established, self.peers)
        if end is not None:
            self._deferral_ended(end)
            return
        self._arm_deferral_timer()
        self.check_deferral()

    def _established(self, name: str) -> bool:
        peer = self.peers.get(name)
        return peer is not None and peer.bgp_state is State.ESTABLISHED

    def check_deferral(self) -> None:
        """End the deferral once every awaited peer is Established and sent its End-of-RIBs."""
        deferral = self._deferral
        if not deferral.active:
            return
        families: set[str] = set()
        for table in self.tables.values():
            families |= table.adopted_families
        tables_open = all(t.writer is not None for t in self.tables.values())
        # The configured peers (self.peers fills while the speaker starts).
        names = [p.name for p in self.desired.peers]
        end = deferral.check(tables_open, families, names, self._peer_converged)
        if end is not None:
            self._deferral_ended(end)

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

    def _deferral_ended(self, reason: DeferralEnd, peer: str | None = None) -> None:
        """The deferral decided to end: the tables write what they held back (one batch each)."""
        self._arm_deferral_timer()  # inactive now: cancels the timer
        adopted = any(t.adopted_families for t in self.tables.values())
        written = sum(t.end_deferral() for t in self.tables.values())
        if adopted:
            deferral = self._deferral
            self.events.emit(
                DeferralEnded(
                    self.name,
                    reason.value,
                    peer,
                    round(self.loop.time() - deferral.started, 3),
                    written,
                    sorted(deferral.not_awaited) or None,
                )
            )

    # -- observation ----------------------------------------------------------------------------------

    def observe(self) -> None:
        """Periodic: log routes the peers' import policies rejected since the last look."""
        speaker = self.speaker
        if speaker is None:
            return
        for peer in self.peers.values():
            if peer.applied is None:
                continue
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
            examples = [key_str(r.prefix) for r in list(adj.recent_rejections)[-3:]] if adj else []
            self.events.emit(
                RoutesRejected(
                    self.name, peer.name, status.prefixes_rejected - peer.rejected_logged, delta, examples
                )
            )
            peer.rejected_logged = status.prefixes_rejected
            peer.rejected_by_reason_logged = dict(status.rejected_by_reason)
