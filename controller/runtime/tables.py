"""One RouteTableAssociation at run time: a writer fed with FIB changes by its own task.

Owns: `TableRuntime` (the table's pending batch, its writer, its resync schedule and retry backoff,
the routes the writer rejected, the adopted prefixes held back by the restart deferral) and
`TableOwner`, the narrow interface it needs of its route server: the FIB's entries, the persist
settings, whether the restart deferral is running, where events go, and a call when it opened.

`push` only records changes (latest wins per prefix) and wakes the task, so the speaker's event
callback never waits on the kernel; the task writes everything pending as one batch. Every table is
fully resynchronised from the FIB every `resync_interval` seconds, or 20 times as long as the last
resync took if that is longer (the writer re-reads the target,
repairs drift, removes what we own but no longer want) and after any failed write, with backoff
(controller/runtime/retry.py): the FIB is the source of truth, so a lost batch is never lost for good.

Must not touch: the speaker, the FIB itself (it reads entries through its owner), other tables, or
any concrete writer (it gets one from the factory it is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping
from typing import Protocol

from bgp.types import IPV4_UNICAST, IPV6_UNICAST, key_is_ipv6, key_str
from controller.desired import Address, Hops, PersistConfig, RouteChanges, RouteKey, TableDesired
from controller.events import (
    RoutesAdopted,
    RoutesWithdrawn,
    TableRecovered,
    TableRoutesRejected,
    TableWriteFailed,
    TableWritten,
)
from controller.runtime import memory, retry
from controller.runtime.ports import RouteServerPart, TableWriter, WriterFactory
from controller.writers.base import Rejection, WriteReport

CLOSE_TIMEOUT = 10.0
RESYNC_COST_FACTOR = 20.0  # a periodic full resync waits at least 20x its own duration


class TableOwner(RouteServerPart, Protocol):
    """What a table needs of its route server (controller/runtime/route_server.py implements it)."""

    @property
    def persist(self) -> PersistConfig: ...

    @property
    def deferring(self) -> bool: ...

    @property
    def deferral_bound(self) -> float:
        """The longest the restart deferral runs (adopted routes without persistRoutes: the hold)."""
        ...

    def fib_entries(self) -> Mapping[RouteKey, Hops]: ...

    def table_opened(self) -> None: ...


class TableRuntime:
    """One table: `push` changes, `request_resync`, `close`; status through controller/runtime/views.py."""

    def __init__(
        self,
        owner: TableOwner,
        desired: TableDesired,
        factory: WriterFactory,
        resync_interval: float,
    ) -> None:
        self.owner = owner
        self.desired = desired
        self.filter = desired.filter_policy()
        self.writer: TableWriter | None = None
        self._factory = factory
        self._resync_interval = resync_interval
        self._pending: dict[RouteKey, Hops | None] = {}
        # Counts what may have changed what the table should hold (pushes, a new filter): the
        # writer keeps its in-sync answer for status until this or its own routes change.
        self.desired_version = 0
        self._pending_since: float | None = None
        self._wake = asyncio.Event()
        self._resync_at: float | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = retry.Backoff()
        self.rejected: dict[RouteKey, Rejection] = {}
        self.last_error: str | None = None
        self.last_sync_at: float | None = None
        self.last_write_at: float | None = None
        self.synced = False
        # Restart deferral (controller/runtime/deferral.py): the prefixes adopted at start while the
        # owner defers them (None: not deferring), their families, and those whose changes were held.
        self._adopted: frozenset[RouteKey] | None = None
        self.adopted_families: frozenset[str] = frozenset()
        self._deferred: set[RouteKey] = set()

    @property
    def name(self) -> str:
        return self.desired.name

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"table-{self.name}")

    def passes(self, prefix: RouteKey) -> bool:
        return self.filter is None or self.filter.check_prefix(prefix) is None

    def desired_hops(self) -> Mapping[RouteKey, Hops]:
        """What the table should hold, as prefix -> next hops (the FIB itself without a filter)."""
        entries = self.owner.fib_entries()
        if self.filter is None:
            return entries
        passes = self.passes
        return {prefix: hops for prefix, hops in entries.items() if passes(prefix)}

    # -- what the writer follows (controller/writers/base.py WantedRoutes) -------------------------

    def get(self, prefix: RouteKey) -> Hops | None:
        """The next hops the writer should keep for `prefix` now (it repairs drift with this)."""
        adopted = self._adopted
        if adopted is not None and prefix in adopted:
            # Restart deferral: an adopted route stays as installed until end_deferral's resync.
            return self.writer.installed_route(prefix) if self.writer is not None else None
        if not self.passes(prefix):
            return None
        return self.owner.fib_entries().get(prefix)

    def snapshot(self) -> dict[RouteKey, Hops]:
        """Everything the table should hold now: the FIB (filtered), adopted routes as installed."""
        desired = dict(self.desired_hops())
        if self._adopted is not None and self.writer is not None:
            installed = self.writer.installed()
            desired.update({p: installed[p] for p in self._adopted if p in installed})
        return desired

    def push(self, changes: RouteChanges, owned: bool = False) -> None:
        """Record changes (latest wins per prefix). `owned`: the caller hands the dict over and
        never touches it again, so with nothing pending it becomes the pending batch as it is (a
        million-route feed or withdraw is not copied once more)."""
        self.desired_version += 1
        if self.filter is None:
            added = bool(changes)
            if owned and not self._pending and type(changes) is dict:
                self._pending = changes
            else:
                self._pending.update(changes)  # one C-level pass for a bulk feed
        else:
            added = False
            passes, pending = self.passes, self._pending
            for prefix, entry in changes.items():
                if passes(prefix):
                    pending[prefix] = entry
                    added = True
        if added:
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._wake.set()

    def fail_over(self, gateways: Collection[Address]) -> None:
        """These gateways are dead (BFD): the writer moves our routes off them now, group by group,
        before the FIB's changes arrive (controller/writers/base.py `fail_over`)."""
        if self.writer is None:
            return
        started = time.monotonic()
        try:
            report = self.writer.fail_over(gateways)
        except Exception as exc:  # the FIB's changes, right behind, still move every route
            self._failed(exc, "fail over")
            return
        if report is not None:
            self._record(report, "failover", started)

    def request_resync(self) -> None:
        self._resync_at = asyncio.get_running_loop().time()
        self._wake.set()

    def set_desired(self, desired: TableDesired) -> None:
        """A new prefix filter (the target is unchanged): resynchronise with it."""
        self.desired = desired
        self.filter = desired.filter_policy()
        self.desired_version += 1
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
                    self.owner.events.emit(RoutesWithdrawn(self.owner.name, self.name, report.removed))
        except Exception as exc:
            self._failed(exc, "withdraw")
        finally:
            await writer.close()

    # -- the task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._backoff
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
                backoff.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, "write")
                # The batch may be lost: a full resync after the backoff is the recovery.
                delay = backoff.failed(loop.time())
                self._resync_at = backoff.at
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._factory(self.desired)
        writer.follow(self)  # it asks us (the FIB) when it repairs: no second copy of every route
        await writer.start()
        self.writer = writer
        installed = writer.installed()
        adopted = len(installed)
        persist = self.owner.persist
        if adopted:
            # Routes of a previous run (persistRoutes, a SIGTERM that kept them, or a crash): keep
            # them while the sessions come back, so a restart never flaps a route. With persistRoutes
            # they stay for its window; without, until the restart deferral ends (end_deferral then
            # resyncs at once, removing what the converged FIB no longer has), or its bound.
            hold = persist.duration_seconds if persist.enabled else self.owner.deferral_bound
            self._resync_at = loop.time() + hold
            if self.owner.deferring:
                self._adopted = frozenset(installed)
                self.adopted_families = frozenset(
                    str(IPV6_UNICAST if key_is_ipv6(p) else IPV4_UNICAST) for p in self._adopted
                )
            self.owner.events.emit(RoutesAdopted(self.owner.name, self.name, adopted, round(hold)))
        else:
            self._resync_at = loop.time()
        self.owner.table_opened()

    def end_deferral(self) -> int:
        """The owner's deferral ended: write the FIB of the adopted prefixes it held back (one batch)."""
        adopted, self._adopted = self._adopted, None
        deferred, self._deferred = self._deferred, set()
        if adopted is not None and not self.owner.persist.enabled:
            # Without persistRoutes the adopted routes were only held for the deferral: the next
            # resync (now) removes those the converged FIB does not have.
            self._resync_at = asyncio.get_running_loop().time()
            self._wake.set()
        if adopted is None or not deferred:
            return 0
        entries = self.owner.fib_entries()
        self.push({p: entries.get(p) for p in deferred})
        return len(deferred)

    def _defer(self, batch: dict[RouteKey, Hops | None]) -> dict[RouteKey, Hops | None]:
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
        if self.rejected:
            for prefix in batch:
                self.rejected.pop(prefix, None)
        self._record(report, "apply", since)

    async def _resync(self) -> None:
        assert self.writer is not None
        self._pending = {}
        since, self._pending_since = self._pending_since, None
        desired = self.desired_hops()
        if self._adopted is not None:
            # Restart deferral: adopted routes stay as installed; end_deferral writes the FIB's.
            self._deferred.update(p for p in self._adopted if p in desired)
            desired = self.snapshot()
        # The writer copies what it needs before its first await: the FIB's own table can be passed.
        started = time.monotonic()
        report = await self.writer.resync(desired)
        took = time.monotonic() - started
        del desired
        self.rejected = {}
        # A full pass re-reads the whole target (a million-route kernel table takes seconds of CPU):
        # the next one waits at least RESYNC_COST_FACTOR times as long as this one took, so resyncs
        # never cost more than 1/RESYNC_COST_FACTOR of a core. Between them the writer repairs what
        # it is notified of, and a failed write still resyncs at once (with backoff).
        interval = max(self._resync_interval, RESYNC_COST_FACTOR * took)
        self._resync_at = asyncio.get_running_loop().time() + interval
        self.last_sync_at = time.time()
        self.synced = True
        self._record(report, "resync", since)

    def _record(self, report: WriteReport, kind: str, since: float | None) -> None:
        owner, events = self.owner, self.owner.events
        seconds = time.monotonic() - since if since is not None else None
        events.emit(
            TableWritten(
                owner.name,
                self.name,
                kind,
                report.installed,
                report.removed,
                report.netlink_messages,
                seconds,
            )
        )
        self.last_write_at = time.time()
        memory.release_soon(report.removed)  # a large withdraw: its memory back to the OS, once quiet
        if self.last_error is not None:
            events.emit(TableRecovered(owner.name, self.name))
        self.last_error = None
        if not report.rejected:
            return
        new = [r for r in report.rejected if self.rejected.get(r.prefix) != r]
        for rejection in report.rejected:
            self.rejected[rejection.prefix] = rejection
        if new:
            reasons: dict[str, int] = {}
            for r in new:
                reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
            events.emit(
                TableRoutesRejected(
                    owner.name, self.name, len(new), reasons, f"{key_str(new[0].prefix)}: {new[0].message}"
                )
            )

    def _failed(self, exc: Exception, what: str) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.owner.events.emit(
            TableWriteFailed(self.owner.name, self.name, message, what, first=message != self.last_error)
        )
        self.last_error = message
