"""The agent core shared by the standalone mode and the operator: every route server of the desired state.

Owns: `Runtime`, the public face the host (controller/agent.py, controller/standalone.py) drives:
`apply(desired)` on every configuration change (serialised), `refuse(message)` for one that was not
applied, `status()` / `healthy()` for /status, /healthz and the state gauges, `stop()` at the end;
and the observation task (rejected-route logging, BFD timers for status). Each route server is a
`RouteServerRuntime` (controller/runtime/route_server.py) that converges to its desired state by
itself; `apply` removes route servers first, then reconciles changed ones, then creates new ones.

Stopping: a route server with persistRoutes enabled leaves its routes in the tables (a restarted
agent adopts them and keeps them for the persist window while sessions return); otherwise its routes
are withdrawn first, then every session is closed with Cease/Administrative Shutdown. Graceful
restart is only supported as the helper (receiving speaker), so it does not change what a stopping
agent does.

Must not touch: the BFD service's lifecycle (the host starts and stops it), concrete writers (the
host passes a writer factory), the sources of desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Iterable

from bfd.service import SessionStatus
from controller.desired import DesiredState, TableDesired
from controller.events import ConfigApplied, ConfigRefused, EventSink, Fanout, LogSink, MetricsSink
from controller.metrics import Metrics
from controller.runtime.deferral import RestartDeferral
from controller.runtime.ports import BfdService, SpeakerFactory, WriterFactory, default_speaker_factory
from controller.runtime.route_server import RouteServerContext, RouteServerRuntime
from controller.runtime.routes import RoutesPage, RoutesQuery, routes_page
from controller.runtime.views import MAX_STATUS_ROUTES, route_server_view
from controller.status import AgentStatus, ConfigView
from controller.writers.base import RouteWriter

log = logging.getLogger("controller.runtime")

RESYNC_INTERVAL = 30.0
OBSERVE_INTERVAL = 2.0
# The cyclic collector's young-generation threshold while an agent runs. A route feed allocates about
# ten long-lived objects per prefix; at the default (700) the collector then runs thousands of times
# and rescans the growing route state, about a third of a 100k-prefix intake. Older generations keep
# their default ratios, so cyclic garbage is still collected, only in fewer, larger passes.
GC_YOUNG_THRESHOLD = 50_000


class NoWriterError(LookupError):
    """The runtime was given no writer factory (the host chooses the writers)."""


def _no_writers(table: TableDesired) -> RouteWriter:
    raise NoWriterError(f"{table.name}: no writer factory was given to the runtime")


async def _guard(rs: RouteServerRuntime, what: str, step: Awaitable[None]) -> None:
    """One route server's failure is logged and shown in its status; the others carry on."""
    if rs.speaker is not None:
        rs.error = None
    try:
        await step
    except Exception as exc:
        rs.error = f"{what} failed: {type(exc).__name__}: {exc}"
        log.exception("route server %s: %s failed", rs.name, what)


class Runtime:
    """The agent: every route server of the desired state, reconciled by `apply`.

    Create, `await start()`, `await apply(desired)` on every configuration change (serialised), read
    `status()` / `healthy()`, and `await stop()` at the end. The BFD service (bfd.service.BfdService,
    started and stopped by the caller) is optional: without it, BFD peers are protected by the hold
    timer only and their status says so. `writer_factory` maps a table to its writer
    (controller/writers/factory.py); `sinks` get every event besides the log and the metrics (the
    operator's Kubernetes Events).
    """

    def __init__(
        self,
        *,
        bfd: BfdService | None = None,
        metrics: Metrics | None = None,
        speaker_factory: SpeakerFactory = default_speaker_factory,
        writer_factory: WriterFactory = _no_writers,
        resync_interval: float = RESYNC_INTERVAL,
        observe_interval: float = OBSERVE_INTERVAL,
        node_name: str = "",
        version: str = "",
        restart_deferral: RestartDeferral | None = None,
        sinks: Iterable[EventSink] = (),
    ) -> None:
        self.bfd = bfd
        self.restart_deferral = restart_deferral or RestartDeferral()
        self.metrics = metrics or Metrics()
        self.events: EventSink = Fanout([LogSink(log), MetricsSink(self.metrics), *sinks])
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

    def _context(self) -> RouteServerContext:
        return RouteServerContext(
            speaker_factory=self.speaker_factory,
            writer_factory=self.writer_factory,
            bfd=self.bfd,
            events=self.events,
            resync_interval=self.resync_interval,
            restart_deferral=self.restart_deferral,
            forget_peer=self.metrics.forget_peer,
        )

    async def start(self) -> None:
        young, middle, old = gc.get_threshold()
        if young:  # 0: the collector is off on purpose; leave it so
            gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
        self._running = True
        self._observer = asyncio.get_running_loop().create_task(self._observe(), name="runtime-observer")

    async def apply(self, desired: DesiredState) -> None:
        """Reconcile to `desired`: removed route servers first, then changed ones, then new ones.

        Every existing route server runs a convergence pass even when its desired state is unchanged
        (level-triggered: whatever failed before is tried again now)."""
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
                    rs = RouteServerRuntime(self._context(), wanted)
                    self.route_servers[wanted.name] = rs
                    await _guard(rs, "start", rs.start())
            self.generation += 1
            self.loaded_at = time.time()
            self.config_error = None
            self.events.emit(ConfigApplied(self.generation))

    def refuse(self, message: str) -> None:
        """Record a configuration that was not applied (the running one stays)."""
        self.config_error = message
        self.events.emit(ConfigRefused(message))

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
        """Log rejections, run a convergence pass where a speaker is missing, refresh BFD timers."""
        for rs in list(self.route_servers.values()):
            rs.observe()
            if rs.speaker is None and not self._lock.locked():
                async with self._lock:
                    await rs.converge()
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

    async def routes(self, query: RoutesQuery) -> RoutesPage:
        """One page of a route server's routing database (/routes); KeyError: no such route server."""
        rs = self.route_servers[query.route_server]
        keys = await rs.route_index.get(rs)
        return routes_page(rs, keys, query)

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
            route_servers=tuple(
                route_server_view(rs, self._bfd_status, max_routes) for rs in self.route_servers.values()
            ),
            bfd_running=self.bfd is not None and self.bfd.running,
        )
