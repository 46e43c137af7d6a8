"""Fakes for the runtime's backends: a speaker driven by the test, a recording table writer, a BFD service.

The fake speaker keeps a real LocRib, so route selection (AS path length, ECMP sets) is the real
decision process; the test decides when sessions come up, what is announced and withdrawn, and
the speaker publishes the same events in the same order as bgp.speaker.Speaker (the state change
before the withdrawals of a session going down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address, ip_network
from types import SimpleNamespace
from typing import Any

from bfd.codec import Diag
from bfd.codec import State as BfdState
from bfd.service import BfdProfile, ServiceStatus
from bfd.session import StateChange
from bfd.session import TransitionReason as BfdReason
from bgp.api import PeerConfig, PeerStateChanged, PeerStatus, RoutesChanged, SpeakerEvent
from bgp.fsm.events import DownReason, State, TransitionReason
from bgp.rib.adj_rib_in import AdjRibIn
from bgp.rib.decision import DecisionOptions
from bgp.rib.loc_rib import LocRib
from bgp.rib.path import Path, PeerInfo
from bgp.types import AsPath, AsPathSegment, IPAddress, PathAttributes, SegmentType, prefix_key
from controller.desired import (
    Address,
    Backed,
    Hops,
    RouteChanges,
    RouteKey,
    SelectionSettings,
    SpeakerSettings,
    TableDesired,
)
from controller.writers.base import Rejection, RejectReason, WantedRoutes, WriteReport


class FakeSpeaker:
    def __init__(
        self, settings: SpeakerSettings, selection: SelectionSettings, fail_start: bool = False
    ) -> None:
        self.settings = settings
        self.loc_rib = LocRib(
            max_paths=selection.rib_max_paths, always_compare_med=selection.always_compare_med
        )
        self.peers: dict[str, PeerConfig] = {}
        self.states: dict[str, State] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.listeners: list[Callable[[SpeakerEvent], None]] = []
        self.fail_start = fail_start
        self.rejected: dict[str, dict[str, int]] = {}  # peer -> reason -> count, for status()
        self.held: dict[str, tuple[str, float | None]] = {}  # peer -> held Idle (reason, until), for status()
        self.add_failures: list[Exception] = []  # raised by the next add_peer calls, one each
        self.established_count: dict[str, int] = {}
        self.started = False
        self.stopped = False

    # -- SpeakerLike --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.fail_start:
            raise OSError(98, "Address already in use")
        self.started = True

    async def stop(self, message: str = "") -> None:
        self.calls.append(("stop", message))
        for peer_id in list(self.peers):
            self._down(peer_id, TransitionReason.MANUAL_STOP)
        self.stopped = True

    def listening(self) -> list[tuple[IPAddress, int]]:
        return [(ip_address("0.0.0.0"), self.settings.listen_port)] if self.started else []

    async def add_peer(self, config: PeerConfig) -> None:
        self.calls.append(("add", config.peer_id))
        if self.add_failures:
            raise self.add_failures.pop(0)
        self.peers[config.peer_id] = config
        self.states[config.peer_id] = State.IDLE

    async def update_peer(self, config: PeerConfig) -> None:
        self.calls.append(("update", config.peer_id))
        self.peers[config.peer_id] = config

    async def remove_peer(self, peer_id: str) -> None:
        self.calls.append(("remove", peer_id))
        self._down(peer_id, TransitionReason.MANUAL_STOP)
        del self.peers[peer_id]

    def peer_down(
        self, peer_id: str, reason: DownReason = DownReason.BFD_DOWN, graceful: bool = False
    ) -> None:
        self.calls.append(("peer_down", peer_id, reason))
        self._down(peer_id, TransitionReason(reason.value))

    def add_listener(self, callback: Callable[[SpeakerEvent], None]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback) if callback in self.listeners else None

    def set_route_selection(self, max_paths: int, always_compare_med: bool = False) -> None:
        self.calls.append(("selection", max_paths))
        options = DecisionOptions(max_paths, always_compare_med, False, 100)
        changes = self.loc_rib.reconfigure(options)
        if changes:
            self._publish(RoutesChanged("", tuple(changes)))

    def status(self, peer_id: str) -> PeerStatus:
        config = self.peers[peer_id]
        return PeerStatus(
            peer_id=peer_id,
            address=str(config.peer_address),
            asn=config.peer_asn,
            state=self.states[peer_id].value,
            established_at=None,
            uptime=None,
            last_transition=None,
            last_transition_detail="",
            last_transition_at=None,
            last_error=None,
            last_notification_sent=None,
            last_notification_received=None,
            prefixes_received=self.loc_rib.peer_path_count(peer_id),
            prefixes_accepted=self.loc_rib.peer_path_count(peer_id),
            prefixes_rejected=sum(self.rejected.get(peer_id, {}).values()),
            rejected_by_reason=dict(self.rejected.get(peer_id, {})),
            prefixes_stale=0,
            established_count=self.established_count.get(peer_id, 0),
            updates_received=0,
            connect_attempts=0,
            negotiated=None,
            held_idle_reason=self.held[peer_id][0] if peer_id in self.held else None,
            held_idle_until=self.held[peer_id][1] if peer_id in self.held else None,
        )

    def adj_rib_in(self, peer_id: str) -> AdjRibIn | None:
        if peer_id not in self.peers:
            raise KeyError(peer_id)
        return None

    # -- driven by tests ------------------------------------------------------------------------

    def establish(self, peer_id: str, local: str | None = None) -> None:
        """Established; `local`: our address on the connection, as the real speaker's event carries it."""
        self.established_count[peer_id] = self.established_count.get(peer_id, 0) + 1
        self._set_state(
            peer_id,
            State.ESTABLISHED,
            TransitionReason.KEEPALIVE_RECEIVED,
            ip_address(local) if local is not None else None,
        )

    def announce(self, peer_id: str, prefix: str, next_hop: str | None = None, path_length: int = 1) -> None:
        config = self.peers[peer_id]
        info = self._info(peer_id)
        attributes = PathAttributes(
            as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (config.peer_asn,) * path_length),)),
            next_hop=ip_address(next_hop) if next_hop else config.peer_address,
        )
        change = self.loc_rib.update(info, prefix_key(ip_network(prefix)), Path(info, attributes))
        if change is not None:
            self._publish(RoutesChanged(peer_id, (change,)))

    def withdraw(self, peer_id: str, prefix: str) -> None:
        change = self.loc_rib.update(self._info(peer_id), prefix_key(ip_network(prefix)), None)
        if change is not None:
            self._publish(RoutesChanged(peer_id, (change,)))

    def _info(self, peer_id: str) -> PeerInfo:
        config = self.peers[peer_id]
        address = config.peer_address
        router_id = address if isinstance(address, IPv4Address) else IPv4Address("10.0.0.1")
        return PeerInfo(peer_id, address, config.peer_asn, router_id, self.settings.asn)

    def _down(self, peer_id: str, reason: TransitionReason) -> None:
        if self.states.get(peer_id) is State.ESTABLISHED:
            self._set_state(peer_id, State.IDLE, reason)
        changes = self.loc_rib.remove_peer(peer_id)
        if changes:
            self._publish(RoutesChanged(peer_id, tuple(changes)))

    def _set_state(
        self, peer_id: str, new: State, reason: TransitionReason, local: IPAddress | None = None
    ) -> None:
        old = self.states[peer_id]
        self.states[peer_id] = new
        self._publish(PeerStateChanged(peer_id, old, new, reason, local_address=local))

    def publish(self, event: SpeakerEvent) -> None:
        self._publish(event)

    def _publish(self, event: SpeakerEvent) -> None:
        for callback in list(self.listeners):
            callback(event)


