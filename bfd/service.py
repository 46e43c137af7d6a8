"""The BFD service: sessions shared by clients, run on a thread of their own (RFC 5880, 5881, 5883).

Why a thread: detection must fire at the negotiated detection time, but the main asyncio loop can be
blocked for hundreds of milliseconds by other work in the process (a BGP intake of 100k prefixes, kopf).
The service therefore runs a plain selector loop on its own thread: receive sockets and one wake-up
socket in a selector, one heap of deadlines for all sessions (time.monotonic), the pure cores
(bfd.codec, bfd.registry, bfd.session) fed from it. Client calls are queued to that thread and answered
through a future; state changes reach subscribers on their own event loop via call_soon_threadsafe.

A thread still needs the GIL. A CPU-bound thread keeps it for up to sys.getswitchinterval() (5 ms by
default) each time ours asks for it, and ours asks after every system call (select, recvmsg, sendto),
so with the default a busy main thread delays BFD by tens of milliseconds. The service lowers the
switch interval (a process-wide setting that only costs anything while threads contend; see
`switch_interval`). Pure-C work that never releases the GIL (one huge json.loads) still blocks BFD.

Usage, from any thread (the calls are short round trips to the BFD thread)::

    service = BfdService()
    service.start()
    handle = service.request(ip_address("10.0.0.2"), local=ip_address("10.0.0.1"),
                             profile=BfdProfile.from_ms(100, 100, 3))
    handle.subscribe(on_change, loop=asyncio.get_running_loop())   # or: async for c in handle.events()
    handle.update(BfdProfile.from_ms(50, 50, 3))    # Poll Sequence on the live session, no flap
    handle.status()                                  # SessionStatus snapshot
    handle.release()                                 # the last client's release sends AdminDown
    service.stop()

Sessions are shared: requests for the same path (peer, local address, interface, single/multi hop)
return handles to one session, which runs with the most demanding of its clients' timers (smallest
intervals and multiplier, strictest minimum TTL, passive only if every client is) and ends when the last
handle is released: it goes AdminDown at once (RFC 5880 §6.8.16), repeats that packet a few times at the
negotiated interval so one lost packet does not make the peer see a failure, then disappears.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import heapq
import itertools
import logging
import random
import selectors
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from bfd.auth import AuthConfig
from bfd.codec import BfdDecodeError, Diag, DropReason, State, decode
from bfd.registry import DiscriminatorRegistry, IPAddress, PathKey
from bfd.session import Session, SessionConfig, StateChange
from bfd.timers import US_PER_S
from bfd.transport import Ports, Receiver, Sender

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SWITCH_INTERVAL = 0.0005  # seconds; see the module docstring
ADMIN_DOWN_REPEATS = 2  # AdminDown packets sent after the first one when the last client leaves
_READ_BATCH = 64  # datagrams read per socket per loop pass, so timers are never starved
_CALL_TIMEOUT = 10.0
_EPOLL_RESOLUTION_S = 0.001
_FINE_WAIT_S = 0.0015  # deadlines closer than this are waited for with time.sleep
LATENESS_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100)


class BfdServiceError(RuntimeError):
    """The service is not running (not started, or stopped)."""


@dataclasses.dataclass(frozen=True, slots=True)
class BfdProfile:
    """What a client asks of a session; intervals in microseconds (the core's unit).

    `min_tx_us` is bfd.DesiredMinTxInterval, `min_rx_us` bfd.RequiredMinRxInterval, `multiplier`
    bfd.DetectMult (RFC 5880 §6.8.1). `multihop` selects RFC 5883 (port 4784), where received packets
    need a TTL of at least `min_ttl`; single hop always requires 255 (RFC 5881 §5).
    """

    min_tx_us: int = 300_000
    min_rx_us: int = 300_000
    multiplier: int = 3
    auth: AuthConfig | None = None
    passive: bool = False
    multihop: bool = False
    min_ttl: int = 254

    def __post_init__(self) -> None:
        # The core validates the same ranges; fail here, in the client's thread, with its message.
        SessionConfig(
            local_discr=1,
            min_tx_us=self.min_tx_us,
            min_rx_us=self.min_rx_us,
            multiplier=self.multiplier,
            min_ttl=self.min_ttl,
        )

    @classmethod
    def from_ms(
        cls,
        min_tx_ms: int,
        min_rx_ms: int,
        multiplier: int = 3,
        *,
        auth: AuthConfig | None = None,
        passive: bool = False,
        multihop: bool = False,
        min_ttl: int = 254,
    ) -> BfdProfile:
        """A profile from millisecond intervals, as operators write them."""
        return cls(
            min_tx_us=min_tx_ms * 1000,
            min_rx_us=min_rx_ms * 1000,
            multiplier=multiplier,
            auth=auth,
            passive=passive,
            multihop=multihop,
            min_ttl=min_ttl,
        )


def merge_profiles(profiles: Iterable[BfdProfile]) -> BfdProfile:
    """The profile a shared session runs with: every client gets at least the detection it asked for.

    Raises ValueError if the clients disagree on authentication or single/multi hop (those cannot be
    combined: one session has one key and one encapsulation).
    """
    items = list(profiles)
    if not items:
        raise ValueError("no profiles to merge")
    first = items[0]
    for other in items[1:]:
        if other.auth != first.auth:
            raise ValueError("clients of one BFD session must use the same authentication")
        if other.multihop != first.multihop:
            raise ValueError("clients of one BFD session must agree on single hop or multihop")
    return BfdProfile(
        min_tx_us=min(p.min_tx_us for p in items),
        min_rx_us=min(p.min_rx_us for p in items),
        multiplier=min(p.multiplier for p in items),
        auth=first.auth,
        passive=all(p.passive for p in items),
        multihop=first.multihop,
        min_ttl=max(p.min_ttl for p in items),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SessionStatus:
    """A snapshot of one session for status pages and metrics. Times are time.monotonic() seconds.

    `tx_interval_us` is the negotiated transmit interval before jitter (RFC 5880 §6.8.7),
    `rx_interval_us` the interval the peer transmits at as far as detection is concerned
    (max(our Required Min RX, the peer's Desired Min TX)), `detection_time_us` the §6.8.4 detection
    time; the last two are None until the peer has been heard. `last_rx` survives a Down (it is when
    the last accepted packet arrived), so `last_change.at - last_rx` is the measured detection delay.
    """

    key: PathKey
    state: State
    remote_state: State
    local_diag: Diag
    remote_diag: int
    local_discr: int
    remote_discr: int
    source_port: int
    profile: BfdProfile
    tx_interval_us: int
    rx_interval_us: int | None
    detection_time_us: int | None
    remote_min_tx_us: int
    remote_min_rx_us: int
    remote_multiplier: int
    poll_active: bool
    last_rx: float | None
    last_change: StateChange | None
    clients: int
    releasing: bool
    rx_packets: int
    tx_packets: int
    drops: Mapping[str, int]
    tx_errors: Mapping[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceStatus:
    """Every session, plus what the service dropped before a session was found and its timer precision.

    `drops` counts every discarded datagram by reason label (bfd.codec.DropReason and
    bfd.transport.TransportDrop values), including those also counted in a session's `drops`.
    `timer_lateness` counts timer firings by how late the loop ran them (upper bounds in seconds,
    LATENESS_BUCKETS_S, then +inf), a direct measure of the service's own jitter.
    """

    sessions: tuple[SessionStatus, ...]
    drops: Mapping[str, int]
    listening: Mapping[str, int]
    timer_lateness: tuple[int, ...]
    timer_lateness_max_s: float


class Subscription:
    """A subscriber's registration; `initial` is the session's status at the moment it was taken, so
    nothing between that snapshot and the first delivered change can be missed."""

    def __init__(
        self,
        service: BfdService,
        handle_id: int,
        callback: Callable[[StateChange], object],
        loop: asyncio.AbstractEventLoop | None,
        on_close: Callable[[], object] | None,
    ) -> None:
        self._service = service
        self.handle_id = handle_id
        self._callback = callback
        self._loop = loop
        self._on_close = on_close
        self.active = True
        self.initial: SessionStatus | None = None

    def cancel(self) -> None:
        """Stop deliveries (idempotent). A change already queued to the caller's loop may still arrive."""
        if self.active:
            self._service._call_if_running(self._detach)

    def _detach(self) -> None:
        self._service._unsubscribe(self)
        self._closed()

    # ---- BFD thread ---------------------------------------------------------------------------

    def _deliver(self, change: StateChange) -> None:
        self._dispatch(self._callback, change)

    def _closed(self) -> None:
        """Called once when the subscription ends (cancel, release, stop)."""
        if not self.active:
            return
        self.active = False
        if self._on_close is not None:
            self._dispatch(self._on_close)

    def _dispatch(self, fn: Callable[..., object], *args: object) -> None:
        if self._loop is None:
            try:
                fn(*args)
            except Exception:
                log.exception("BFD subscriber callback failed")
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the subscriber's loop is closed: nobody is listening any more
            self.active = False
            self._service._unsubscribe(self)


class EventStream:
    """`async for change in handle.events()`: StateChanges delivered into the loop that created it.

    Iteration ends when the subscription ends (the handle is released, the service stops, or
    `aclose()`).
    """

    def __init__(self, handle: SessionHandle) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StateChange | None] = asyncio.Queue()
        self._subscription = handle.subscribe(
            self._queue.put_nowait, loop=loop, on_close=lambda: self._queue.put_nowait(None)
        )
        self._done = False

    @property
    def initial(self) -> SessionStatus | None:
        return self._subscription.initial

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StateChange:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._done = True
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._subscription.cancel()
        self._done = True


class SessionHandle:
    """One client's share of a session. Thread-safe; release it when done (or use it as a context)."""

    def __init__(self, service: BfdService, handle_id: int, key: PathKey, profile: BfdProfile) -> None:
        self._service = service
        self.id = handle_id
        self.key = key
        self.profile = profile
        self.released = False

    def __repr__(self) -> str:
        return f"SessionHandle({self.id}, {self.key.peer}, multihop={self.key.multihop})"

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def subscribe(
        self,
        callback: Callable[[StateChange], object],
        loop: asyncio.AbstractEventLoop | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> Subscription:
        """Call `callback(change)` for every later state change of the session.

        With `loop`, the call is made in that loop's thread (call_soon_threadsafe); without, on the BFD
        thread itself, where it must return at once (it delays every session).
        """
        subscription = Subscription(self._service, self.id, callback, loop, on_close)
        subscription.initial = self._service._call(lambda: self._service._subscribe(self, subscription))
        return subscription

    def events(self) -> EventStream:
        """An async iterator of state changes in the running loop (call from a coroutine)."""
        return EventStream(self)

    def status(self) -> SessionStatus:
        return self._service._call(lambda: self._service._status_of(self))

    def update(self, profile: BfdProfile) -> None:
        """Change this client's profile; the session's timers change through a Poll Sequence (§6.8.3)."""
        self._service._call(lambda: self._service._update(self, profile))
        self.profile = profile

    def release(self) -> None:
        """Give up this share (idempotent); the last release ends the session with AdminDown."""
        if not self.released:
            self.released = True
            self._service._call_if_running(lambda: self._service._release(self))


@dataclasses.dataclass(eq=False)
class _Entry:
    """The service's record of one session (lives on the BFD thread only)."""

    key: PathKey
    session: Session
    sender: Sender
    profile: BfdProfile
    clients: dict[int, BfdProfile] = dataclasses.field(default_factory=dict)
    subscribers: list[Subscription] = dataclasses.field(default_factory=list)
    armed: float | None = None
    last_rx: float | None = None
    last_change: StateChange | None = None
    tx_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    # Set once the last client left: AdminDown repeats, then removal.
    releasing: bool = False
    repeat_packet: bytes | None = None
    repeat_interval: float = 0.0
    repeat_at: float | None = None
    repeats_left: int = 0
    remove_at: float | None = None
    removed: bool = False

    def deadline(self) -> float | None:
        times = [t for t in (self.session.next_deadline(), self.repeat_at, self.remove_at) if t is not None]
        return min(times) if times else None


class BfdService:
    """All BFD sessions of the process, on one thread. See the module docstring."""

    def __init__(
        self,
        *,
        ports: Ports | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        switch_interval: float | None = DEFAULT_SWITCH_INTERVAL,
        name: str = "bfd",
    ) -> None:
        self.ports = ports or Ports()
        self._rng = rng or random.Random()
        self._clock = clock
        self._switch_interval = switch_interval
        self._name = name
        self._registry: DiscriminatorRegistry[_Entry] = DiscriminatorRegistry(self._rng)
        self._receivers: dict[tuple[int, bool], Receiver] = {}
        self._source_ports: set[int] = set()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._handle_ids = itertools.count(1)
        self._drops: Counter[str] = Counter()
        self._lateness = [0] * (len(LATENESS_BUCKETS_S) + 1)
        self._lateness_max = 0.0
        self._commands: deque[tuple[Callable[[], object], concurrent.futures.Future[object]]] = deque()
        self._lock = threading.Lock()
        self._running = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ---- lifecycle (any thread) ---------------------------------------------------------------

    def __enter__(self) -> BfdService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start the BFD thread. Sockets open when the first session of their kind is requested."""
        with self._lock:
            if self._running or self._thread is not None:
                raise BfdServiceError("BFD service already started")
            if self._switch_interval is not None and sys.getswitchinterval() > self._switch_interval:
                sys.setswitchinterval(self._switch_interval)
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            self._running = True
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send AdminDown on every session, close every socket, end every subscription, join the thread."""
        thread = self._thread
        if thread is None:
            return
        if threading.current_thread() is thread:
            raise BfdServiceError("stop() called from the BFD thread (from a subscriber without a loop)")
        with self._lock:
            self._stopping = True
        self._wake()
        thread.join(timeout)

    # ---- client API (any thread) --------------------------------------------------------------

    def request(
        self,
        peer: IPAddress,
        *,
        local: IPAddress | None = None,
        interface: str | None = None,
        profile: BfdProfile | None = None,
    ) -> SessionHandle:
        """A share of the session to `peer` on this path, created if it does not exist yet.

        Raises ValueError for a profile that cannot be combined with the session's other clients and
        OSError if the sockets cannot be opened or bound (no such local address or interface).
        """
        profile = profile or BfdProfile()
        if local is not None and local.version != peer.version:
            raise ValueError(f"local address {local} and peer {peer} are of different families")
        key = PathKey(peer=peer, local=local, interface=interface, multihop=profile.multihop)
        handle = SessionHandle(self, next(self._handle_ids), key, profile)
        self._call(lambda: self._attach(handle))
        return handle

    def status(self) -> ServiceStatus:
        return self._call(self._service_status)

    # ---- cross-thread plumbing ----------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the BFD thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        with self._lock:
            if not self._running or self._stopping:
                raise BfdServiceError("BFD service is not running")
            self._commands.append((fn, future))
        self._wake()
        return future.result(timeout=_CALL_TIMEOUT)  # type: ignore[return-value]

    def _call_if_running(self, fn: Callable[[], object]) -> None:
        """Like _call, but a stopped service has nothing left to undo."""
        with contextlib.suppress(BfdServiceError):
            self._call(fn)

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):  # already awake (buffer full), or closing
                wake.send(b"\0")

    # ---- the BFD thread -----------------------------------------------------------------------

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping:
                for key, _ in selector.select(self._wait()):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._receive(key.data)
                self._run_commands()
                self._run_timers()
        except Exception:
            log.exception("BFD service loop failed")
        finally:
            self._shutdown()

    def _wait(self) -> float | None:
        """The selector timeout; the last stretch before a deadline is slept with nanosleep instead.

        epoll takes whole milliseconds and Python rounds up, which would make every timer up to 1 ms
        late; so the selector wakes up to 1 ms early and time.sleep (clock_nanosleep) does the rest.
        """
        timeout = self._timeout()
        if timeout is None or timeout > _FINE_WAIT_S:
            return None if timeout is None else timeout - _EPOLL_RESOLUTION_S
        if timeout > 0:
            time.sleep(timeout)
        return 0.0

    def _timeout(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].armed != heap[0][0]:
            heapq.heappop(heap)  # superseded by an earlier deadline, or the session is gone
        if self._commands:
            return 0.0
        if not heap:
            return None
        return max(0.0, heap[0][0] - self._clock())

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run_commands(self) -> None:
        while self._commands:
            fn, future = self._commands.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _run_timers(self) -> None:
        heap = self._heap
        now = self._clock()
        budget = len(heap) + 64  # a session always moves its deadline on; this only guards a bug
        while heap and heap[0][0] <= now and budget > 0:
            budget -= 1
            due, _, entry = heapq.heappop(heap)
            if entry.armed != due:
                continue
            entry.armed = None
            self._record_lateness(now - due)
            self._on_timer(entry, now)

    def _record_lateness(self, late: float) -> None:
        for index, bound in enumerate(LATENESS_BUCKETS_S):
            if late <= bound:
                self._lateness[index] += 1
                break
        else:
            self._lateness[-1] += 1
        self._lateness_max = max(self._lateness_max, late)

    def _on_timer(self, entry: _Entry, now: float) -> None:
        entry.session.handle_timer(now)
        if entry.repeat_at is not None and now >= entry.repeat_at:
            if entry.repeat_packet is not None:
                self._transmit(entry, entry.repeat_packet)
            entry.repeats_left -= 1
            entry.repeat_at = now + entry.repeat_interval if entry.repeats_left > 0 else None
        if entry.remove_at is not None and now >= entry.remove_at:
            self._flush(entry)
            self._remove(entry)
            return
        self._flush(entry)

    def _receive(self, receiver: Receiver) -> None:
        for datagram in receiver.read(_READ_BATCH):
            now = self._clock()
            if datagram.drop is not None or datagram.path is None:
                self._drops[datagram.drop.value if datagram.drop is not None else "missing_destination"] += 1
                continue
            try:
                packet = decode(datagram.data)
            except BfdDecodeError as exc:
                self._drops[exc.reason.value] += 1
                continue
            found = self._registry.demux(packet.your_discr, datagram.path)
            if isinstance(found, DropReason):
                self._drops[found.value] += 1
                continue
            reason = found.session.handle_packet(packet, now, ttl=datagram.ttl)
            if reason is not None:
                self._drops[reason.value] += 1
            else:
                found.last_rx = now
            self._flush(found)

    def _flush(self, entry: _Entry) -> None:
        """Send what the session produced, deliver its events, re-arm its timer."""
        session = entry.session
        for data in session.take_packets():
            self._transmit(entry, data)
        for change in session.take_events():
            entry.last_change = change
            log.info(
                "BFD %s%s: %s -> %s (%s, diag %s)",
                entry.key.peer,
                " multihop" if entry.key.multihop else "",
                change.old.name,
                change.new.name,
                change.reason.value,
                change.diag.name,
            )
            for subscription in list(entry.subscribers):
                subscription._deliver(change)
        self._arm(entry)

    def _transmit(self, entry: _Entry, data: bytes) -> None:
        try:
            entry.sender.send(data)
        except OSError as exc:
            entry.tx_errors[_errno_name(exc)] += 1

    def _arm(self, entry: _Entry) -> None:
        """Keep one heap item at or before the session's next deadline (later moves are lazy)."""
        if entry.removed:
            return
        deadline = entry.deadline()
        if deadline is None:
            return
        if entry.armed is None or deadline < entry.armed:
            entry.armed = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))

    # ---- commands (BFD thread) ----------------------------------------------------------------

    def _receiver(self, family: int, multihop: bool) -> Receiver:
        receiver = self._receivers.get((family, multihop))
        if receiver is None:
            assert self._selector is not None
            receiver = Receiver(socket.AddressFamily(family), multihop, self.ports.listen(multihop))
            self._selector.register(receiver.sock, selectors.EVENT_READ, receiver)
            self._receivers[(family, multihop)] = receiver
        return receiver

    def _attach(self, handle: SessionHandle) -> None:
        key = handle.key
        now = self._clock()
        entry = self._registry.find(key)
        if entry is not None and entry.releasing and entry.session.config.auth != handle.profile.auth:
            self._remove(entry)  # winding down with another key: start afresh rather than revive
            entry = None
        if entry is not None:
            merged = merge_profiles([*entry.clients.values(), handle.profile])
            entry.clients[handle.id] = handle.profile
            if entry.releasing:
                self._revive(entry, now)
            self._apply(entry, merged, now)
            return
        family = socket.AF_INET6 if key.peer.version == 6 else socket.AF_INET
        self._receiver(family, key.multihop)
        sender = Sender(key, self.ports.destination(key.multihop), self._rng, self._source_ports)
        profile = handle.profile

        def make(discr: int) -> _Entry:
            config = SessionConfig(
                local_discr=discr,
                min_tx_us=profile.min_tx_us,
                min_rx_us=profile.min_rx_us,
                multiplier=profile.multiplier,
                auth=profile.auth,
                passive=profile.passive,
                multihop=profile.multihop,
                min_ttl=profile.min_ttl,
            )
            return _Entry(key=key, session=Session(config, self._rng, now), sender=sender, profile=profile)

        try:
            entry = self._registry.add(key, make)
        except BaseException:
            self._release_sender(sender)
            raise
        for receiver in self._receivers.values():
            receiver.forget_interfaces()
        entry.clients[handle.id] = profile
        self._flush(entry)

    def _revive(self, entry: _Entry, now: float) -> None:
        """A client came back while the session was being wound down: bring it back up (§6.8.16)."""
        entry.releasing = False
        entry.repeat_packet = None
        entry.repeat_at = entry.remove_at = None
        entry.repeats_left = 0
        entry.session.admin_up(now)

    def _apply(self, entry: _Entry, merged: BfdProfile, now: float) -> None:
        session = entry.session
        config = session.config
        if (merged.passive, merged.min_ttl) != (config.passive, config.min_ttl):
            session.config = dataclasses.replace(config, passive=merged.passive, min_ttl=merged.min_ttl)
        if (merged.min_tx_us, merged.min_rx_us, merged.multiplier) != (
            config.min_tx_us,
            config.min_rx_us,
            config.multiplier,
        ):
            session.set_timers(
                now, min_tx_us=merged.min_tx_us, min_rx_us=merged.min_rx_us, multiplier=merged.multiplier
            )
        entry.profile = merged
        self._flush(entry)

    def _entry_of(self, handle: SessionHandle) -> _Entry:
        entry = self._registry.find(handle.key)
        if entry is None or handle.id not in entry.clients:
            raise ValueError(f"{handle!r} has been released")
        return entry

    def _update(self, handle: SessionHandle, profile: BfdProfile) -> None:
        entry = self._entry_of(handle)
        if profile.multihop != handle.key.multihop:
            raise ValueError("single hop / multihop is part of the session's path: request a new session")
        others = [p for hid, p in entry.clients.items() if hid != handle.id]
        merged = merge_profiles([*others, profile])
        if merged.auth != entry.session.config.auth:
            raise ValueError("authentication of a live BFD session cannot change: release and request again")
        entry.clients[handle.id] = profile
        self._apply(entry, merged, self._clock())

    def _release(self, handle: SessionHandle) -> None:
        entry = self._registry.find(handle.key)
        if entry is None or entry.clients.pop(handle.id, None) is None:
            return
        for subscription in [s for s in entry.subscribers if s.handle_id == handle.id]:
            entry.subscribers.remove(subscription)
            subscription._closed()
        now = self._clock()
        if entry.clients:
            self._apply(entry, merge_profiles(entry.clients.values()), now)
            return
        self._wind_down(entry, now)

    def _wind_down(self, entry: _Entry, now: float) -> None:
        """§6.8.16: go AdminDown and tell the peer, then forget the session."""
        session = entry.session
        was_live = session.state in (State.UP, State.INIT)
        interval = session.tx_interval_us / US_PER_S
        session.admin_down(now)
        packets = session.take_packets()
        for data in packets:
            self._transmit(entry, data)
        entry.releasing = True
        auth = session.config.auth
        # A meticulous peer refuses a repeated sequence number (§6.7.3), so repeats would only be drops.
        if was_live and packets and (auth is None or not auth.auth_type.meticulous):
            entry.repeat_packet = packets[-1]
            entry.repeat_interval = interval
            entry.repeats_left = ADMIN_DOWN_REPEATS
            entry.repeat_at = now + interval
            entry.remove_at = now + interval * (ADMIN_DOWN_REPEATS + 0.5)
            self._flush(entry)
        else:
            self._flush(entry)
            self._remove(entry)

    def _remove(self, entry: _Entry) -> None:
        entry.removed = True
        entry.armed = None
        self._registry.remove(entry.session.config.local_discr)
        self._release_sender(entry.sender)
        for subscription in entry.subscribers:
            subscription._closed()
        entry.subscribers.clear()

    def _release_sender(self, sender: Sender) -> None:
        self._source_ports.discard(sender.source_port)
        sender.close()

    def _subscribe(self, handle: SessionHandle, subscription: Subscription) -> SessionStatus:
        entry = self._entry_of(handle)
        entry.subscribers.append(subscription)
        return self._status(entry)

    def _unsubscribe(self, subscription: Subscription) -> None:
        for _, entry in self._registry:
            if subscription in entry.subscribers:
                entry.subscribers.remove(subscription)

    def _status_of(self, handle: SessionHandle) -> SessionStatus:
        return self._status(self._entry_of(handle))

    def _status(self, entry: _Entry) -> SessionStatus:
        session = entry.session
        rx_interval = None
        if session.remote_multiplier:
            rx_interval = max(session.timers.effective_rx_us, session.remote_desired_min_tx_us)
        return SessionStatus(
            key=entry.key,
            state=session.state,
            remote_state=session.remote_state,
            local_diag=session.local_diag,
            remote_diag=session.remote_diag,
            local_discr=session.config.local_discr,
            remote_discr=session.remote_discr,
            source_port=entry.sender.source_port,
            profile=entry.profile,
            tx_interval_us=session.tx_interval_us,
            rx_interval_us=rx_interval,
            detection_time_us=session.detection_time_us,
            remote_min_tx_us=session.remote_desired_min_tx_us,
            remote_min_rx_us=session.remote_min_rx_us,
            remote_multiplier=session.remote_multiplier,
            poll_active=session.poll_active,
            last_rx=entry.last_rx,
            last_change=entry.last_change,
            clients=len(entry.clients),
            releasing=entry.releasing,
            rx_packets=session.counters.rx,
            tx_packets=session.counters.tx,
            drops={reason.value: count for reason, count in session.counters.drops.items()},
            tx_errors=dict(entry.tx_errors),
        )

    def _service_status(self) -> ServiceStatus:
        return ServiceStatus(
            sessions=tuple(self._status(entry) for _, entry in self._registry),
            drops=dict(self._drops),
            listening={
                _listen_label(family, multihop): r.port for (family, multihop), r in self._receivers.items()
            },
            timer_lateness=tuple(self._lateness),
            timer_lateness_max_s=self._lateness_max,
        )

    def _shutdown(self) -> None:
        """On the BFD thread as it exits: AdminDown everywhere, close everything, fail queued calls."""
        with self._lock:
            self._running = False
        now = self._clock()
        for _, entry in list(self._registry):
            if not entry.releasing:
                entry.session.admin_down(now)
                for data in entry.session.take_packets():
                    self._transmit(entry, data)
            self._remove(entry)
        for receiver in self._receivers.values():
            receiver.close()
        self._receivers.clear()
        while self._commands:
            _, future = self._commands.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(BfdServiceError("BFD service stopped"))
        if self._selector is not None:
            self._selector.close()
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_w = None
        for sock in (wake_r, wake_w):
            if sock is not None:
                sock.close()


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "OSError")


def _listen_label(family: int, multihop: bool) -> str:
    return f"ipv{6 if family == socket.AF_INET6 else 4}/{'multihop' if multihop else 'single_hop'}"
