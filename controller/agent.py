"""The agent host: one process for both modes (standalone files today, the kopf operator next).

Owns: the process around the runtime -- the BFD service (bfd.service.BfdService, its own thread),
the `Runtime`, the admin HTTP server (controller/admin.py), signal handling, and the one path by
which desired state reaches the runtime: `submit()`. A mode is a `Source` (controller/standalone.py
reads files; controller/operator will watch the API server) that calls `submit()`/`refuse()`;
`StatusSink`s receive the status snapshot (the operator's RouteServerSession writer will be one).

May not touch: where desired state comes from (files, kopf, kubernetes: the sources own that), how it
is reconciled (the runtime), or any writer; it never imports kopf or kubernetes (import-linter).
Nothing blocking runs on the loop: the BFD thread starts and joins on a worker thread.

Submit (level-triggered, DESIGN §7.6): `submit(desired)` records the state as the latest and wakes
the single applier task; it returns a future. States submitted while an apply runs are coalesced:
the applier then applies only the latest one, so a burst costs at most two applies. The future
resolves (to the runtime's configuration generation) once that state or a newer one is applied; if
the apply raises, the futures of every state up to it fail with `ApplyError`, the failure is logged
(`config_apply_failed`) and the same latest state is applied again after a backoff (1 s doubling to
30 s) until it succeeds or a newer one replaces it. Independently of changes, the latest state is
re-applied every `reapply_interval` seconds, so convergence never depends on an event having been
seen; re-applying an unchanged state is a no-op in the runtime (nothing is touched). `refuse(msg)`
records a configuration that was not applied; it is ordered after the states submitted before it.

Lifecycle (`run(source)`): admin start -> BFD start -> runtime start -> signals -> source start
(`started` logged) -> wait for SIGTERM/SIGINT or `request_stop()` -> source stop -> runtime stop
-> admin close -> BFD stop (`stopping`, `stopped` logged). Whatever fails, what was started is
stopped in that order and the exit code is 1; a clean stop returns 0. SIGHUP calls the callbacks
sources register with `on_reload()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bfd.service import BfdService
from controller import logs
from controller.admin import DEFAULT_ADMIN_ADDRESS, admin_server, parse_address
from controller.desired import DesiredState
from controller.events import EventSink
from controller.metrics import Metrics
from controller.runtime import RESYNC_INTERVAL, Runtime
from controller.runtime.routes import RoutesPage, RoutesQuery
from controller.status import AgentStatus
from controller.writers.factory import DEFAULT_PROTOCOL, node_writer_factory

log = logging.getLogger(__name__)

# The latest desired state is applied again this often (level-triggered). The runtime's route servers
# converge on their own every few seconds; this pass is the backstop that depends on no runtime loop
# and no event, so it can be slow. (Each pass counts as an applied configuration generation.)
REAPPLY_INTERVAL = 300.0
RETRY_MIN = 1.0  # a failed apply is retried after this, doubling ...
RETRY_MAX = 30.0  # ... up to this
STATUS_INTERVAL = 10.0  # status sinks are called this often, and after every apply
APPLY_DRAIN_TIMEOUT = 30.0  # on stop, an apply in progress gets this long to finish
LOOP_MONITOR_INTERVAL = 0.05  # the loop-lag sample period
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until each has ended (a task's own exception is its business)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class AgentStoppedError(Exception):
    """The agent stopped before the submitted state was applied."""


class ApplyError(Exception):
    """Applying a submitted state failed; the agent retries it (see the module docstring)."""


# -- what the agent hosts --------------------------------------------------------------------------


class RuntimeLike(Protocol):
    """What the agent needs of controller.runtime.Runtime."""

    metrics: Metrics
    generation: int
    sources: tuple[str, ...]

    async def start(self) -> None: ...

    async def apply(self, desired: DesiredState) -> None: ...

    def refuse(self, message: str) -> None: ...

    async def stop(self, keep_routes: bool | None = None) -> None: ...

    def status(self, max_routes: int = ...) -> AgentStatus: ...

    async def routes(self, query: RoutesQuery) -> RoutesPage: ...

    def healthy(self) -> bool: ...


class BfdHost(Protocol):
    """The BFD service as the agent runs it (blocking start/stop; its own thread)."""

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


class Source(Protocol):
    """Where desired state comes from: files (standalone), the API server (operator).

    `start` runs once the runtime is up: submit the first state (awaiting it if the mode wants
    `started` to mean "applied"), register hooks (`agent.on_reload`), start the source's own tasks.
    `stop` ends them; it runs before the runtime stops and must not submit any more.
    """

    async def start(self, agent: Agent) -> None: ...

    async def stop(self) -> None: ...


class StatusSink(Protocol):
    """Receives the agent's status snapshot every `status_interval` s and after every apply."""

    async def publish(self, status: AgentStatus) -> None: ...