class SpeakerFactory:
    """Records every speaker made; `fail_next` makes the next one fail to bind."""

    def __init__(self) -> None:
        self.made: list[FakeSpeaker] = []
        self.fail_next = False

    def __call__(self, settings: SpeakerSettings, selection: SelectionSettings) -> FakeSpeaker:
        speaker = FakeSpeaker(settings, selection, fail_start=self.fail_next)
        self.fail_next = False
        self.made.append(speaker)
        return speaker

    @property
    def last(self) -> FakeSpeaker:
        return self.made[-1]


@dataclass
class FakeWriter:
    table: int = 100
    routes: dict[RouteKey, Hops] = field(default_factory=dict)
    applies: list[dict[RouteKey, Hops | None]] = field(default_factory=list)
    resyncs: list[dict[RouteKey, Hops]] = field(default_factory=list)
    withdrawn: int = 0
    closed: bool = False
    fail: int = 0  # fail this many writes
    resync_seconds: float = 0.0  # how long each resync takes
    unreachable: set[Address] = field(default_factory=set)
    written: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: WantedRoutes | None = None  # the table it follows
    failovers: list[set[Address]] = field(default_factory=list)  # fail_over calls, in order

    async def start(self) -> WriteReport:
        return WriteReport()

    async def apply(self, changes: RouteChanges) -> WriteReport:
        self._maybe_fail()
        self.applies.append(dict(changes))
        return self._write(changes)

    async def resync(self, desired: Mapping[RouteKey, Hops]) -> WriteReport:
        self._maybe_fail()
        if self.resync_seconds:
            await asyncio.sleep(self.resync_seconds)
        self.resyncs.append(dict(desired))
        changes: dict[RouteKey, Hops | None] = {p: None for p in self.routes if p not in desired}
        changes.update(desired)
        return self._write(changes)

    async def withdraw_all(self) -> WriteReport:
        self.withdrawn += 1
        report = WriteReport(removed=len(self.routes))
        self.routes.clear()
        return report

    def follow(self, wanted: WantedRoutes) -> None:
        self.wanted = wanted

    def fail_over(self, gateways: Collection[Address]) -> WriteReport | None:
        """Like the node writer's group rewrite: routes via a dead gateway move to what is left of
        their next hops, or to their backup (recorded in `failovers`)."""
        self.failovers.append(set(gateways))
        moved = 0
        for prefix, hops in list(self.routes.items()):
            left = tuple(h for h in hops if h not in gateways)
            if len(left) == len(hops):
                continue
            if not left:
                left = hops.backup if isinstance(hops, Backed) else ()
            if left and not set(left) & set(gateways):
                self.routes[prefix] = left
                moved += 1
        return WriteReport(installed=moved)

    def installed(self) -> Mapping[RouteKey, Hops]:
        return dict(self.routes)

    def installed_route(self, prefix: RouteKey) -> Hops | None:
        return self.routes.get(prefix)

    def installed_count(self) -> int:
        return len(self.routes)

    def first_installed(self, limit: int) -> list[tuple[RouteKey, Hops]]:
        return [(key, self.routes[key]) for key in sorted(self.routes)[: max(0, limit)]]

    def matches(self, desired: Mapping[RouteKey, Hops], version: int) -> bool:
        return self.routes == dict(desired)

    async def close(self) -> None:
        self.closed = True

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(105, "No buffer space available")

    def _write(self, changes: RouteChanges) -> WriteReport:
        report = WriteReport()
        for prefix, entry in changes.items():
            if entry is None:
                if self.routes.pop(prefix, None) is not None:
                    report.removed += 1
            elif set(entry) & self.unreachable:
                report.rejected.append(Rejection(prefix, RejectReason.UNREACHABLE_NEXT_HOP, "unreachable"))
            else:
                self.routes[prefix] = entry
                report.installed += 1
        self.written.set()
        return report


