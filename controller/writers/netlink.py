"""The node route-table writer: the FIB into a Linux kernel table over rtnetlink.

Owns: `NodeTableWriter` (a `RouteWriter`, controller/writers/base.py) for one (table, metric), its
routes and nexthop objects marked with our protocol, and table-name resolution. May not touch:
routes or nexthop objects of any other protocol or table (the kernel enforces it for deletes), or
anything above the writers (it takes `controller.desired` types only).

Ownership (DESIGN.md §7.8): every route and nexthop object we write carries our own rtnetlink
protocol number. Deletes name that protocol, so the kernel itself refuses to remove a route we do
not own; new routes are created with NLM_F_EXCL, so the kernel refuses to overwrite a route someone
else holds at our (prefix, metric) and we report FOREIGN_ROUTE; replaces are sent only for routes
we read back as ours. Nexthop object ids come from a block derived from the table, so writers of
different tables on one node never collect each other's objects. At start we read our routes and
nexthop objects back and adopt them instead of flushing; `resync` then removes what is stale.

Prefix-independent convergence (DESIGN.md §5): with kernel nexthop objects, every prefix points at
a nexthop *group* keyed by its next-hop set (a group of one for active/passive). When every prefix
of a group leaves it (the usual failover: the active appliance died and every VIP behind it moves
to the standby), the group's membership is replaced with ONE netlink message and all its routes
move at once, whatever their number. Other moves are batched route replaces; kernels without
nexthop objects get batched replaces with explicit gateways. Objects nobody uses any more are
deleted in a second batch after the routes are committed, so a failed route never loses the
object it still points at.

Repair: a netlink monitor (route and nexthop groups) sees changes made by anyone but us and,
debounced, restores the affected prefixes; a socket filter drops in the kernel the notifications
our own requests cause (their port id is ours) and other tables' routes, so a bulk install cannot
overflow it. A lost notification (overflow anyway) forces a full pass, and a periodic resync
re-reads the table as the source of truth. Neither removes anything before the controller
has given the writer a complete FIB once (`resync`), so a restarted agent keeps forwarding while
its BGP sessions come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import heapq
import itertools
import logging
import socket
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from bgp.types import key_str
from controller.desired import Address, Backed, Hops, RouteChanges, RouteKey
from controller.writers import rtnl
from controller.writers.base import Rejection, RejectReason, WantedRoutes, WriteReport
from controller.writers.rtnl import Batch, NetlinkChannel, NextHop, Op, SendResult, canonical

log = logging.getLogger(__name__)

# Not in iproute2's rt_protos nor FRR's (186-198; 196 is FRR's "static"), BIRD's (12) or Calico's (80).
DEFAULT_PROTOCOL = 245
MIN_PROTOCOL = 5  # 0-4 are the kernel's and the administrator's (unspec, redirect, kernel, boot, static)
CREATE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
REPLACE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
RT_TABLES_PATHS: tuple[str, ...] = (
    "/etc/iproute2/rt_tables",
    "/usr/share/iproute2/rt_tables",
    "/usr/lib/iproute2/rt_tables",
    "/etc/iproute2/rt_tables.d",
    "/usr/share/iproute2/rt_tables.d",
    "/usr/lib/iproute2/rt_tables.d",
)
BUILTIN_TABLES = {"default": 253, "main": 254, "local": 255}
_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_ID_SLOTS = 0xFFFF  # nexthop ids per table block
_BULK = 10_000  # passes at least this large run with the cyclic garbage collector paused
_CHUNK = 20_000  # new routes planned and sent per chunk of a bulk apply (_apply_locked)
_FLUSH_MIN = 64  # removals from one group that delete the group instead of each route (_plan_flushes)
_T = TypeVar("_T")


class UnknownTableError(ValueError):
    """A table name that is neither a number nor named in any rt_tables file."""


def resolve_table(table: int | str, search: Iterable[str | Path] = RT_TABLES_PATHS) -> int:
    """A table id from a number or an iproute2 name.

    `search` lists rt_tables files and rt_tables.d directories (whose `*.conf` files are read in
    name order), first match wins, like iproute2; main/default/local are built in.
    """
    if isinstance(table, int):
        return table
    name = table.strip()
    try:
        return int(name, 0)
    except ValueError:
        pass
    for path in _table_files(search):
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[1] == name:
                try:
                    return int(fields[0], 0)
                except ValueError:
                    continue
    if name in BUILTIN_TABLES:
        return BUILTIN_TABLES[name]
    raise UnknownTableError(f"route table {name!r} is not a number and not named in any rt_tables file")


def _table_files(search: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for entry in search:
        path = Path(entry)
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.conf") if p.is_file()))
        elif path.is_file():
            files.append(path)
    return files


def nexthop_id_block(table: int) -> int:
    """The first nexthop id of a table's block: 0x8000 | tag in the top 16 bits (FRR uses < 2^28).

    Tables below 0x7FFF map exactly; larger ids are folded by CRC-32, so two such tables on one
    node could share a block (then give them different protocol numbers).
    """
    tag = table if table < 0x7FFF else zlib.crc32(table.to_bytes(4, "big")) % 0x7FFF
    return (0x8000 | tag) << 16


@contextlib.contextmanager
def _gc_paused(size: int) -> Iterator[None]:
    """Pause the cyclic collector during a bulk pass over `size` routes.

    Decoding or planning 100k routes allocates ~1M short-lived objects; the collector's full scans
    of the (large, long-lived) route state then take over half of the time. The objects made here
    form no reference cycles, so nothing waits for the collector; it is re-enabled at once after.
    """
    if size < _BULK or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(slots=True, eq=False)
class _Route:
    """One of our routes as the kernel holds it: its hop set and the object of ours it points at.

    Shared, not one per route (`NodeTableWriter._state`): every route on one group holds that group's
    record, every route with one explicit hop set holds that set's, so a million routes cost a dict
    slot each. A group rewrite updates the one record of its group; a route that moves is given
    another record, never a changed one.
    """

    hops: tuple[NextHop, ...]
    gid: int | None = None  # our nexthop group
    hop_id: int | None = None  # our single hop object (adopted only: we always write groups)


@dataclass(slots=True)
class _Group:
    """One of our nexthop groups: member object ids, the hop set they stand for, how many use it."""

    member_ids: tuple[int, ...]
    members: tuple[NextHop, ...]
    users: int = 0


# (prefix, its route before this batch): one route that moves to another hop set
_Move = tuple[RouteKey, "_Route | None"]
# (prefix, its route before this batch, the hop set it gets, the group it will point at)
_Planned = tuple[RouteKey, _Route | None, tuple[NextHop, ...], int | None]


@dataclass(slots=True)
class _Plan:
    """What one batch will do, to commit (or undo) per object once the kernel has answered."""

    batch: Batch = field(default_factory=Batch)
    routes: list[_Planned] = field(default_factory=list)  # replaces of routes we hold
    # Creates, one run per hop set and group: committed in bulk when the kernel refused nothing.
    created: list[tuple[list[RouteKey], tuple[NextHop, ...], int | None]] = field(default_factory=list)
    rewrites: dict[int, tuple[_Group, _Group, list[tuple[RouteKey, _Route]]]] = field(default_factory=dict)
    new_hops: dict[int, NextHop] = field(default_factory=dict)
    new_groups: set[int] = field(default_factory=set)
    removals: list[tuple[RouteKey, _Route]] = field(default_factory=list)
    # Groups deleted whole: every route on them is removed by that one message (the kernel flushes
    # the routes that use a deleted nexthop object), instead of one delete per route.
    flushed: set[int] = field(default_factory=set)
    stale: list[tuple[RouteKey, int]] = field(default_factory=list)


class NodeTableWriter:
    """Programs one kernel table in the network namespace its sockets were opened in.

    Every socket is opened in the constructor, so a caller may construct the writer while switched
    into another namespace (or pass a `channel` opened there, with watch=False: the watcher's own
    socket is opened here). One owner: all methods serialise on one lock.
    """

    def __init__(
        self,
        table: int | str,
        *,
        metric: int | None = None,
        protocol: int = DEFAULT_PROTOCOL,
        use_nexthop_objects: bool | None = None,
        require_table: bool = False,
        watch: bool = True,
        resync_interval: float | None = 60.0,
        debounce: float = 0.05,
        rt_tables: Iterable[str | Path] = RT_TABLES_PATHS,
        on_report: Callable[[WriteReport], None] | None = None,
        channel: rtnl.RouteChannel | None = None,
    ) -> None:
        self.table = resolve_table(table, rt_tables)
        if not 0 < self.table < 2**32 or self.table == rtnl.RT_TABLE_LOCAL:
            raise ValueError(f"table {self.table} cannot hold our routes (use 1-254 or 256-4294967295)")
        if not MIN_PROTOCOL <= protocol <= 255:
            raise ValueError(f"protocol {protocol} is reserved or out of range ({MIN_PROTOCOL}-255)")
        if metric is not None and not 0 <= metric < 2**32:
            raise ValueError(f"metric {metric} out of range")
        self.metric = metric
        self.protocol = protocol
        self.require_table = require_table
        self.resync_interval = resync_interval
        self.debounce = debounce
        self._on_report = on_report
        self._nexthop_objects = use_nexthop_objects
        self._block = nexthop_id_block(self.table)
        self._encoder = rtnl.RouteEncoder(self.table, protocol, metric)
        self._channel: rtnl.RouteChannel = channel if channel is not None else NetlinkChannel()
        self._monitor: socket.socket | None = None
        if watch:
            try:
                self._monitor = rtnl.open_monitor(
                    (rtnl.RTNLGRP_IPV4_ROUTE, rtnl.RTNLGRP_IPV6_ROUTE, rtnl.RTNLGRP_NEXTHOP),
                    ignore_portid=self._channel.portid,
                    table=self.table,
                )
            except OSError:
                self._channel.close()
                raise
        self._lock = asyncio.Lock()
        self._started = False
        # Read here, where the sockets were opened: /proc/sys/net is the namespace of the reader.
        self.nexthop_compat_mode = _read_compat_mode()
        self._compat_hint_logged = False
        # What the controller wants, and whether that is the whole FIB (after one resync). A writer
        # that follows its owner (`follow`) keeps no copy: it asks the owner when it repairs.
        self._desired: dict[RouteKey, Hops] = {}
        self._wanted: WantedRoutes | None = None
        self._synced = False
        # Our picture of the kernel, rebuilt from it by _adopt.
        self._routes: dict[RouteKey, _Route] = {}
        self._adopt_confirmed = 0  # records of ours a dump found again (_adopt_now)
        self._generation = 0  # bumped after every pass and absorbed notification (installed()'s cache)
        self._installed: tuple[int, Mapping[RouteKey, Hops]] | None = None
        self._matched: tuple[tuple[int, int, int], bool] | None = None  # matches(): its key, answer
        self._direct: set[RouteKey] = set()  # routes with hop_id set (rare)
        # The shared route records (_Route): per group, per explicit hop set, per single hop object.
        self._group_states: dict[int, _Route] = {}
        self._explicit_states: dict[tuple[NextHop, ...], _Route] = {}
        self._hop_states: dict[int, _Route] = {}
        self._groups: dict[int, _Group] = {}
        self._group_by_set: dict[tuple[NextHop, ...], int] = {}
        self._hops: dict[int, NextHop] = {}
        self._hop_ids: dict[NextHop, int] = {}
        self._foreign: set[RouteKey] = set()
        # Ours at a metric we no longer use -> our group it points at (alive until the route goes).
        self._stale: dict[tuple[RouteKey, int], int | None] = {}
        self._taken: set[int] = set()
        self._cursor = 0
        self._tables_present: set[int] = set()
        # Interned hops and hop sets, so equal sets are the same object (identity compares are cheap).
        self._hop_intern: dict[NextHop, NextHop] = {}
        self._set_intern: dict[tuple[NextHop, ...], tuple[NextHop, ...]] = {}
        self._resolved: dict[Address, NextHop | None] = {}
        # Notification watcher state (event loop thread).
        self._events: list[tuple[bool, rtnl.KernelRoute]] = []
        self._full_pass = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def uses_nexthop_objects(self) -> bool:
        return bool(self._nexthop_objects)

    def installed(self) -> Mapping[RouteKey, Hops]:
        """Our routes in the table as last read or written: prefix -> gateways.

        Safe to call while a pass runs in its worker thread (the items are copied first). A mapping
        of every route: status and metrics use `installed_count`, `first_installed` and `matches`
        instead; the restart deferral reads it once. The answer is kept (read-only) until our
        picture changes: every pass and every absorbed notification counts as a change
        (`_generation`). Hop sets are shared (interned), so each set's gateways are built once.
        """
        generation = self._generation  # read before the copy: a pass ending meanwhile bumps it
        cached = self._installed
        if cached is not None and cached[0] == generation:
            return cached[1]
        memo: dict[int, tuple[tuple[NextHop, ...], tuple[Address, ...]]] = {}  # id -> (the set, gateways)
        result: dict[RouteKey, Hops] = {}
        for prefix, route in list(self._routes.items()):
            hops = route.hops
            known = memo.get(id(hops))
            if known is None or known[0] is not hops:
                known = memo[id(hops)] = (hops, _gateways(hops))
            result[prefix] = known[1]
        view = MappingProxyType(result)
        self._installed = (generation, view)
        return view

    def installed_count(self) -> int:
        return len(self._routes)

    def first_installed(self, limit: int) -> list[tuple[RouteKey, Hops]]:
        """Up to `limit` routes in key order: the keys are ints, so the selection runs in C (over a
        copy of the keys only: a pass in the worker thread may change the records meanwhile)."""
        if limit <= 0:
            return []
        routes = self._routes
        keys = list(routes)
        chosen = sorted(keys) if len(keys) <= limit else heapq.nsmallest(limit, keys)
        found = ((key, routes.get(key)) for key in chosen)
        return [(key, _gateways(route.hops)) for key, route in found if route is not None]

    def matches(self, desired: Mapping[RouteKey, Hops], version: int) -> bool:
        """Whether our records are exactly `desired`, compared in place (no copy of either side).

        The answer is kept per (our generation, the caller's `version`), so a scrape costs one pass
        over the routes only after something changed. A pass running in the worker thread meanwhile
        (the records change under the loop) makes the answer False, and it is not kept.
        """
        if self._lock.locked():
            return False  # a pass is queued or running: not in sync until it is over
        generation = self._generation
        key = (generation, version, len(desired))
        kept = self._matched
        if kept is not None and kept[0] == key:
            return kept[1]
        routes = self._routes
        result = len(routes) == len(desired)
        if result:
            memo: dict[int, tuple[tuple[NextHop, ...], Hops]] = {}  # id -> (our set, its gateways)
            wanted = desired.get
            try:
                for prefix, route in routes.items():
                    hops = route.hops
                    known = memo.get(id(hops))
                    if known is None or known[0] is not hops:
                        known = memo[id(hops)] = (hops, _gateways(hops))
                    gateways = wanted(prefix)
                    if gateways is not known[1] and gateways != known[1]:
                        result = False
                        break
            except RuntimeError:  # the records changed size under us: a pass is running
                return False
        if self._generation != generation or self._lock.locked():
            return False  # written meanwhile: the comparison may have seen a mix
        self._matched = (key, result)
        return result

    def installed_route(self, prefix: RouteKey) -> Hops | None:
        """One prefix's gateways as last read or written (None: no route of ours); O(1), no copy.

        Safe while a pass runs in its worker thread: one dict read, and a route's hop set is a tuple.
        """
        route = self._routes.get(prefix)
        return _gateways(route.hops) if route is not None else None

    def foreign(self) -> frozenset[RouteKey]:
        """Prefixes where someone else's route holds our (table, metric)."""
        return frozenset(self._foreign)

    async def _work(self, function: Callable[..., _T], *args: object) -> _T:
        """Run kernel work in a thread, under the lock held by the caller.

        If the caller is cancelled, the thread still finishes before the lock is released, so no
        other pass ever sees the socket or our state mid-batch.
        """
        future = asyncio.ensure_future(asyncio.to_thread(function, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise
        finally:
            self._generation += 1  # the pass is over (or never ran): installed() reads afresh
            self._installed = None  # and the last answer is not kept alive (a million entries)

    async def start(self) -> WriteReport:
        """Adopt what we own in this table (nothing is removed yet), then start watching it."""
        async with self._lock:
            await self._work(self._adopt)
        if self._monitor is not None and self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._loop.add_reader(self._monitor.fileno(), self._on_notification)
            self._task = self._loop.create_task(self._background(), name=f"node-writer-{self.table}")
        return WriteReport()

    def follow(self, wanted: WantedRoutes) -> None:
        """From now on, repairs read what the table should hold from `wanted` (its owner, which has
        the FIB): no copy of every route is kept here. Until the next resync, what was applied
        before still counts as not yet the whole picture (removals wait for that resync)."""
        self._wanted = wanted
        self._desired = {}

    async def apply(self, changes: RouteChanges) -> WriteReport:
        """Program what changed (None removes), in one batch; rejections never stop the others.

        `changes` is read in the worker thread, not copied (a bulk feed's batch is most of the FIB):
        the caller must not change it until this returns (TableRuntime hands over its pending dict).
        """
        async with self._lock:
            if self._wanted is not None:  # the owner has what we were given: nothing to record
                if not self._started:
                    await self._work(self._adopt)
                return await self._work(self._apply_locked, changes)
            desired = self._desired
            # In C; the None entries (removals, few except on a withdraw) are deleted just below.
            desired.update(changes)  # type: ignore[arg-type]
            removals = list(changes.values()).count(None)
            if removals and removals == len(desired):
                desired.clear()  # every route we wanted goes (a withdraw-all): no loop over a million
            elif removals:
                for prefix in [p for p, entry in changes.items() if entry is None]:
                    del desired[prefix]
            if not self._started:
                await self._work(self._adopt)
            return await self._work(self._apply_locked, changes)

    def fail_over(self, gateways: Collection[Address]) -> WriteReport | None:
        """BFD declared these gateways dead: move every route of ours off them now, per group.

        Prefix-independent convergence: each of our nexthop groups that uses a dead gateway is
        rewritten to its other members, or, when none is left, to the backup its routes were grouped
        by (`Backed`: the FIB's next hop through another appliance). One message per group, however
        many routes use it, and no route is looked at. Called in the BFD Down callback before the
        RIB hears of the failure: the RIB's own changes follow and find the routes already there
        (or repoint the few whose result differs; the FIB stays the source of truth).

        Runs at once, on the caller's thread, when no pass holds the socket (it is a few messages);
        otherwise it is queued ahead of the changes the failure causes. The report (None when
        queued or nothing was ours to move) counts messages, not routes.
        """
        if not self._nexthop_objects or not self._groups or not gateways:
            return None
        dead = frozenset(gateways)
        if self._lock.locked():
            loop = self._loop or asyncio.get_running_loop()
            loop.create_task(self._fail_over_queued(dead), name=f"fail-over-{self.table}")
            return None
        try:
            return self._fail_over_now(dead)
        finally:
            self._generation += 1

    async def _fail_over_queued(self, dead: frozenset[Address]) -> None:
        async with self._lock:
            report = await self._work(self._fail_over_now, dead)
        if self._on_report is not None and report.netlink_messages:
            self._on_report(report)

    async def resync(self, desired: Mapping[RouteKey, Hops]) -> WriteReport:
        """Make the table match `desired` exactly (for what we own): restore, fix, remove stale."""
        async with self._lock:
            copy = dict(desired)  # the worker thread reads it while the caller's FIB moves on
            if self._wanted is None:
                self._desired = copy
            self._synced = True
            self._events.clear()
            self._full_pass = False
            return await self._work(self._resync_locked, copy, True)

    async def withdraw_all(self) -> WriteReport:
        """Remove every route and nexthop object we own for this table; nothing else."""
        async with self._lock:
            self._desired = {}
            self._wanted = None  # nothing is wanted any more, whatever the owner's FIB holds
            self._synced = True
            return await self._work(self._withdraw_all_locked)

    async def close(self) -> None:
        """Stop watching and close the sockets; routes stay (a restart adopts them)."""
        async with self._lock:  # no pass is running, and none starts: the task waits for this lock
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._wake_handle is not None:
                self._wake_handle.cancel()
                self._wake_handle = None
            if self._monitor is not None:
                if self._loop is not None:
                    self._loop.remove_reader(self._monitor.fileno())
                self._monitor.close()
                self._monitor = None
            self._channel.close()

    # -- kernel state ---------------------------------------------------------------------------

    def _owns_id(self, nh_id: int) -> bool:
        return nh_id & 0xFFFF0000 == self._block

    def _metric_for(self, prefix: RouteKey) -> int:
        """The metric our route for `prefix` has in the kernel (IPv6 turns 0/absent into 1024)."""
        if prefix < rtnl.V6_FLAG:
            return self.metric or 0
        return self.metric or 1024

    def _intern(self, hops: Iterable[NextHop]) -> tuple[NextHop, ...]:
        """The canonical (sorted, deduplicated) hop set, as the one shared tuple of shared hops."""
        shared = canonical(self._hop_intern.setdefault(h, h) for h in hops)
        return self._set_intern.setdefault(shared, shared)

    def _adopt(self) -> None:
        """Rebuild our picture from the kernel: our routes in our table, our nexthop objects."""
        with _gc_paused(max(len(self._routes), _BULK)):
            self._adopt_now()
        if self._nexthop_objects and self.nexthop_compat_mode == 1 and not self._compat_hint_logged:
            self._compat_hint_logged = True
            log.info(
                "net.ipv4.nexthop_compat_mode is 1: the kernel sends a notification per route whenever a "
                "nexthop group changes, so a failover of 100,000 routes costs it a few ms; set it to 0 "
                "(sysctl) for failover independent of the route count (table %s)",
                self.table,
            )

    def _adopt_now(self) -> None:
        if self._nexthop_objects is None:
            self._nexthop_objects = self._kernel_has_nexthop_objects()
        # Our route records are updated in place, not rebuilt: assigning to a key the dict has keeps
        # that key object (the one the RIB and the FIB share), where a new dict would hold a million
        # new ints decoded from the dump. Records the dump does not confirm are dropped below.
        known = len(self._routes)
        self._adopt_confirmed = 0
        self._direct.clear()
        self._group_states.clear()
        self._explicit_states.clear()
        self._hop_states.clear()
        self._groups.clear()
        self._hops.clear()
        self._hop_ids.clear()
        self._foreign.clear()
        self._stale.clear()
        self._taken.clear()
        self._hop_intern.clear()
        self._set_intern.clear()
        raw_groups: dict[int, tuple[int, ...]] = {}
        try:
            kernel_hops = self._channel.nexthops()
        except OSError:
            kernel_hops = []  # no nexthop objects in this kernel: none of ours either
        for nh in kernel_hops:
            if not self._owns_id(nh.nh_id):
                continue
            self._taken.add(nh.nh_id)
            if nh.protocol != self.protocol:
                continue
            if nh.members:
                raw_groups[nh.nh_id] = nh.members
            elif nh.gateway is not None and nh.ifindex is not None:
                hop = self._hop_intern.setdefault(
                    NextHop(nh.gateway, nh.ifindex), NextHop(nh.gateway, nh.ifindex)
                )
                self._hops[nh.nh_id] = hop
                self._hop_ids.setdefault(hop, nh.nh_id)
        for gid, ids in raw_groups.items():
            self._groups[gid] = _Group(ids, self._intern(self._hops[i] for i in ids if i in self._hops))
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                for route in self._channel.routes(family, self.table):  # streamed: errors come here
                    self._adopt_route(route)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # ENOENT: the table does not exist for this family
                    raise
                self._tables_present.discard(family)
                continue
            self._tables_present.add(family)
        if self._adopt_confirmed < known:
            self._drop_unconfirmed()
        self._reindex_groups()
        self._started = True

    def _drop_unconfirmed(self) -> None:
        """Some records of ours were not in the dump (removed behind our back): find them with a
        second dump of keys only (rare: the kernel tells us of changes; this is the safety net)."""
        present: set[RouteKey] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            if family not in self._tables_present:
                continue
            with contextlib.suppress(FileNotFoundError):
                for route in self._channel.routes(family, self.table):
                    # A record is a route of ours at our metric (_adopt_route): the same key at
                    # another metric is a stale entry, not this record.
                    key = route.key
                    if (
                        route.table == self.table
                        and route.protocol == self.protocol
                        and (route.metric or 0) == self._metric_for(key)
                    ):
                        present.add(key)
        self._routes = {key: route for key, route in self._routes.items() if key in present}
        self._direct.intersection_update(self._routes)

    def _adopt_route(self, kernel: rtnl.KernelRoute) -> None:
        if kernel.table != self.table:
            return
        prefix = kernel.key
        metric = kernel.metric or 0
        ours = kernel.protocol == self.protocol
        if metric != self._metric_for(prefix):
            if ours:
                self._add_stale(prefix, metric, kernel.nh_id)
            return
        if not ours:
            self._foreign.add(prefix)
            return
        routes = self._routes
        if prefix in routes:
            self._adopt_confirmed += 1
        state = routes[prefix] = self._route_from_kernel(kernel)
        if state.hop_id is not None:
            self._direct.add(prefix)

    def _add_stale(self, prefix: RouteKey, metric: int, nh_id: int | None) -> None:
        gid = nh_id if nh_id is not None and nh_id in self._groups else None
        if gid is not None and (prefix, metric) not in self._stale:
            self._groups[gid].users += 1
        self._stale[(prefix, metric)] = gid

    def _drop_stale(self, prefix: RouteKey, metric: int) -> None:
        gid = self._stale.pop((prefix, metric), None)
        if gid is not None and gid in self._groups:
            self._groups[gid].users -= 1

    def _route_from_kernel(self, kernel: rtnl.KernelRoute) -> _Route:
        """Our record for a route of ours the kernel reported (counts it as a user of its group)."""
        nh_id = kernel.nh_id
        group = self._groups.get(nh_id) if nh_id is not None else None
        if group is not None:
            group.users += 1
            return self._state(group.members, gid=nh_id)
        if nh_id is not None and nh_id in self._hops:
            return self._state(self._intern((self._hops[nh_id],)), hop_id=nh_id)
        if kernel.rtype == rtnl.RTN_UNICAST and nh_id is None:
            return self._state(self._intern(kernel.nexthops))
        return self._state(())  # not something we write (a foreign object, a blackhole): fixed on resync

    def _state(self, hops: tuple[NextHop, ...], gid: int | None = None, hop_id: int | None = None) -> _Route:
        """The shared record of routes on group `gid`, on hop object `hop_id`, or with explicit `hops`.

        A group's record follows the group: its hop set is the group's members (a rewrite updates it).
        """
        if gid is not None:
            state = self._group_states.get(gid)
            if state is None:
                state = self._group_states[gid] = _Route(hops, gid)
            elif state.hops is not hops:
                state.hops = hops
            return state
        if hop_id is not None:
            state = self._hop_states.get(hop_id)
            if state is None or state.hops != hops:
                state = self._hop_states[hop_id] = _Route(hops, hop_id=hop_id)
            return state
        state = self._explicit_states.get(hops)
        if state is None:
            state = self._explicit_states[hops] = _Route(hops)
        return state

    def _reindex_groups(self) -> None:
        self._group_by_set = {}
        for gid, group in self._groups.items():
            if group.members:
                self._group_by_set.setdefault(group.members, gid)

    def _kernel_has_nexthop_objects(self) -> bool:
        try:
            self._channel.nexthops()
        except OSError:
            return False
        return True

    def _table_exists(self, family: int) -> bool:
        """Whether the kernel has our table for `family` (a table-filtered dump answers ENOENT if not)."""
        if family in self._tables_present:
            return True
        try:
            for _ in self._channel.dump(rtnl.RTM_GETROUTE, family, self.table):
                pass
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        self._tables_present.add(family)
        return True

    def _resolve(self, gateway: Address) -> NextHop | None:
        """The on-link next hop (gateway, ifindex) the kernel would use to reach `gateway`.

        A gateway reached through another router resolves to that router (one level, as the FIB
        does); a local, blackhole or unroutable gateway resolves to nothing.
        """
        if gateway in self._resolved:
            return self._resolved[gateway]
        answer = self._channel.route_get(gateway)
        hop: NextHop | None = None
        if answer is not None and answer.rtype == rtnl.RTN_UNICAST and answer.oif:
            via = answer.nexthops[0].gateway if answer.nexthops else gateway
            hop = NextHop(via, answer.oif)
        self._resolved[gateway] = hop
        return hop

    def _resolve_all(self, version: int, gateways: Sequence[Address]) -> tuple[NextHop, ...]:
        """The hop set for the FIB's gateways; with its backup resolved too when the FIB gave one
        (`Backed`: routes are then grouped by both, so `fail_over` can rewrite a group whole)."""
        hops = self._intern(self._resolve_each(version, gateways))
        backup = gateways.backup if isinstance(gateways, Backed) else ()
        if backup and hops:
            spare = self._intern(self._resolve_each(version, backup))
            if spare and not set(spare) & set(hops):
                backed = Backed(hops, spare)
                return self._set_intern.setdefault(backed, backed)
        return hops

    def _resolve_each(self, version: int, gateways: Iterable[Address]) -> list[NextHop]:
        hops = []
        for gateway in gateways:
            if version == 6 and gateway.version == 4:
                continue  # an IPv6 route cannot use an IPv4 gateway
            hop = self._resolve(gateway)
            if hop is not None:
                hops.append(hop)
        return hops

    def _new_id(self) -> int | None:
        """A free id in our block, or None when all 65,535 are in use (the caller falls back)."""
        for _ in range(_ID_SLOTS):
            self._cursor = self._cursor % _ID_SLOTS + 1
            candidate = self._block | self._cursor
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate
        return None

    # -- the resync and apply passes (worker thread, under the lock) ----------------------------

    def _withdraw_all_locked(self) -> WriteReport:
        """Everything we know of first (whole groups deleted in one message each), then a re-read of
        the table removes whatever of ours we did not know of: the dump is then small, not the
        million routes a re-read first would decode."""
        removed = messages = 0
        if self._started and self._routes:
            first = self._apply_locked(dict.fromkeys(self._routes))
            removed, messages = first.removed, first.netlink_messages
        # What the first pass could not remove is still in the table: the re-read tries it again and
        # reports what still fails.
        report = self._resync_locked({}, True)
        report.removed += removed
        report.netlink_messages += messages
        return report

    def _resync_locked(self, desired: Mapping[RouteKey, Hops], remove_stale: bool) -> WriteReport:
        self._adopt()
        changes: dict[RouteKey, Hops | None] = {}
        if remove_stale:
            changes.update((p, None) for p in self._routes if p not in desired)
        changes.update(desired)
        stale = sorted(self._stale) if remove_stale else []
        return self._apply_locked(changes, stale)

    def _apply_locked(self, changes: RouteChanges, stale: Sequence[tuple[RouteKey, int]] = ()) -> WriteReport:
        with _gc_paused(len(changes)):
            if not stale and len(changes) > _CHUNK and self._removes_everything(changes):
                return self._remove_everything()
            if len(changes) <= _CHUNK or not self._routes.keys().isdisjoint(changes):
                return self._apply_now(changes, stale)
            # Only new routes (a bulk feed): planned, sent and committed a chunk at a time, so the
            # encoded requests and their bookkeeping of one chunk are alive at once, not the feed's.
            # Batches that move or remove routes stay whole: a group rewrite or a group delete
            # (O(1) messages for any number of routes) needs the whole picture.
            report = WriteReport()
            items = iter(changes.items())
            first = True
            while part := dict(itertools.islice(items, _CHUNK)):  # in C, a chunk at a time
                done = self._apply_now(part, stale if first else ())
                first = False
                report.installed += done.installed
                report.removed += done.removed
                report.netlink_messages += done.netlink_messages
                report.rejected.extend(done.rejected)
            return report

    def _removes_everything(self, changes: RouteChanges) -> bool:
        """Whether `changes` removes every route we hold, all of them on our groups (checked in C)."""
        routes = self._routes
        if not routes or self._direct or self._stale or not self._nexthop_objects:
            return False
        if list(changes.values()).count(None) != len(changes) or not routes.keys() <= changes.keys():
            return False
        return sum(group.users for group in self._groups.values()) == len(routes)

    def _remove_everything(self) -> WriteReport:
        """Every route goes, and every one points at a group of ours: one delete per group (the kernel
        flushes the routes on it), nothing per route unless a delete is refused."""
        report = WriteReport()
        batch = Batch()
        doomed = [gid for gid, group in self._groups.items() if group.users > 0]
        for gid in doomed:
            self._channel.add(batch, Op.NEXTHOP_DELETE, ("flush", gid), _builder_del_nexthop(gid))
        report.netlink_messages = len(batch.messages)
        before = len(self._routes)
        result = self._channel.send(batch)
        if result.lost:
            self._commit_lost_flush()
            report.removed = before - len(self._routes)
            return report
        refused = {
            f.subject[1]: f
            for f in result.failures
            if isinstance(f.subject, tuple) and f.subject[0] == "flush" and f.errno != errno.ENOENT
        }
        if refused:
            # Only the routes of refused groups stay (found by one pass over our records).
            self._routes = {k: r for k, r in self._routes.items() if r.gid in refused}
            for key, route in self._routes.items():
                text = "delete: " + refused[route.gid].reason
                report.rejected.append(Rejection(key, RejectReason.KERNEL_REFUSED, text))
        else:
            self._routes = {}
        report.removed = before - len(self._routes)
        for gid in doomed:
            if gid not in refused:
                del self._groups[gid]
                self._group_states.pop(gid, None)
                self._taken.discard(gid)
        self._reindex_groups()
        self._collect_garbage(report)
        return report

    def _fail_over_now(self, dead: frozenset[Address]) -> WriteReport:
        report = WriteReport()
        plan = _Plan()
        for gid, group in list(self._groups.items()):
            members = group.members
            if group.users <= 0 or not any(hop.gateway in dead for hop in members):
                continue
            left: Iterable[NextHop] = [hop for hop in members if hop.gateway not in dead]
            if not left:
                left = members.backup if isinstance(members, Backed) else ()
                if not left or any(hop.gateway in dead for hop in left):
                    continue  # nowhere to go: the RIB's changes remove these routes
            self._plan_rewrite(plan, gid, self._intern(left), [])
        report.netlink_messages = len(plan.batch.messages)
        if plan.batch.messages:
            self._commit(plan, self._channel.send(plan.batch), report)
        elif plan.rewrites:
            self._commit(plan, SendResult(), report)
        for gid, (_before, after, _moved) in plan.rewrites.items():
            rewritten = self._groups.get(gid)
            if rewritten is not None and rewritten.members is after.members:  # not undone by a refusal
                report.installed += rewritten.users
        return report

    def _commit_lost_flush(self) -> None:
        """The kernel's answers to the group deletes were lost: read the table back instead."""
        log.warning("netlink errors lost in a batch; re-reading table %d", self.table)
        self._adopt()

    def _apply_now(self, changes: RouteChanges, stale: Sequence[tuple[RouteKey, int]]) -> WriteReport:
        report = WriteReport()
        self._resolved = {}
        sets: tuple[dict[tuple[Address, ...], tuple[NextHop, ...]], ...] = ({}, {})  # per family
        plan = _Plan(stale=list(stale))
        moves: dict[int | None, dict[tuple[NextHop, ...], list[tuple[RouteKey, _Route | None]]]] = (
            defaultdict(lambda: defaultdict(list))
        )
        # Hashing a tuple of addresses or NextHops is Python code per element, once per route here.
        # The FIB's gateway tuples and our hop sets are interned, so both lookups below go by the
        # tuples' ids (alive for the whole pass, so an id is never reused within it); the hashing
        # dicts are consulted once per distinct tuple.
        by_gateways: tuple[dict[int, tuple[tuple[Address, ...], tuple[NextHop, ...]]], ...] = ({}, {})
        buckets: dict[tuple[int | None, int], list[tuple[RouteKey, _Route | None]]] = {}
        routes = self._routes
        foreign = self._foreign
        direct = self._direct
        missing: dict[int, bool] = {}  # family -> table absent (requireTable), probed once per pass
        for prefix, entry in changes.items():
            if foreign and prefix in foreign:
                if entry is not None:
                    report.rejected.append(self._foreign_rejection(prefix))
                continue
            current = routes.get(prefix)
            if entry is None:
                if current is not None:
                    plan.removals.append((prefix, current))
                continue
            version = 6 if prefix >= rtnl.V6_FLAG else 4
            if self.require_table:
                family = rtnl.key_family(prefix)
                if family not in missing:
                    missing[family] = not self._table_exists(family)
                if missing[family]:
                    report.rejected.append(self._missing_table_rejection(prefix))
                    continue
            gateways = entry
            cache = by_gateways[version == 6]  # per family: an IPv6 route drops IPv4 gateways
            known = cache.get(id(gateways))
            if known is not None and known[0] is gateways:
                hops = known[1]
            else:
                memo = sets[version == 6]
                found = memo.get(gateways)
                if found is None:
                    found = memo[gateways] = self._resolve_all(version, gateways)
                hops = found
                cache[id(gateways)] = (gateways, hops)
            if not hops:
                report.rejected.append(
                    Rejection(
                        prefix,
                        RejectReason.UNREACHABLE_NEXT_HOP,
                        "no next hop reachable: " + ", ".join(str(g) for g in gateways),
                    )
                )
                if current is not None:
                    plan.removals.append((prefix, current))
                continue
            gid = None
            if current is not None:
                if (current.hops is hops or current.hops == hops) and not (direct and prefix in direct):
                    continue
                gid = current.gid
            bucket = buckets.get((gid, id(hops)))
            if bucket is None:
                bucket = buckets[(gid, id(hops))] = moves[gid][hops]
            bucket.append((prefix, current))

        if self._nexthop_objects:
            self._plan_groups(plan, moves)
        else:
            for targets in moves.values():
                for hops, members in targets.items():
                    self._plan_routes(plan, members, hops, None)
        batch = plan.batch
        if self._nexthop_objects and len(plan.removals) >= _FLUSH_MIN:
            self._plan_flushes(plan)
        flushed = plan.flushed
        delete = self._encoder.delete
        for prefix, current in plan.removals:
            if flushed and current.gid in flushed:
                continue
            seq = self._channel.next_seq()
            batch.messages.append(delete(seq, prefix, self.metric))
            batch.subjects[seq] = (Op.ROUTE_DELETE, prefix)
        for gid in flushed:
            self._channel.add(batch, Op.NEXTHOP_DELETE, ("flush", gid), _builder_del_nexthop(gid))
        for prefix, metric in plan.stale:
            seq = self._channel.next_seq()
            batch.messages.append(self._encoder.delete(seq, prefix, metric))
            batch.subjects[seq] = (Op.ROUTE_DELETE, ("stale", prefix, metric))

        report.netlink_messages = len(batch.messages)
        if batch.messages:
            self._commit(plan, self._channel.send(batch), report)
        elif plan.rewrites:
            self._commit(plan, SendResult(), report)  # groups re-keyed (a backup changed): no message
        self._collect_garbage(report)
        return report

    def _foreign_rejection(self, prefix: RouteKey) -> Rejection:
        return Rejection(
            prefix,
            RejectReason.FOREIGN_ROUTE,
            f"table {self.table} holds a route for {key_str(prefix)} at metric {self._metric_for(prefix)} "
            "that we do not own (another protocol)",
        )

    def _missing_table_rejection(self, prefix: RouteKey) -> Rejection:
        family = _FAMILY_NAME[rtnl.key_family(prefix)]
        return Rejection(
            prefix,
            RejectReason.TABLE_MISSING,
            f"table {self.table} does not exist for {family} and is not ours to create (requireTable)",
        )

    def _plan_groups(
        self,
        plan: _Plan,
        moves: Mapping[int | None, Mapping[tuple[NextHop, ...], list[tuple[RouteKey, _Route | None]]]],
    ) -> None:
        leaving: Counter[int] = Counter()
        for _prefix, removed in plan.removals:
            if removed.gid is not None:
                leaving[removed.gid] += 1
        deferred: list[tuple[tuple[NextHop, ...], list[tuple[RouteKey, _Route | None]]]] = []
        for old_gid, targets in moves.items():
            group = self._groups.get(old_gid) if old_gid is not None else None
            remaining = dict(targets)
            if group is not None and old_gid is not None:
                moving = sum(len(members) for members in targets.values()) + leaving[old_gid]
                if moving >= group.users:
                    # Nobody stays on this group: rewrite it for the largest target set, in one message.
                    hops, members = max(targets.items(), key=lambda item: len(item[1]))
                    moved = [(prefix, current) for prefix, current in members if current is not None]
                    if self._plan_rewrite(plan, old_gid, hops, moved):
                        del remaining[hops]
            deferred.extend(remaining.items())
        self._reindex_groups()
        for hops, members in deferred:
            self._plan_routes(plan, members, hops, self._ensure_group(plan, hops))

    def _plan_flushes(self, plan: _Plan) -> None:
        """Groups whose every user leaves in this batch, by removal only: delete the group instead.

        The kernel removes every route that points at a deleted nexthop object, in one request and
        without a notification per route, so withdrawing a million routes behind one appliance is
        one message. Only groups nobody else uses qualify: no route of ours stays on it, no stale
        route at another metric, and nothing in this batch moves onto it or rewrites it.
        """
        leaving: Counter[int] = Counter()
        for _prefix, removed in plan.removals:
            if removed.gid is not None:
                leaving[removed.gid] += 1
        targeted = {target for _p, _c, _h, target in plan.routes}
        targeted.update(target for _prefixes, _hops, target in plan.created)
        targeted.update(plan.rewrites)
        targeted.update(plan.new_groups)
        for gid, count in leaving.items():
            group = self._groups.get(gid)
            if group is not None and count >= _FLUSH_MIN and count == group.users and gid not in targeted:
                plan.flushed.add(gid)

    def _plan_rewrite(
        self, plan: _Plan, gid: int, hops: tuple[NextHop, ...], moved: list[tuple[RouteKey, _Route]]
    ) -> bool:
        if not self._ensure_hops(plan, hops):
            return False
        group = self._groups[gid]
        member_ids = tuple(self._hop_ids[h] for h in hops)
        before = _Group(group.member_ids, group.members)
        group.member_ids, group.members = member_ids, hops
        plan.rewrites[gid] = (before, _Group(member_ids, hops), moved)
        if member_ids == before.member_ids:
            return True  # only the backup changed: the group forwards as it should already, re-keyed
        self._channel.add(
            plan.batch,
            Op.NEXTHOP_REPLACE,
            ("group", gid),
            _builder_group(REPLACE, gid, self.protocol, member_ids),
        )
        return True

    def _ensure_hops(self, plan: _Plan, hops: tuple[NextHop, ...]) -> bool:
        if isinstance(hops, Backed):
            # The backup's objects too, ready for fail_over (its batch is then one message per group);
            # failing to make them fails nothing now.
            self._ensure_hops(plan, hops.backup)
        for hop in hops:
            if hop in self._hop_ids:
                continue
            nh_id = self._new_id()
            if nh_id is None:
                return False
            self._hop_ids[hop] = nh_id
            self._hops[nh_id] = hop
            plan.new_hops[nh_id] = hop
            build = _builder_hop(nh_id, self.protocol, hop)
            self._channel.add(plan.batch, Op.NEXTHOP_CREATE, ("hop", nh_id), build)
        return True

    def _ensure_group(self, plan: _Plan, hops: tuple[NextHop, ...]) -> int | None:
        """The group for this hop set, created if needed; None when out of ids (explicit route)."""
        gid = self._group_by_set.get(hops)
        if gid is not None:
            return gid
        if not self._ensure_hops(plan, hops):
            return None
        gid = self._new_id()
        if gid is None:
            return None
        member_ids = tuple(self._hop_ids[h] for h in hops)
        self._groups[gid] = _Group(member_ids, hops)
        self._group_by_set[hops] = gid
        plan.new_groups.add(gid)
        self._channel.add(
            plan.batch,
            Op.NEXTHOP_CREATE,
            ("group", gid),
            _builder_group(CREATE, gid, self.protocol, member_ids),
        )
        return gid

    def _plan_routes(
        self,
        plan: _Plan,
        members: list[tuple[RouteKey, _Route | None]],
        hops: tuple[NextHop, ...],
        gid: int | None,
    ) -> None:
        """A replace for each route we hold, an exclusive create otherwise (never overwrites theirs).

        One loop with local names for a whole hop set: this runs once per route of a bulk install.
        """
        encode = self._encoder.new
        next_seq = self._channel.next_seq
        append = plan.batch.messages.append
        subjects = plan.batch.subjects
        planned = plan.routes.append
        created: list[RouteKey] = []
        create = created.append
        for prefix, current in members:
            seq = next_seq()
            if current is not None:
                append(encode(REPLACE, seq, prefix, gid, hops))
                subjects[seq] = (Op.ROUTE_REPLACE, prefix)
                planned((prefix, current, hops, gid))
            else:
                append(encode(CREATE, seq, prefix, gid, hops))
                subjects[seq] = (Op.ROUTE_CREATE, prefix)
                create(prefix)
        if created:
            plan.created.append((created, hops, gid))

    # -- commit -----------------------------------------------------------------------------------

    def _commit(self, plan: _Plan, result: SendResult, report: WriteReport) -> None:
        """Record what the kernel accepted; report what it refused, per prefix, with the root cause."""
        if result.lost:
            self._commit_from_kernel(plan, result, report)
            return
        hop_fail: dict[int, rtnl.Failure] = {}
        group_fail: dict[int, rtnl.Failure] = {}
        route_fail: dict[object, rtnl.Failure] = {}
        delete_fail: dict[object, rtnl.Failure] = {}
        flush_fail: dict[int, rtnl.Failure] = {}
        for failure in result.failures:
            subject = failure.subject
            if failure.op in (Op.NEXTHOP_CREATE, Op.NEXTHOP_REPLACE) and isinstance(subject, tuple):
                (hop_fail if subject[0] == "hop" else group_fail)[subject[1]] = failure
            elif failure.op is Op.NEXTHOP_DELETE and isinstance(subject, tuple) and subject[0] == "flush":
                if failure.errno != errno.ENOENT:  # ENOENT: gone already, and its routes with it
                    flush_fail[subject[1]] = failure
            elif failure.op in (Op.ROUTE_CREATE, Op.ROUTE_REPLACE):
                route_fail[subject] = failure
            elif failure.op is Op.ROUTE_DELETE:
                delete_fail[subject] = failure

        # Objects the kernel did not create do not exist; groups built on a failed hop failed too.
        hop_cause: dict[NextHop, rtnl.Failure] = {}
        for nh_id, failure in hop_fail.items():
            hop = plan.new_hops.get(nh_id)
            if hop is None:
                continue
            hop_cause[hop] = failure
            self._hops.pop(nh_id, None)
            self._taken.discard(nh_id)
            if self._hop_ids.get(hop) == nh_id:
                del self._hop_ids[hop]
        group_cause: dict[int, rtnl.Failure] = {}
        for gid in plan.new_groups:
            cause = _first_cause(self._groups[gid].members, hop_cause) or group_fail.get(gid)
            if cause is not None:
                group_cause[gid] = cause
                del self._groups[gid]
                self._group_states.pop(gid, None)
                self._taken.discard(gid)
        for gid, (before, after, moved) in plan.rewrites.items():
            cause = group_fail.get(gid) or _first_cause(after.members, hop_cause)
            if cause is not None:
                group = self._groups[gid]
                group.member_ids, group.members = before.member_ids, before.members
                group_cause[gid] = cause
                for prefix, _route in moved:
                    report.rejected.append(Rejection(prefix, _reason(cause), cause.reason))
                continue
            if gid in self._group_states:
                self._state(after.members, gid)  # every route on the group moved with it
            report.installed += len(moved)
        self._reindex_groups()

        groups = self._groups
        routes = self._routes
        one_by_one: list[_Planned] = plan.routes
        for created, hops, target in plan.created:
            root = None
            if group_cause or hop_cause:
                root = group_cause.get(target) if target is not None else _first_cause(hops, hop_cause)
            if root is not None or route_fail:
                if one_by_one is plan.routes:
                    one_by_one = list(plan.routes)
                one_by_one.extend((prefix, None, hops, target) for prefix in created)
                continue
            # The kernel took every route of the run (a bulk feed): one record for all, set in C.
            pointed = groups.get(target) if target is not None else None
            actual = pointed.members if pointed is not None else hops
            state = self._state(actual, target if pointed is not None else None)
            routes.update(dict.fromkeys(created, state))
            if pointed is not None:
                pointed.users += len(created)
            report.installed += len(created)
        for prefix, current, hops, target in one_by_one:
            refused = route_fail.get(prefix) if route_fail else None
            root = None
            if group_cause or hop_cause:
                root = group_cause.get(target) if target is not None else _first_cause(hops, hop_cause)
            if refused is None:
                pointed = groups.get(target) if target is not None else None
                actual = pointed.members if pointed is not None else hops
                if current is None:
                    routes[prefix] = self._state(actual, target if pointed is not None else None)
                else:
                    self._repoint(prefix, current, actual, target if pointed is not None else None)
                if pointed is not None:
                    pointed.users += 1
                if root is None:
                    report.installed += 1
                    continue
            if root is None and refused is not None and refused.errno == errno.EEXIST:
                # Our exclusive create met a route at our (prefix, metric): someone else's.
                self._foreign.add(prefix)
                report.rejected.append(self._foreign_rejection(prefix))
                continue
            why = root or refused
            assert why is not None
            report.rejected.append(Rejection(prefix, _reason(why), why.reason))

        flushed = plan.flushed
        pop = routes.pop
        for prefix, current in plan.removals:
            if flushed and current.gid in flushed:
                refused = flush_fail.get(current.gid)
                if refused is None:
                    pop(prefix, None)  # its group is gone, and with it every route on it (below)
                    report.removed += 1
                    continue
            else:
                refused = delete_fail.get(prefix) if delete_fail else None
            if refused is None or refused.errno == errno.ESRCH:  # ESRCH: already gone
                self._forget(prefix, current)
                report.removed += 1
            else:
                text = "delete: " + refused.reason
                report.rejected.append(Rejection(prefix, RejectReason.KERNEL_REFUSED, text))
        for gid in flushed:
            if gid not in flush_fail and gid in self._groups:  # every user of it was a removal
                del self._groups[gid]
                self._group_states.pop(gid, None)
                self._taken.discard(gid)
        if flushed:
            self._reindex_groups()
        for prefix, metric in plan.stale:
            refused = delete_fail.get(("stale", prefix, metric))
            if refused is None or refused.errno == errno.ESRCH:
                self._drop_stale(prefix, metric)
                report.removed += 1

    def _commit_from_kernel(self, plan: _Plan, result: SendResult, report: WriteReport) -> None:
        """Error reports were lost (receive buffer overflow): read the truth back instead."""
        log.warning("netlink errors lost in a batch; re-reading table %d", self.table)
        self._adopt()
        known = {f.subject: f for f in result.failures}
        wanted = {prefix: hops for prefix, _current, hops, _gid in plan.routes}
        for created, hops, _gid in plan.created:
            wanted.update(dict.fromkeys(created, hops))
        for _before, after, moved in plan.rewrites.values():
            wanted.update((prefix, after.members) for prefix, _route in moved)
        for prefix, hops in wanted.items():
            route = self._routes.get(prefix)
            # What the kernel holds, read back: forwarding, not backups (adopted groups are plain).
            if route is not None and tuple(route.hops) == tuple(hops):
                report.installed += 1
                continue
            failure = known.get(prefix)
            reason = _reason(failure) if failure is not None else RejectReason.KERNEL_REFUSED
            text = failure.reason if failure is not None else "refused (the kernel's error report was lost)"
            report.rejected.append(Rejection(prefix, reason, text))
        report.removed += sum(1 for prefix, _current in plan.removals if prefix not in self._routes)

    def _repoint(self, prefix: RouteKey, route: _Route, hops: tuple[NextHop, ...], gid: int | None) -> None:
        """Update our record of a route in place; the caller counts the new group's user."""
        if route.gid is not None and route.gid in self._groups:
            self._groups[route.gid].users -= 1
        if route.hop_id is not None:
            self._direct.discard(prefix)
        self._routes[prefix] = self._state(hops, gid)

    def _forget(self, prefix: RouteKey, route: _Route) -> None:
        self._routes.pop(prefix, None)
        if route.gid is not None and route.gid in self._groups:
            self._groups[route.gid].users -= 1
        if route.hop_id is not None:
            self._direct.discard(prefix)

    def _collect_garbage(self, report: WriteReport) -> None:
        """Delete our groups nobody points at, then our hop objects no live group uses (second batch)."""
        dead_groups = [gid for gid, group in self._groups.items() if group.users <= 0]
        live_hops = {i for group in self._groups.values() if group.users > 0 for i in group.member_ids}
        for group in self._groups.values():  # a live group's backup hops stay ready (fail_over)
            if group.users > 0 and isinstance(group.members, Backed):
                live_hops.update(self._hop_ids[h] for h in group.members.backup if h in self._hop_ids)
        live_hops.update(hop_id for p in self._direct if (hop_id := self._routes[p].hop_id) is not None)
        dead_hops = [nh_id for nh_id in self._hops if nh_id not in live_hops]
        if not dead_groups and not dead_hops:
            return
        batch = Batch()
        for gid in dead_groups:
            self._channel.add(batch, Op.NEXTHOP_DELETE, ("group", gid), _builder_del_nexthop(gid))
        for nh_id in dead_hops:
            self._channel.add(batch, Op.NEXTHOP_DELETE, ("hop", nh_id), _builder_del_nexthop(nh_id))
        report.netlink_messages += len(batch.messages)
        result = self._channel.send(batch)
        refused = {f.subject for f in result.failures if f.errno != errno.ENOENT}
        for gid in dead_groups:
            if ("group", gid) not in refused:
                del self._groups[gid]
                self._group_states.pop(gid, None)
                self._taken.discard(gid)
        for nh_id in dead_hops:
            if ("hop", nh_id) not in refused:
                hop = self._hops.pop(nh_id)
                self._taken.discard(nh_id)
                if self._hop_ids.get(hop) == nh_id:
                    del self._hop_ids[hop]
                    other = next((i for i, h in self._hops.items() if h == hop), None)
                    if other is not None:
                        self._hop_ids[hop] = other
        self._reindex_groups()
        for failure in result.failures:
            if failure.errno != errno.ENOENT:
                log.warning("nexthop delete refused: %s %s", failure.subject, failure.reason)

    # -- notification watcher (event loop thread) -------------------------------------------------

    def _on_notification(self) -> None:
        """Queue route changes in our table made by anyone but us; nexthop changes to our ids."""
        monitor = self._monitor
        if monitor is None:
            return
        while True:
            try:
                data = monitor.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # notifications were lost: only a full pass is safe
                    self._full_pass = True
                    continue
                log.warning("netlink monitor failed: %s", exc)
                break
            for kind, _flags, _seq, pid, payload in rtnl.iter_messages(data):
                if pid == self._channel.portid:
                    continue
                if kind in (rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE):
                    route = rtnl.decode_route(payload)
                    if route is not None and route.table == self.table:
                        self._events.append((kind == rtnl.RTM_NEWROUTE, route))
                elif kind in (rtnl.RTM_NEWNEXTHOP, rtnl.RTM_DELNEXTHOP):
                    nexthop = rtnl.decode_nexthop(payload)
                    if nexthop is not None and self._owns_id(nexthop.nh_id):
                        self._full_pass = True
        if (self._events or self._full_pass) and self._wake_handle is None and self._loop is not None:
            self._wake_handle = self._loop.call_later(self.debounce, self._wake_up)

    def _wake_up(self) -> None:
        self._wake_handle = None
        if self._wake is not None:
            self._wake.set()

    async def _background(self) -> None:
        """Debounced repair after notifications, and the periodic full resync."""
        assert self._wake is not None
        while True:
            periodic = False
            try:
                if self.resync_interval is None:
                    await self._wake.wait()
                else:
                    await asyncio.wait_for(self._wake.wait(), self.resync_interval)
            except TimeoutError:
                periodic = True
            self._wake.clear()
            try:
                report = await self._repair(periodic)
            except OSError as exc:
                log.warning("table %d repair failed: %s", self.table, exc)
                continue
            if report is not None and self._on_report is not None:
                self._on_report(report)

    async def _repair(self, full: bool) -> WriteReport | None:
        async with self._lock:
            events, self._events = self._events, []
            full = full or self._full_pass
            self._full_pass = False
            wanted = self._wanted
            if full:
                desired = wanted.snapshot() if wanted is not None else dict(self._desired)  # copies
                return await self._work(self._resync_locked, desired, self._synced)
            lookup = wanted.get if wanted is not None else self._desired.get
            changes: dict[RouteKey, Hops | None] = {}
            for prefix in self._absorb(events):
                hops = lookup(prefix)
                if hops is not None:
                    changes[prefix] = hops
                elif self._synced and prefix in self._routes:
                    changes[prefix] = None
            if not changes:
                return None
            return await self._work(self._apply_locked, changes)

    def _absorb(self, events: Iterable[tuple[bool, rtnl.KernelRoute]]) -> set[RouteKey]:
        """Fold others' changes into our picture; return the prefixes to look at again."""
        dirty: set[RouteKey] = set()
        for is_new, kernel in events:
            prefix = kernel.key
            metric = kernel.metric or 0
            ours = kernel.protocol == self.protocol
            if metric != self._metric_for(prefix):
                if ours and is_new:
                    self._add_stale(prefix, metric, kernel.nh_id)
                elif ours:
                    self._drop_stale(prefix, metric)
                continue
            current = self._routes.get(prefix)
            if not ours:
                if is_new:
                    # Someone's route now holds our key (a replace removed ours): it is theirs.
                    self._foreign.add(prefix)
                    if current is not None:
                        self._forget(prefix, current)
                    dirty.add(prefix)
                elif prefix in self._foreign:
                    self._foreign.discard(prefix)
                    dirty.add(prefix)
                continue
            if not is_new:
                if current is not None:
                    self._forget(prefix, current)
                    dirty.add(prefix)
                continue
            seen = self._route_from_kernel(kernel)  # counts a user of its group
            if current is not None and (current.hops, current.gid, current.hop_id) == (
                seen.hops,
                seen.gid,
                seen.hop_id,
            ):
                if seen.gid is not None:
                    self._groups[seen.gid].users -= 1  # nothing changed: undo the count
                continue
            if current is not None:
                self._forget(prefix, current)
            self._routes[prefix] = seen
            if seen.hop_id is not None:
                self._direct.add(prefix)
            dirty.add(prefix)
        self._generation += 1
        return dirty


def _read_compat_mode() -> int | None:
    """net.ipv4.nexthop_compat_mode of the current network namespace (None: not this kernel's)."""
    try:
        with open("/proc/sys/net/ipv4/nexthop_compat_mode", encoding="ascii") as setting:
            return int(setting.read().strip())
    except (OSError, ValueError):
        return None


def _gateways(hops: tuple[NextHop, ...]) -> Hops:
    """A hop set's gateways, as the FIB spells them (with the backup's, for a `Backed` set)."""
    gateways = tuple(h.gateway for h in hops)
    if isinstance(hops, Backed):
        return Backed(gateways, tuple(h.gateway for h in hops.backup))
    return gateways


def _first_cause(hops: Iterable[NextHop], causes: Mapping[NextHop, rtnl.Failure]) -> rtnl.Failure | None:
    for hop in hops:
        if hop in causes:
            return causes[hop]
    return None


def _reason(failure: rtnl.Failure) -> RejectReason:
    """Map the kernel's refusal to a bounded reason."""
    if failure.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return RejectReason.UNREACHABLE_NEXT_HOP
    if failure.op is Op.NEXTHOP_CREATE and failure.errno in (errno.EINVAL, errno.ENODEV):
        return RejectReason.UNREACHABLE_NEXT_HOP  # the kernel validates a nexthop object's gateway
    if "gateway" in failure.message.lower():
        return RejectReason.UNREACHABLE_NEXT_HOP
    if failure.errno == errno.EEXIST:
        return RejectReason.FOREIGN_ROUTE
    return RejectReason.KERNEL_REFUSED


def _builder_hop(nh_id: int, protocol: int, hop: NextHop) -> rtnl.Builder:
    return lambda seq: rtnl.encode_nexthop(CREATE, seq, nh_id, protocol, hop)


def _builder_group(flags: int, gid: int, protocol: int, members: Sequence[int]) -> rtnl.Builder:
    return lambda seq: rtnl.encode_group(flags, seq, gid, protocol, members)


def _builder_del_nexthop(nh_id: int) -> rtnl.Builder:
    return lambda seq: rtnl.encode_del_nexthop(seq, nh_id)