@dataclass(frozen=True, slots=True)
class AgentOptions:
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    bfd: bool = True  # False: BFD peers are protected by the hold timer only
    node_name: str = ""
    version: str = ""
    resync_interval: float = RESYNC_INTERVAL  # every table rewritten from the FIB (runtime)
    reapply_interval: float = REAPPLY_INTERVAL  # the latest desired state applied again (0: never)
    route_protocol: int = DEFAULT_PROTOCOL  # rtnetlink protocol of our routes
    status_interval: float = STATUS_INTERVAL
    handle_signals: bool = True
    # What SIGTERM/SIGINT do to the routes (Runtime.stop's keep_routes): None withdraws unless
    # persistRoutes (standalone); True keeps them for the next agent to adopt (the operator: a
    # SIGTERM there is a rolling update, an eviction or node maintenance, not a removal).
    signal_keeps_routes: bool | None = None


class Agent:
    """The host of one agent process; see the module docstring for submit semantics and lifecycle."""

    def __init__(
        self,
        options: AgentOptions | None = None,
        *,
        runtime: RuntimeLike | None = None,
        bfd: BfdHost | None = None,
        event_sinks: Iterable[EventSink] = (),
    ) -> None:
        """Builds the runtime and BFD service (unless a runtime is given: then `bfd` is the service the
        agent starts and stops for it) and the admin server; nothing runs until `run`. `event_sinks`
        get every user-visible event besides the log line and the metric (the operator's Kubernetes
        Events); they must not block (controller/events.py).

        Raises ValueError for an invalid admin address.
        """
        self.options = options = options or AgentOptions()
        if runtime is None:
            service = BfdService() if options.bfd else None
            self.bfd: BfdHost | None = service
            runtime = Runtime(
                bfd=service,
                writer_factory=functools.partial(node_writer_factory, protocol=options.route_protocol),
                resync_interval=options.resync_interval,
                node_name=options.node_name,
                version=options.version,
                sinks=event_sinks,
            )
        else:
            self.bfd = bfd
        self.runtime: RuntimeLike = runtime
        host, port = parse_address(options.admin_address)
        self.admin = admin_server(
            host,
            port,
            metrics=runtime.metrics,
            status=runtime.status,
            healthy=self.healthy,
            routes=runtime.routes,
        )
        # Desired state: sequence numbers of the latest submitted and the latest applied state.
        self.desired: DesiredState | None = None  # the latest state applied successfully
        self._latest: DesiredState | None = None
        self._latest_sources: tuple[str, ...] | None = None
        self._submitted = 0
        self._applied = 0
        self._failed = False  # the latest apply raised: retry with backoff
        self._retry = RETRY_MIN
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._refusal: tuple[int, str] | None = None
        self._wake = asyncio.Event()
        self._published = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._exit_code = 0
        self._keep_routes: bool | None = None
        self._reload_callbacks: list[Callable[[], object]] = []
        self._sinks: list[StatusSink] = []
        self._health_checks: list[Callable[[], bool]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._signals: list[signal.Signals] = []
        self._inherited_handlers: dict[signal.Signals, signal._HANDLER] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what sources and sinks use ------------------------------------------------------------------

    def submit(self, desired: DesiredState, *, sources: tuple[str, ...] | None = None) -> asyncio.Future[int]:
        """Make `desired` the state to apply (the latest wins); the future resolves when it is applied.

        `sources` (file names, API objects) are shown in the status once this state is applied.
        Awaiting is optional: a failure is also logged and retried.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        if self._closing:
            future.set_exception(AgentStoppedError("the agent is stopping"))
            return future
        self._submitted += 1
        self._latest = desired
        self._latest_sources = sources
        self._waiters.append((self._submitted, future))
        self._wake.set()
        return future

    def refuse(self, message: str) -> None:
        """Record a configuration that was not applied (the running one stays), after pending states."""
        if self._submitted == self._applied and not self._failed:
            self.runtime.refuse(message)
        else:
            self._refusal = (self._submitted, message)
            self._wake.set()

    def on_reload(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` on SIGHUP (from the loop); returns the function that unregisters it."""
        self._reload_callbacks.append(callback)
        return functools.partial(_discard, self._reload_callbacks, callback)

    def add_status_sink(self, sink: StatusSink) -> None:
        self._sinks.append(sink)

    def request_publish(self) -> None:
        """Call the status sinks soon (a state changed); they rate-limit their own writes."""
        self._published.set()

    def add_health_check(self, check: Callable[[], bool]) -> None:
        """`/healthz` also fails while `check()` is False (the operator: a watch gone stale)."""
        self._health_checks.append(check)

    def request_stop(self, exit_code: int = 0, keep_routes: bool | None = None) -> None:
        """End `run` (a source that cannot go on passes exit_code 1); keep_routes as Runtime.stop."""
        self._exit_code = max(self._exit_code, exit_code)
        if keep_routes is not None:
            self._keep_routes = keep_routes
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads. Run again to take them back (kopf installs its own)."""
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            if sig not in self._signals:
                self._inherited_handlers[sig] = signal.getsignal(sig)
            if sig is signal.SIGHUP:
                loop.add_signal_handler(sig, self._on_sighup)
            else:
                loop.add_signal_handler(sig, self._on_stop_signal)
            if sig not in self._signals:
                self._signals.append(sig)

    @property
    def generation(self) -> int:
        return self.runtime.generation

    def status(self) -> AgentStatus:
        return self.runtime.status()

    def healthy(self) -> bool:
        return self.runtime.healthy() and not self._failed and all(check() for check in self._health_checks)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self, source: Source) -> int:
        """Host `source` until stopped; the exit code (0 clean stop, 1 failure). Module docstring."""
        self._loop = asyncio.get_running_loop()
        try:
            await self.admin.start()
        except OSError as exc:
            log.error("cannot serve the admin address %s: %s", self.options.admin_address, exc)
            return 1
        bfd_started = runtime_started = source_started = False
        try:
            if self.bfd is not None:
                bfd_started = True
                await asyncio.to_thread(self.bfd.start)
            runtime_started = True  # stopped even if start fails half-way
            await self.runtime.start()
            self._tasks = [
                self._loop.create_task(self._applier(), name="agent-applier"),
                self._loop.create_task(self._publisher(), name="agent-status"),
                self._loop.create_task(self._loop_monitor(), name="agent-loop-monitor"),
            ]
            if self.options.handle_signals:
                self.install_signal_handlers()
            source_started = True  # stopped even if start fails half-way
            if await self._start_source(source):
                self._log_started()
                await self._stop.wait()
        except Exception:
            log.exception("agent failed")
            self._exit_code = 1
        logs.event(log, logging.INFO, "stopping", "route server stopping")
        self._closing = True
        self._remove_signal_handlers()
        if source_started:
            await self._step("source stop", source.stop())
        await self._stop_tasks()
        if runtime_started:
            await self._step("runtime stop", self.runtime.stop(keep_routes=self._keep_routes))
        await self._step("admin close", self.admin.close())
        if bfd_started and self.bfd is not None:
            await self._step("BFD stop", asyncio.to_thread(self.bfd.stop))
        logs.event(log, logging.INFO, "stopped", "route server stopped")
        return self._exit_code

    async def _start_source(self, source: Source) -> bool:
        """Start the source unless a stop comes first (its start is then cancelled); raises its failure."""
        assert self._loop is not None
        starting = self._loop.create_task(source.start(self), name="source-start")
        stopping = self._loop.create_task(self._stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        starting.result()
        return True

    def _log_started(self) -> None:
        desired = self.desired or self._latest or DesiredState()
        logs.event(
            log,
            logging.INFO,
            "started",
            "route server running",
            node=self.options.node_name or desired.node.name,
            admin=self.admin.address,
            route_servers=len(desired.route_servers),
            peers=sum(len(rs.peers) for rs in desired.route_servers),
            tables=sum(len(rs.tables) for rs in desired.route_servers),
        )

    async def _step(self, what: str, step: Awaitable[object]) -> None:
        """One shutdown step: a failure is logged and makes the exit code 1; the next steps still run."""
        try:
            await step
        except Exception:
            log.exception("%s failed", what)
            self._exit_code = 1

    def _remove_signal_handlers(self) -> None:
        if self._loop is None:
            return
        for sig in self._signals:
            self._loop.remove_signal_handler(sig)
            # asyncio resets to SIG_DFL; give back what the process had (SIG_IGN under nohup).
            inherited = self._inherited_handlers.pop(sig, None)
            if inherited is not None:
                signal.signal(sig, inherited)
        self._signals = []

    def _on_stop_signal(self) -> None:
        self.request_stop(keep_routes=self.options.signal_keeps_routes)

    def _on_sighup(self) -> None:
        for callback in list(self._reload_callbacks):
            try:
                callback()
            except Exception:
                log.exception("reload callback failed")

    async def _stop_tasks(self) -> None:
        """Let an apply in progress finish (bounded), then end the agent's tasks."""
        self._wake.set()
        applier = self._tasks[0] if self._tasks else None
        if applier is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(applier), APPLY_DRAIN_TIMEOUT)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        stopped = AgentStoppedError("the agent stopped before this state was applied")
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(stopped)
        self._waiters = []

    # -- the applier ---------------------------------------------------------------------------------

    def _next_pass(self) -> float | None:
        """Seconds until the applier runs on its own: a retry after failure, else the periodic pass."""
        if self._latest is None:
            return None
        if self._failed:
            return self._retry
        interval = self.options.reapply_interval
        return interval if interval > 0 else None

    async def _applier(self) -> None:
        """The only caller of runtime.apply: the latest state, coalesced; retries; periodic passes."""
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_pass())
                self._wake.clear()
            except TimeoutError:
                pass  # the periodic pass, or the retry after a failure: apply the latest again
            if self._closing:
                return
            if self._latest is not None:
                await self._apply_latest()
            self._settle_refusal()

    async def _apply_latest(self) -> None:
        seq, desired, sources = self._submitted, self._latest, self._latest_sources
        assert desired is not None
        try:
            if sources is not None:
                self.runtime.sources = sources
            await self.runtime.apply(desired)
        except Exception as exc:
            self._retry = min(RETRY_MAX, self._retry * 2) if self._failed else RETRY_MIN
            self._failed = True
            logs.event(
                log,
                logging.ERROR,
                "config_apply_failed",
                "applying the desired state failed; retrying",
                error=f"{type(exc).__name__}: {exc}",
                retry_seconds=self._retry,
            )
            log.debug("apply failure", exc_info=True)
            self._resolve(seq, error=ApplyError(f"{type(exc).__name__}: {exc}"))
            return
        if self._failed:
            logs.event(log, logging.INFO, "config_apply_recovered", "the desired state is applied again")
        self._failed = False
        self._retry = RETRY_MIN
        self._applied = seq
        self.desired = desired
        self._resolve(seq, generation=self.runtime.generation)
        self._published.set()

    def _resolve(self, seq: int, *, generation: int = 0, error: Exception | None = None) -> None:
        waiting = []
        for wanted, future in self._waiters:
            if wanted > seq:
                waiting.append((wanted, future))
            elif not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(generation)
        self._waiters = waiting

    def _settle_refusal(self) -> None:
        """A refusal waits for the states submitted before it; a newer submit supersedes it."""
        refusal = self._refusal
        if refusal is None:
            return
        seq, message = refusal
        if self._submitted > seq:
            self._refusal = None  # a newer configuration came after the refused one
        elif self._applied >= seq and not self._failed:
            self._refusal = None
            self.runtime.refuse(message)

    # -- the loop monitor ----------------------------------------------------------------------------

    async def _loop_monitor(self) -> None:
        """Measure how late the loop wakes a 50 ms timer: nothing may block it (DESIGN §7.3)."""
        loop = asyncio.get_running_loop()
        metrics = self.runtime.metrics
        worst = 0.0
        while True:
            due = loop.time() + LOOP_MONITOR_INTERVAL
            await asyncio.sleep(LOOP_MONITOR_INTERVAL)
            lag = max(0.0, loop.time() - due)
            metrics.loop_lag_seconds.observe(lag)
            if lag > worst:
                worst = lag
                metrics.loop_lag_max_seconds.set(worst)

    # -- status sinks --------------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), self.options.status_interval)
            self._published.clear()
            if not self._sinks:
                continue
            status = self.runtime.status()
            for sink in list(self._sinks):
                try:
                    await sink.publish(status)
                except Exception:
                    log.exception("status sink %r failed", sink)


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a failure as seen: submitting without awaiting is allowed (the agent logs failures)."""
    if not future.cancelled():
        future.exception()


def _discard(callbacks: list[Callable[[], object]], callback: Callable[[], object]) -> None:
    with contextlib.suppress(ValueError):
        callbacks.remove(callback)


__all__ = [
    "REAPPLY_INTERVAL",
    "Agent",
    "AgentOptions",
    "AgentStoppedError",
    "ApplyError",
    "BfdHost",
    "RuntimeLike",
    "Source",
    "StatusSink",
]
