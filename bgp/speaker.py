"""The BGP speaker: codec + FSM + RIB glued on asyncio, with the API the controller uses.

One `Speaker` per router: a listener shared by every peer (unknown addresses refused before OPEN),
one Session and PeerDriver per configured peer, one AdjRibIn per peer and one shared LocRib. Received
UPDATEs go Unreach first, then Reach, through the peer's import policy into the Loc-RIB, and the
resulting RibChanges are published once per UPDATE (DESIGN §5). Our own routes (`advertise`) go to
every Established peer and to peers that come up later, followed by End-of-RIB (RFC 4724 §2).

Liveness: `peer_down` is the BFD hook (RFC 5882 §4.2): the session goes down at once with
Cease/BFD Down (RFC 9384) and the peer's routes are withdrawn, or kept as stale when the caller asks
for graceful handling and the peer negotiated graceful restart. Graceful restart as receiving speaker
(RFC 4724 §4.2): on a graceful SessionDown the peer's paths are kept stale for the restart time it
advertised; End-of-RIB per family (or the stale-path timer) flushes what it did not re-announce.

Max-prefix (bgp.rib.policy.MaxPrefixAction): WARN and REJECT are the Adj-RIB-In's business; on
TEARDOWN the session is closed with Cease/Maximum Number of Prefixes Reached (RFC 4486 §4) and held
Idle with automatic start off (RFC 4271 §8.1.1) until `update_peer` brings any change of the peer's
configuration, or until the limit's `restart_after` elapses. Status shows the hold and its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, ip_network

from bgp.api import (
    ConnectionRefused,
    EndOfRib,
    GracefulMode,
    NegotiatedInfo,
    NotificationInfo,
    PeerConfig,
    PeerStateChanged,
    PeerStatus,
    PrefixLimit,
    RoutesChanged,
    SpeakerEvent,
    SpeakerStatus,
    notification_name,
)
from bgp.codec.errors import CeaseSubcode
from bgp.codec.messages import RouteRefresh, RouteRefreshSubtype, encode_route_refresh
from bgp.codec.update import Update, build_updates, build_withdrawals, encode_end_of_rib
from bgp.fsm.events import (
    DownReason,
    Established,
    Event,
    RouteRefreshRequested,
    SessionDown,
    State,
    StateChanged,
    TransitionReason,
    UpdateReceived,
)
from bgp.fsm.negotiation import Negotiated
from bgp.fsm.session import Session
from bgp.io.connection import PeerDriver, TransportConfig
from bgp.io.listener import Listener, PeerSecurity
from bgp.io.sockopts import gtsm_min_ttl, kernel_drop_counters
from bgp.rib.adj_rib_in import FAMILIES, AdjRibIn, IntakeResult
from bgp.rib.loc_rib import LocRib, RibChange
from bgp.rib.path import PeerInfo, RouteBatch
from bgp.rib.policy import MaxPrefix, MaxPrefixAction, MaxPrefixEvent
from bgp.types import (
    IPV4_UNICAST,
    AsPath,
    AsPathSegment,
    Family,
    IPAddress,
    PathAttributes,
    Prefix,
    PrefixKey,
    SegmentType,
    key_family,
    prefix_key,
)

log = logging.getLogger(__name__)

DEFAULT_LOCAL_PREF = 100


def transport_config(config: PeerConfig) -> TransportConfig:
    """The connection settings of a peer.

    The connect timeout stays below the ConnectRetry time (jittered down to 0.75 of it, RFC 4271
    §10), so a connect that hangs (TCP-MD5 or GTSM drops) is reported as such before the FSM
    supersedes it.
    """
    return TransportConfig(
        peer_address=config.peer_address,
        peer_port=config.port,
        local_address=config.local_address,
        local_port=config.local_port,
        password=config.password,
        gtsm_hops=config.ttl_security_hops,
        multihop_ttl=config.multihop_ttl,
        connect_timeout=config.connect_retry_time * 0.7,
    )


def peer_security(config: PeerConfig) -> PeerSecurity:
    """What the listener checks of an incoming connection from this peer (TCP-MD5 key, GTSM)."""
    hops = config.ttl_security_hops
    return PeerSecurity(config.password, 0 if hops is None else gtsm_min_ttl(hops))


class Subscription:
    """An unbounded queue of SpeakerEvents; iterate with `async for` until `close()`."""

    def __init__(self, speaker: Speaker) -> None:
        self._speaker = speaker
        self._queue: asyncio.Queue[SpeakerEvent | None] = asyncio.Queue()
        self._closed = False

    def _put(self, event: SpeakerEvent) -> None:
        if not self._closed:
            self._queue.put_nowait(event)

    async def get(self) -> SpeakerEvent | None:
        """The next event; None once the subscription is closed and drained."""
        if self._closed and self._queue.empty():
            return None
        return await self._queue.get()

    def get_nowait(self) -> SpeakerEvent | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
            self._speaker._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SpeakerEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event


# -- Per-peer state ------------------------------------------------------------------------------------


class _Peer:
    def __init__(self, config: PeerConfig, session: Session) -> None:
        self.config = config
        self.session = session
        self.driver: PeerDriver | None = None
        self.adj: AdjRibIn | None = None
        self.negotiated: Negotiated | None = None
        self.local_address: IPAddress | None = None
        self.established_mono: float | None = None
        self.established_wall: float | None = None
        self.established_count = 0
        self.updates_received = 0
        self.last_transition: TransitionReason | None = None
        self.last_detail = ""
        self.last_transition_at: float | None = None
        self.last_sent: NotificationInfo | None = None
        self.last_received: NotificationInfo | None = None
        self.down_override: GracefulMode | None = None
        self.restart_timer: asyncio.TimerHandle | None = None
        self.stale_timer: asyncio.TimerHandle | None = None
        self.export_cache: dict[tuple[Family, PathAttributes], PathAttributes | None] = {}
        self.warned_next_hop: set[Family] = set()

    @property
    def peer_id(self) -> str:
        return self.config.peer_id

    def cancel_timers(self) -> None:
        for handle in (self.restart_timer, self.stale_timer):
            if handle is not None:
                handle.cancel()
        self.restart_timer = self.stale_timer = None


# -- The speaker -----------------------------------------------------------------------------------------


PrefixLike = Prefix | PrefixKey | str


def to_key(prefix: PrefixLike) -> PrefixKey:
    if isinstance(prefix, int):
        return prefix
    if isinstance(prefix, str):
        return prefix_key(ip_network(prefix))
    return prefix_key(prefix)


class Speaker:
    """A BGP speaker on asyncio. Create and use it inside a running event loop."""

    def __init__(
        self,
        local_asn: int,
        router_id: IPv4Address | str,
        listen_addresses: Sequence[IPAddress | str] = ("0.0.0.0", "::"),
        listen_port: int = 179,
        *,
        listen: bool = True,
        max_paths: int = 1,
        always_compare_med: bool = False,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.local_asn = local_asn
        self.router_id = IPv4Address(router_id) if isinstance(router_id, str) else router_id
        self.loc_rib = LocRib(max_paths=max_paths, always_compare_med=always_compare_med)
        self._rng = rng
        self._peers: dict[str, _Peer] = {}
        self._by_address: dict[IPAddress, _Peer] = {}
        self._routes: dict[PrefixKey, PathAttributes] = {}
        self._subscribers: list[Subscription] = []
        self._listeners: list[Callable[[SpeakerEvent], None]] = []
        self._listener: Listener | None = None
        if listen:
            self._listener = Listener(self._lookup, listen_addresses, listen_port, on_refused=self._refused)
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listening sockets (OSError if an address cannot be bound)."""
        if self._started:
            return
        self._started = True
        if self._listener is not None:
            await self._listener.start()

    async def stop(self, message: str = "") -> None:
        """Cease/Administrative Shutdown (RFC 9003 message) to every peer, then close everything."""
        await asyncio.gather(
            *(
                self._shutdown_peer(peer, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, message)
                for peer in list(self._peers.values())
            )
        )
        self._peers.clear()
        self._by_address.clear()
        if self._listener is not None:
            await self._listener.close()
        for sub in list(self._subscribers):
            sub.close()
        self._started = False

    def listening(self) -> list[tuple[IPAddress, int]]:
        return self._listener.bound() if self._listener is not None else []

    # -- peers ---------------------------------------------------------------------------------------

    async def add_peer(self, config: PeerConfig) -> None:
        """Configure and start a peer (connects unless passive; accepts from its address)."""
        if config.peer_id in self._peers:
            raise ValueError(f"peer {config.peer_id} already configured")
        if config.peer_address in self._by_address:
            raise ValueError(f"a peer with address {config.peer_address} is already configured")
        session = Session(config.session_config(self.local_asn, self.router_id), self._rng)
        peer = _Peer(config, session)
        peer.driver = PeerDriver(config.peer_id, session, transport_config(config), self._driver_events(peer))
        self._peers[config.peer_id] = peer
        self._by_address[config.peer_address] = peer
        if self._listener is not None:
            self._listener.configure_peer(config.peer_address, peer_security(config))
        peer.driver.call(session.start)

    async def update_peer(self, config: PeerConfig) -> None:
        """Apply a changed configuration.

        Import policy and max-prefix apply in place (routes the new policy rejects are withdrawn; a
        ROUTE-REFRESH asks the peer for routes a wider policy or a roomier limit now admits, RFC
        2918). Anything else restarts the session with Cease/Other Configuration Change (RFC 4486).
        Any change releases a session held Idle by a max-prefix teardown (a ManualStart).
        """
        peer = self._peers.get(config.peer_id)
        if peer is None:
            raise KeyError(config.peer_id)
        old = peer.config
        if old == config:
            return
        if old._session_fields() != config._session_fields():
            await self._shutdown_peer(peer, CeaseSubcode.OTHER_CONFIGURATION_CHANGE)
            del self._peers[old.peer_id]
            self._by_address.pop(old.peer_address, None)
            await self.add_peer(config)
            return
        peer.config = config
        peer.export_cache.clear()
        peer.warned_next_hop.clear()
        held = peer.session.held
        if held is not None:
            log.info("BGP peer %s: configuration changed, releasing the %s hold", peer.peer_id, held.value)
            assert peer.driver is not None
            peer.driver.call(peer.session.start)
        adj = peer.adj
        if adj is None:
            return
        refresh = False
        if old.max_prefix != config.max_prefix:
            refused = adj.refused_since_clear
            result = adj.set_max_prefix(config.max_prefix)
            self._apply(peer, result.changes)
            if result.max_prefix is not None:
                self._max_prefix(peer, result.max_prefix)
            refresh = refused > 0 and _capacity(config.max_prefix) > _capacity(old.max_prefix)
        if old.import_policy != config.import_policy:
            result = adj.set_policy(config.import_policy)
            self._apply(peer, result.changes)
            refresh = True
        if refresh and peer.negotiated is not None:
            self.request_refresh(peer.peer_id)

    async def remove_peer(self, peer_id: str) -> None:
        """Cease/Peer De-configured (RFC 4486), withdraw the peer's routes, forget it."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise KeyError(peer_id)
        await self._shutdown_peer(peer, CeaseSubcode.PEER_DECONFIGURED)
        del self._peers[peer_id]
        self._by_address.pop(peer.config.peer_address, None)

    async def _shutdown_peer(self, peer: _Peer, subcode: CeaseSubcode, message: str = "") -> None:
        peer.down_override = GracefulMode.FLUSH
        driver = peer.driver
        assert driver is not None
        driver.call(lambda now: peer.session.stop(now, subcode, message))
        await driver.close()
        peer.cancel_timers()
        if self._listener is not None:
            self._listener.remove_peer(peer.config.peer_address)
        self._flush_peer(peer)
        self.loc_rib.detach(peer.peer_id)

    def peers(self) -> list[PeerConfig]:
        return [p.config for p in self._peers.values()]

    # -- liveness and refresh ---------------------------------------------------------------------

    def peer_down(
        self, peer_id: str, reason: DownReason = DownReason.BFD_DOWN, graceful: bool = False
    ) -> None:
        """The liveness hook (BFD, RFC 5882 §4.2): tear the session down now.

        Sends the Cease for `reason` (BFD Down, RFC 9384), closes the connection and withdraws the
        peer's routes at once; with `graceful` and graceful restart negotiated they are kept stale
        for the peer's restart time instead. The session reconnects after its IdleHold backoff.
        """
        peer = self._peers.get(peer_id)
        if peer is None:
            raise KeyError(peer_id)
        peer.down_override = GracefulMode.KEEP_STALE if graceful else GracefulMode.FLUSH
        assert peer.driver is not None
        peer.driver.call(lambda now: peer.session.force_down(now, reason))

    def request_refresh(self, peer_id: str, families: Iterable[Family] | None = None) -> list[Family]:
        """Ask an Established peer to resend its routes (RFC 2918); returns the families asked for."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise KeyError(peer_id)
        negotiated = peer.negotiated
        if negotiated is None or peer.driver is None:
            return []
        asked: list[Family] = []
        for family in negotiated.families if families is None else families:
            if peer.session.request_route_refresh(family):
                asked.append(family)
        peer.driver.pump()
        return asked

    # -- our own routes -------------------------------------------------------------------------------

    async def advertise(self, prefixes: Iterable[PrefixLike], attributes: PathAttributes) -> None:
        """Originate prefixes with these attributes to every Established peer, and to later ones.

        For eBGP peers our ASN is prepended and LOCAL_PREF dropped (RFC 4271 §5.1.2, §5.1.5); a missing
        next hop becomes our address on the session (or the peer's configured next hop of that family).
        """
        keys = [to_key(p) for p in prefixes]
        for key in keys:
            self._routes[key] = attributes
        by_family = _by_family(keys)
        for peer in self._established_peers():
            messages: list[bytes] = []
            for family, group in by_family.items():
                messages += self._updates_for(peer, family, attributes, group)
            self._send(peer, messages)

    async def withdraw(self, prefixes: Iterable[PrefixLike]) -> None:
        """Stop originating prefixes: withdraw them from every Established peer."""
        keys = [k for k in (to_key(p) for p in prefixes) if self._routes.pop(k, None) is not None]
        by_family = _by_family(keys)
        for peer in self._established_peers():
            assert peer.negotiated is not None
            messages: list[bytes] = []
            for family, group in by_family.items():
                if family in peer.negotiated.families:
                    messages += build_withdrawals(family, group, peer.negotiated.codec)
            self._send(peer, messages)

    def advertised(self) -> dict[PrefixKey, PathAttributes]:
        return dict(self._routes)

    # -- queries ------------------------------------------------------------------------------------------

    def status(self, peer_id: str) -> PeerStatus:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise KeyError(peer_id)
        return self._peer_status(peer)

    def statuses(self) -> SpeakerStatus:
        listener = self._listener
        return SpeakerStatus(
            local_asn=self.local_asn,
            router_id=str(self.router_id),
            listening=tuple(f"{a}:{p}" for a, p in self.listening()),
            refused=listener.refused if listener is not None else 0,
            refused_by_address={str(a): n for a, n in listener.refused_by_address.items()}
            if listener
            else {},
            kernel_drops=kernel_drop_counters(),
            peers=tuple(self._peer_status(p) for p in self._peers.values()),
        )

    def set_route_selection(self, max_paths: int, always_compare_med: bool = False) -> None:
        """Switch between active/passive (1) and ECMP (more); changed prefixes are published at once."""
        options = replace(self.loc_rib.options, max_paths=max_paths, always_compare_med=always_compare_med)
        if options == self.loc_rib.options:
            return
        changes = self.loc_rib.reconfigure(options)
        if changes:
            self._publish(RoutesChanged("", tuple(changes)))

    def adj_rib_in(self, peer_id: str) -> AdjRibIn | None:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise KeyError(peer_id)
        return peer.adj

    def driver(self, peer_id: str) -> PeerDriver:
        driver = self._peers[peer_id].driver
        assert driver is not None
        return driver

    # -- subscriptions --------------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """Every SpeakerEvent from now on, in order (RIB changes batched per UPDATE)."""
        sub = Subscription(self)
        self._subscribers.append(sub)
        return sub

    def add_listener(self, callback: Callable[[SpeakerEvent], None]) -> Callable[[], None]:
        """A synchronous callback per event (e.g. a FIB writer that must not wait for a task switch).

        Returns the function that removes it. Callbacks run inside the speaker: they must not block.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)

    def _publish(self, event: SpeakerEvent) -> None:
        for sub in self._subscribers:
            sub._put(event)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("BGP speaker event listener failed")

    # -- listener glue -----------------------------------------------------------------------------------

    def _lookup(self, address: IPAddress) -> PeerDriver | None:
        peer = self._by_address.get(address)
        return None if peer is None else peer.driver

    def _refused(self, address: IPAddress, port: int) -> None:
        self._publish(ConnectionRefused(address, port))

    # -- session events --------------------------------------------------------------------------------

    def _driver_events(self, peer: _Peer) -> Callable[[PeerDriver, list[Event]], None]:
        def handle(driver: PeerDriver, events: list[Event]) -> None:
            for event in events:
                if isinstance(event, UpdateReceived):
                    self._on_update(peer, event.update)
                elif isinstance(event, StateChanged):
                    self._on_state(peer, event)
                elif isinstance(event, Established):
                    self._on_established(peer, driver, event.negotiated)
                elif isinstance(event, SessionDown):
                    self._on_down(peer, event)
                elif isinstance(event, RouteRefreshRequested):
                    self._on_refresh(peer, event)

        return handle

    def _on_state(self, peer: _Peer, event: StateChanged) -> None:
        peer.last_transition = event.reason
        peer.last_detail = event.detail
        peer.last_transition_at = time.time()
        if event.notification is not None:
            info = NotificationInfo.of(event.notification, time.time())
            if event.reason is TransitionReason.NOTIFICATION_RECEIVED:
                peer.last_received = info
            else:
                peer.last_sent = info
        level = (
            logging.INFO
            if event.new is State.ESTABLISHED or event.old is State.ESTABLISHED
            else logging.DEBUG
        )
        log.log(
            level,
            "BGP peer %s: %s -> %s (%s%s%s)",
            peer.peer_id,
            event.old.value,
            event.new.value,
            event.reason.value,
            f", {notification_name(event.notification.code, event.notification.subcode)}"
            if event.notification
            else "",
            f": {event.detail}" if event.detail else "",
        )
        local = None
        if event.new is State.ESTABLISHED:
            local = peer.local_address = self._connection_local_address(peer)
        self._publish(
            PeerStateChanged(
                peer.peer_id, event.old, event.new, event.reason, event.notification, event.detail, local
            )
        )

    @staticmethod
    def _connection_local_address(peer: _Peer) -> IPAddress | None:
        """Our address on the peer's session connection (after collision resolution only one is left)."""
        driver = peer.driver
        if driver is None:
            return None
        local = None
        for conn_id in peer.session.connections:
            conn = driver.connection(conn_id)
            if conn is not None and conn.local is not None:
                local = conn.local[0]
        return local

    def _on_established(self, peer: _Peer, driver: PeerDriver, negotiated: Negotiated) -> None:
        peer.negotiated = negotiated
        peer.down_override = None
        peer.established_mono = driver.now()
        peer.established_wall = time.time()
        peer.established_count += 1
        peer.export_cache.clear()
        peer.local_address = self._connection_local_address(peer)
        config = peer.config
        info = PeerInfo(
            config.peer_id, config.peer_address, config.peer_asn, negotiated.peer_router_id, self.local_asn
        )
        if peer.adj is None:
            peer.adj = AdjRibIn(info, config.import_policy, config.max_prefix)
        elif peer.adj.peer != info:
            peer.adj.set_peer(info)
        self.loc_rib.attach(peer.peer_id, peer.adj)  # the Loc-RIB lists the peer's prefixes from it
        self._resume_graceful(peer, negotiated)
        # Our table, then End-of-RIB per family (RFC 4724 §2), so the peer knows it is complete.
        for family in negotiated.families:
            messages = self._table_messages(peer, family)
            messages.append(encode_end_of_rib(family))
            self._send(peer, messages)

    def _on_update(self, peer: _Peer, update: Update) -> None:
        adj = peer.adj
        if adj is None:
            return
        peer.updates_received += 1
        if update.errors:
            log.warning(
                "BGP peer %s: UPDATE with errors handled per RFC 7606: %s",
                peer.peer_id,
                "; ".join(str(e) for e in update.errors),
            )
        batches: list[RouteBatch] = []
        worst: MaxPrefixEvent | None = None
        for unreach in update.unreach:
            result = adj.withdraw(unreach.family, unreach.prefixes, unreach.path_ids)
            batches += result.changes
            worst = _worse(worst, result)
        for reach in update.reach:
            result = adj.announce(reach.family, reach.prefixes, reach.attributes, reach.path_ids)
            batches += result.changes
            worst = _worse(worst, result)
        if update.end_of_rib is not None:
            batches += adj.flush_stale(update.end_of_rib)
        self._apply(peer, batches)
        if update.end_of_rib is not None:
            self._publish(EndOfRib(peer.peer_id, update.end_of_rib))
            if not adj.stale_families() and peer.stale_timer is not None:
                peer.stale_timer.cancel()
                peer.stale_timer = None
        if worst is not None:
            self._max_prefix(peer, worst)

    def _max_prefix(self, peer: _Peer, event: MaxPrefixEvent) -> None:
        adj = peer.adj
        limit = peer.config.max_prefix
        assert adj is not None and limit is not None
        self._publish(PrefixLimit(peer.peer_id, event, len(adj), limit.limit))
        if event is MaxPrefixEvent.TEARDOWN and limit.action is MaxPrefixAction.TEARDOWN:
            restart = limit.restart_after
            log.warning(
                "BGP peer %s: more than %d prefixes, closing (Cease 6/1) and staying Idle %s",
                peer.peer_id,
                limit.limit,
                "until the configuration changes" if restart is None else f"for {restart:g}s",
            )
            assert peer.driver is not None
            if peer.negotiated is None:
                return  # already down (a lowered limit re-checked while the session is not up)
            peer.down_override = GracefulMode.FLUSH
            peer.driver.call(
                lambda now: peer.session.force_down(
                    now,
                    DownReason.MAX_PREFIXES,
                    automatic_start=False,  # RFC 4271 §8.1.1: no automatic restart for this peer
                    restart_at=None if restart is None else now + restart,
                )
            )
        else:
            log.warning(
                "BGP peer %s: %d prefixes, limit %d (%s)",
                peer.peer_id,
                len(adj),
                limit.limit,
                event.name.lower(),
            )

    def _on_down(self, peer: _Peer, event: SessionDown) -> None:
        negotiated = peer.negotiated
        peer.negotiated = None
        peer.established_mono = peer.established_wall = None
        peer.local_address = None
        override, peer.down_override = peer.down_override, None
        if (
            override is GracefulMode.KEEP_STALE
            and negotiated is not None
            and negotiated.peer_graceful_restart
        ):
            families: tuple[Family, ...] = negotiated.stale_families()
            restart_time = float(negotiated.peer_graceful_restart.restart_time)
        elif override is None and event.graceful_restart:
            families, restart_time = event.stale_families, float(event.restart_time)
        else:
            families, restart_time = (), 0.0
        adj = peer.adj
        if not families or adj is None or restart_time <= 0:
            self._flush_peer(peer)
            return
        # RFC 4724 §4.2: keep the routes of the preserved families, marked stale, for the restart time.
        batches: list[RouteBatch] = []
        for family in FAMILIES:
            if family not in families and adj.count(family):
                adj.mark_stale((family,))
                batches += adj.flush_stale(family)
        self._apply(peer, batches)
        marked = adj.mark_stale(families)
        log.info("BGP peer %s: graceful restart, %d paths stale for %gs", peer.peer_id, marked, restart_time)
        if peer.stale_timer is not None:
            peer.stale_timer.cancel()
            peer.stale_timer = None
        if peer.restart_timer is None:
            loop = asyncio.get_running_loop()
            peer.restart_timer = loop.call_later(
                restart_time, self._flush_stale, peer, "restart timer expired"
            )

    def _resume_graceful(self, peer: _Peer, negotiated: Negotiated) -> None:
        """The peer is back: keep waiting for End-of-RIB only where it preserved forwarding state."""
        if peer.restart_timer is not None:
            peer.restart_timer.cancel()
            peer.restart_timer = None
        adj = peer.adj
        if adj is None or not adj.stale_families():
            return
        gr = negotiated.peer_graceful_restart
        preserved = {f for f, forwarding in gr.families if forwarding} if gr is not None else set()
        batches: list[RouteBatch] = []
        for family in adj.stale_families():
            if family not in preserved or family not in negotiated.families:
                # RFC 4724 §4.2: no GR capability, or the F bit clear: remove the stale routes now.
                batches += adj.flush_stale(family)
        self._apply(peer, batches)
        if adj.stale_families():
            loop = asyncio.get_running_loop()
            peer.stale_timer = loop.call_later(
                peer.config.stale_path_time,
                self._flush_stale,
                peer,
                "no End-of-RIB before the stale-path timer",
            )

    def _flush_stale(self, peer: _Peer, why: str) -> None:
        peer.restart_timer = peer.stale_timer = None
        adj = peer.adj
        if adj is None or self._peers.get(peer.peer_id) is not peer:
            return
        batches: list[RouteBatch] = []
        for family in adj.stale_families():
            batches += adj.flush_stale(family)
        log.info("BGP peer %s: %s, %d stale batches flushed", peer.peer_id, why, len(batches))
        self._apply(peer, batches)

    def _on_refresh(self, peer: _Peer, event: RouteRefreshRequested) -> None:
        family = event.family
        adj = peer.adj
        if event.subtype is RouteRefreshSubtype.NORMAL:
            messages = self._table_messages(peer, family)
            negotiated = peer.negotiated
            if negotiated is not None and negotiated.enhanced_route_refresh:
                # RFC 7313 §4: demarcate the re-advertisement so the peer can purge what is missing.
                messages.insert(0, encode_route_refresh(RouteRefresh(family, RouteRefreshSubtype.BEGIN)))
                messages.append(encode_route_refresh(RouteRefresh(family, RouteRefreshSubtype.END)))
            self._send(peer, messages)
        elif adj is not None and event.subtype is RouteRefreshSubtype.BEGIN:
            adj.mark_stale((family,))  # RFC 7313 §4: what is not re-advertised before EoRR goes
        elif adj is not None and event.subtype is RouteRefreshSubtype.END:
            self._apply(peer, adj.flush_stale(family))

    def _flush_peer(self, peer: _Peer) -> None:
        """Withdraw every route of the peer from the Loc-RIB (session down without GR, removal)."""
        peer.cancel_timers()
        # The Loc-RIB lists the peer's paths from its Adj-RIB-In, so that is cleared afterwards.
        changes = self.loc_rib.remove_peer(peer.peer_id)
        if peer.adj is not None:
            peer.adj.clear()
        if changes:
            self._publish(RoutesChanged(peer.peer_id, tuple(changes)))

    def _apply(self, peer: _Peer, batches: Sequence[RouteBatch]) -> None:
        changes: list[RibChange] = []
        for batch in batches:
            changes += self.loc_rib.apply(batch)
        if changes:
            self._publish(RoutesChanged(peer.peer_id, tuple(changes)))

    # -- export ----------------------------------------------------------------------------------------

    def _established_peers(self) -> Iterator[_Peer]:
        return (p for p in self._peers.values() if p.negotiated is not None)

    def _send(self, peer: _Peer, messages: list[bytes]) -> None:
        if not messages or peer.driver is None:
            return
        driver = peer.driver
        peer.session.send_messages(messages, driver.now())
        driver.pump()

    def _table_messages(self, peer: _Peer, family: Family) -> list[bytes]:
        groups: dict[PathAttributes, list[PrefixKey]] = {}
        for key, attributes in self._routes.items():
            if key_family(key) == family:
                groups.setdefault(attributes, []).append(key)
        messages: list[bytes] = []
        for attributes, keys in groups.items():
            messages += self._updates_for(peer, family, attributes, keys)
        return messages

    def _updates_for(
        self, peer: _Peer, family: Family, attributes: PathAttributes, keys: Sequence[PrefixKey]
    ) -> list[bytes]:
        negotiated = peer.negotiated
        if negotiated is None or family not in negotiated.families or not keys:
            return []
        exported = self._export(peer, family, attributes)
        if exported is None:
            return []
        return build_updates(family, exported, keys, negotiated.codec)

    def _export(self, peer: _Peer, family: Family, attributes: PathAttributes) -> PathAttributes | None:
        cache_key = (family, attributes)
        if cache_key in peer.export_cache:
            return peer.export_cache[cache_key]
        next_hop = attributes.next_hop or self._next_hop_self(peer, family)
        if next_hop is not None and (next_hop.version == 4) != (family == IPV4_UNICAST):
            log.warning("BGP peer %s: next hop %s cannot carry %s routes", peer.peer_id, next_hop, family)
            next_hop = None
        if next_hop is None:
            if family not in peer.warned_next_hop:
                peer.warned_next_hop.add(family)
                log.warning(
                    "BGP peer %s: no %s next hop for our routes (set next_hop_%s or a next hop on the route)",
                    peer.peer_id,
                    family,
                    "ipv4" if family == IPV4_UNICAST else "ipv6",
                )
            exported = None
        elif peer.config.peer_asn != self.local_asn:
            # RFC 4271 §5.1.2: prepend our AS on eBGP; §5.1.5: no LOCAL_PREF to external peers;
            # RFC 4456 §8: ORIGINATOR_ID and CLUSTER_LIST stay inside the AS.
            exported = replace(
                attributes,
                next_hop=next_hop,
                as_path=_prepend(attributes.as_path, self.local_asn),
                local_pref=None,
                originator_id=None,
                cluster_list=(),
            )
        else:
            local_pref = attributes.local_pref if attributes.local_pref is not None else DEFAULT_LOCAL_PREF
            exported = replace(attributes, next_hop=next_hop, local_pref=local_pref)
        peer.export_cache[cache_key] = exported
        return exported

    def _next_hop_self(self, peer: _Peer, family: Family) -> IPAddress | None:
        config = peer.config
        configured: IPAddress | None = (
            config.next_hop_ipv4 if family == IPV4_UNICAST else config.next_hop_ipv6
        )
        if configured is not None:
            return configured
        local = peer.local_address
        if local is not None and (local.version == 4) == (family == IPV4_UNICAST):
            return local
        return None

    # -- status -----------------------------------------------------------------------------------------

    def _peer_status(self, peer: _Peer) -> PeerStatus:
        config = peer.config
        adj = peer.adj
        counters = adj.counters if adj is not None else None
        negotiated = peer.negotiated
        driver = peer.driver
        uptime = None
        if peer.established_mono is not None and driver is not None:
            uptime = driver.now() - peer.established_mono
        held = peer.session.held
        held_until = None
        hold_until = peer.session.hold_until
        if held is not None and hold_until is not None and driver is not None:
            held_until = time.time() + max(0.0, hold_until - driver.now())  # wall clock, for status
        info = None
        if negotiated is not None:
            info = NegotiatedInfo(
                hold_time=negotiated.hold_time,
                keepalive_time=negotiated.keepalive_time,
                families=tuple(str(f) for f in negotiated.families),
                four_octet_as=negotiated.four_octet_as,
                extended_message=negotiated.extended_message,
                route_refresh=negotiated.route_refresh,
                enhanced_route_refresh=negotiated.enhanced_route_refresh,
                graceful_restart=negotiated.graceful_restart,
                add_path_receive=tuple(sorted(str(f) for f in negotiated.add_path_receive)),
                peer_router_id=str(negotiated.peer_router_id),
                peer_asn=negotiated.peer_asn,
            )
        return PeerStatus(
            peer_id=config.peer_id,
            address=str(config.peer_address),
            asn=config.peer_asn,
            state=peer.session.state.value,
            established_at=peer.established_wall,
            uptime=uptime,
            last_transition=peer.last_transition.value if peer.last_transition is not None else None,
            last_transition_detail=peer.last_detail,
            last_transition_at=peer.last_transition_at,
            last_error=driver.last_error if driver is not None else None,
            last_notification_sent=peer.last_sent,
            last_notification_received=peer.last_received,
            prefixes_received=counters.received if counters is not None else 0,
            prefixes_accepted=len(adj) if adj is not None else 0,
            prefixes_rejected=counters.rejected_total if counters is not None else 0,
            rejected_by_reason={r.value: n for r, n in counters.rejected.items()}
            if counters is not None
            else {},
            prefixes_stale=adj.stale_count() if adj is not None else 0,
            established_count=peer.established_count,
            updates_received=peer.updates_received,
            connect_attempts=driver.connect_attempts if driver is not None else 0,
            negotiated=info,
            local_address=str(peer.local_address) if peer.local_address is not None else None,
            held_idle_reason=held.value if held is not None else None,
            held_idle_until=held_until,
        )