class WriterFactory:
    def __init__(self) -> None:
        self.writers: dict[str, FakeWriter] = {}
        self.preload: dict[str, dict[RouteKey, Hops]] = {}

    def __call__(self, desired: TableDesired) -> FakeWriter:
        writer = FakeWriter(routes=dict(self.preload.get(desired.name, {})))
        self.writers[desired.name] = writer
        return writer


class FakeHandle:
    def __init__(
        self, service: FakeBfd, peer: IPAddress, local: IPAddress | None, profile: BfdProfile
    ) -> None:
        self.service = service
        self.peer = peer
        self.local = local
        self.profile = profile
        self.released = False
        self.callback: Callable[[StateChange], object] | None = None
        self.on_close: Callable[[], object] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def subscribe(
        self,
        callback: Callable[[StateChange], object],
        loop: asyncio.AbstractEventLoop | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> object:
        self.callback, self.loop, self.on_close = callback, loop, on_close
        # Like the service: a snapshot, and changes after it delivered into the loop (possibly before
        # the subscriber's own call has returned).
        if self.service.change_on_subscribe is not None and loop is not None:
            loop.call_soon_threadsafe(callback, self.service.change_on_subscribe)
        return SimpleNamespace(initial=SimpleNamespace(state=self.service.initial_state))

    def release(self) -> None:
        self.released = True

    def close_by_service(self) -> None:
        """The service ends the session on its own (it stopped or restarted)."""
        assert self.on_close is not None and self.loop is not None
        self.released = True
        self.loop.call_soon_threadsafe(self.on_close)

    def emit(self, old: BfdState, new: BfdState, reason: BfdReason, diag: Diag = Diag.NO_DIAGNOSTIC) -> None:
        """Deliver a state change as the service does: into the subscriber's loop."""
        assert self.callback is not None and self.loop is not None
        self.loop.call_soon_threadsafe(self.callback, StateChange(old, new, diag, reason, 0.0))


class FakeBfd:
    """A BFD service; `failures` are raised by the next requests, one each (fault injection)."""

    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []
        self.running = True
        self.initial_state = BfdState.DOWN
        self.change_on_subscribe: StateChange | None = None
        self.failures: list[Exception] = []
        self.requests = 0

    def request(
        self,
        peer: IPAddress,
        *,
        local: IPAddress | None = None,
        interface: str | None = None,
        profile: BfdProfile | None = None,
    ) -> FakeHandle:
        self.requests += 1
        if self.failures:
            raise self.failures.pop(0)
        handle = FakeHandle(self, peer, local, profile or BfdProfile())
        self.handles.append(handle)
        return handle

    def status(self) -> ServiceStatus:
        return ServiceStatus(sessions=(), drops={}, listening={}, timer_lateness=(), timer_lateness_max_s=0.0)

    def live(self, peer: str) -> list[FakeHandle]:
        return [h for h in self.handles if str(h.peer) == peer and not h.released]

    def subscribed(self, peer: str) -> list[FakeHandle]:
        """Live handles whose subscriber is attached: only these can deliver state changes."""
        return [h for h in self.live(peer) if h.callback is not None and h.loop is not None]