def _by_family(keys: Iterable[PrefixKey]) -> dict[Family, list[PrefixKey]]:
    groups: dict[Family, list[PrefixKey]] = {}
    for key in keys:
        groups.setdefault(key_family(key), []).append(key)
    return groups


def _prepend(path: AsPath, asn: int) -> AsPath:
    """RFC 4271 §5.1.2: our AS in front of the leading AS_SEQUENCE (a new one if full or absent)."""
    segments = path.segments
    if segments and segments[0].type is SegmentType.AS_SEQUENCE and len(segments[0].asns) < 255:
        first = AsPathSegment(SegmentType.AS_SEQUENCE, (asn, *segments[0].asns))
        return AsPath((first, *segments[1:]))
    return AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (asn,)), *segments))


def _capacity(limit: MaxPrefix | None) -> float:
    """How many paths a limit lets the Adj-RIB-In hold (unbounded without one or with WARN)."""
    capacity = None if limit is None else limit.capacity
    return float("inf") if capacity is None else float(capacity)


def _worse(current: MaxPrefixEvent | None, result: IntakeResult) -> MaxPrefixEvent | None:
    event = result.max_prefix
    if event is None:
        return current
    return event if current is None or event > current else current


# The configuration, event and status types are bgp/api.py's: import them from there.
__all__ = ["Speaker", "Subscription", "peer_security", "to_key", "transport_config"]
