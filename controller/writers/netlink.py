"""The node route-table writer: the FIB into a Linux kernel table over rtnetlink.

Ownership (DESIGN.md §7.8): every route and nexthop object we write carries our own rtnetlink
protocol number; deletes name that protocol, so the kernel itself refuses to remove a route we do
not own, and a replace is never sent for a prefix where a foreign route holds the same metric.
At start we read our routes and nexthop objects back and adopt them instead of flushing.

Prefix-independent convergence (DESIGN.md §5): with kernel nexthop objects, every prefix points at
a nexthop *group* keyed by its next-hop set. When all prefixes of a group move to the same new set
(the usual failover: the active appliance died and every VIP behind it moves to the standby), the
group's membership is replaced with ONE netlink message and all routes move at once. Otherwise
routes are re-pointed with batched replaces. Kernels without nexthop objects get batched route
replaces with explicit gateways.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from pyroute2 import IPRoute

from controller.writers import rtnl
from controller.writers.base import Address, FibEntry, Prefix, Rejection, RejectReason, WriteReport
from controller.writers.rtnl import Batch, NetlinkChannel, NextHop, Op, RouteSpec

log = logging.getLogger(__name__)

DEFAULT_PROTOCOL = 196  # not in iproute2's rt_protos; configurable
NEXTHOP_ID_BASE = 0x4B520000  # our nexthop ids start here ("KR"), skipping ids owned by others
REPLACE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
RT_TABLES_FILES = ("/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables", "/usr/lib/iproute2/rt_tables")
RT_TABLES_DIRS = ("/etc/iproute2/rt_tables.d", "/usr/share/iproute2/rt_tables.d")


def resolve_table(table: int | str) -> int:
    """A table id from a number or an iproute2 name (rt_tables and rt_tables.d/*.conf)."""
    if isinstance(table, int):
        return table
    if table.isdigit():
        return int(table)
    candidates = [Path(p) for p in RT_TABLES_FILES]
    for directory in RT_TABLES_DIRS:
        folder = Path(directory)
        if folder.is_dir():
            candidates.extend(sorted(folder.glob("*.conf")))
    for path in candidates:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[1] == table:
                return int(fields[0], 0)
    raise ValueError(f"route table {table!r} is not a number and not named in iproute2's rt_tables files")


@dataclass(slots=True)
class _Group:
    members: tuple[NextHop, ...]
    users: set[Prefix] = field(default_factory=set)


class NodeTableWriter:
    """Programs one kernel table in this process's network namespace. Not thread-safe: one owner."""

    def __init__(
        self,
        table: int | str,
        *,
        metric: int | None = None,
        protocol: int = DEFAULT_PROTOCOL,
        use_nexthop_objects: bool | None = None,
    ) -> None:
        self.table = resolve_table(table)
        self.metric = metric
        self.protocol = protocol
        self._channel = NetlinkChannel()
        self._nexthop_objects = use_nexthop_objects
        self._lock = asyncio.Lock()
        # Desired-and-installed state, mirrored from the kernel at start.
        self._routes: dict[Prefix, tuple[NextHop, ...]] = {}
        self._route_group: dict[Prefix, int] = {}
        self._groups: dict[int, _Group] = {}
        self._group_by_set: dict[tuple[NextHop, ...], int] = {}
        self._hop_ids: dict[NextHop, int] = {}
        self._foreign: set[Prefix] = set()
        self._taken_ids: set[int] = set()
        self._id_counter = itertools.count(NEXTHOP_ID_BASE)
        self._resolved: dict[Address, NextHop | None] = {}
        # Per-apply scratch: prefixes re-pointed to a group, and groups/hops deleted, until committed.
        self._pending_group: dict[Prefix, int] = {}
        self._dead: tuple[list[int], list[NextHop]] = ([], [])

    # -- public API ---------------------------------------------------------------------------

    @property
    def uses_nexthop_objects(self) -> bool:
        return bool(self._nexthop_objects)

    def installed(self) -> Mapping[Prefix, tuple[Address, ...]]:
        return {prefix: tuple(h.gateway for h in hops) for prefix, hops in self._routes.items()}

    async def start(self) -> WriteReport:
        """Read back what we own in this table and adopt it; returns nothing to do yet."""
        async with self._lock:
            await asyncio.to_thread(self._adopt)
        return WriteReport()

    async def apply(self, changes: Mapping[Prefix, FibEntry | None]) -> WriteReport:
        async with self._lock:
            return await asyncio.to_thread(self._apply, dict(changes))

    async def resync(self, desired: Mapping[Prefix, FibEntry]) -> WriteReport:
        """Make the table match `desired` exactly (for what we own): restore, fix, remove stale."""
        async with self._lock:
            await asyncio.to_thread(self._adopt)
            changes: dict[Prefix, FibEntry | None] = {p: None for p in self._routes if p not in desired}
            self._resolved.clear()
            for prefix, entry in desired.items():
                hops = self._resolve_all(entry.nexthops)
                if self._routes.get(prefix) != hops or not hops:
                    changes[prefix] = entry
            return await asyncio.to_thread(self._apply, changes)

    async def withdraw_all(self) -> WriteReport:
        """Remove every route and nexthop object we own in this table."""
        async with self._lock:
            await asyncio.to_thread(self._adopt)
            return await asyncio.to_thread(self._apply, dict.fromkeys(self._routes))

    async def close(self) -> None:
        self._channel.close()

    # -- kernel state ---------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Rebuild our picture from the kernel: our routes in our table, our nexthop objects."""
        if self._nexthop_objects is None:
            self._nexthop_objects = self._kernel_has_nexthop_objects()
        kernel_hops: dict[int, rtnl.KernelNexthop] = {}
        self._taken_ids.clear()
        if self._nexthop_objects:
            for nh in self._channel.nexthops():
                self._taken_ids.add(nh.nh_id)
                if nh.protocol == self.protocol:
                    kernel_hops[nh.nh_id] = nh
        self._routes.clear()
        self._route_group.clear()
        self._groups.clear()
        self._group_by_set.clear()
        self._hop_ids.clear()
        self._foreign.clear()
        for nh in kernel_hops.values():
            if nh.gateway is not None and nh.ifindex is not None and not nh.members:
                self._hop_ids.setdefault(NextHop(nh.gateway, nh.ifindex), nh.nh_id)
        for nh in kernel_hops.values():
            if nh.members:
                members = tuple(
                    NextHop(m.gateway, m.ifindex)
                    for m in (kernel_hops.get(i) for i in nh.members)
                    if m is not None and m.gateway is not None and m.ifindex is not None
                )
                self._groups[nh.nh_id] = _Group(members)
                self._group_by_set.setdefault(members, nh.nh_id)
        for route in self._channel.routes():
            if route.table != self.table or route.metric != self.metric_or_none(route.metric):
                continue
            if route.protocol != self.protocol:
                self._foreign.add(route.prefix)
                continue
            self._routes[route.prefix] = route.nexthops
            if route.nh_id is not None and route.nh_id in self._groups:
                self._route_group[route.prefix] = route.nh_id
                self._groups[route.nh_id].users.add(route.prefix)

    def metric_or_none(self, seen: int | None) -> int | None:
        """Routes match ours when their metric equals ours (the kernel reports 0 as absent for IPv4)."""
        if self.metric is None:
            return seen if seen in (None, 0, 1024) else -1
        return self.metric

    def _kernel_has_nexthop_objects(self) -> bool:
        try:
            list(self._channel.dump(rtnl.RTM_GETNEXTHOP))
        except OSError:
            return False
        return True

    def _resolve(self, gateway: Address) -> NextHop | None:
        """The on-link next hop (gateway, ifindex) the kernel would use to reach `gateway`."""
        if gateway in self._resolved:
            return self._resolved[gateway]
        result = _route_get(gateway)
        self._resolved[gateway] = result
        return result

    def _resolve_all(self, gateways: tuple[Address, ...]) -> tuple[NextHop, ...]:
        hops = [self._resolve(g) for g in gateways]
        return tuple(dict.fromkeys(h for h in hops if h is not None))

    def _new_id(self) -> int:
        while True:
            candidate = next(self._id_counter)
            if candidate not in self._taken_ids:
                self._taken_ids.add(candidate)
                return candidate

    # -- planning and sending -----------------------------------------------------------------

    def _apply(self, changes: dict[Prefix, FibEntry | None]) -> WriteReport:
        report = WriteReport()
        batch = Batch()
        self._pending_group = {}
        self._dead = ([], [])
        removals: list[Prefix] = []
        moves: dict[int | None, dict[tuple[NextHop, ...], list[Prefix]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for prefix, entry in changes.items():
            if prefix in self._foreign:
                if entry is not None:
                    report.rejected.append(
                        Rejection(
                            prefix,
                            RejectReason.FOREIGN_ROUTE,
                            f"table {self.table} holds a route for {prefix} we do not own",
                        )
                    )
                continue
            if entry is None:
                if prefix in self._routes:
                    removals.append(prefix)
                continue
            hops = self._resolve_all(entry.nexthops)
            if not hops:
                report.rejected.append(
                    Rejection(
                        prefix,
                        RejectReason.UNREACHABLE_NEXT_HOP,
                        "no next hop reachable: " + ", ".join(str(g) for g in entry.nexthops),
                    )
                )
                if prefix in self._routes:
                    removals.append(prefix)
                continue
            if self._routes.get(prefix) == hops:
                continue
            moves[self._route_group.get(prefix)][hops].append(prefix)

        if self._nexthop_objects:
            self._plan_with_groups(batch, moves)
        else:
            for targets in moves.values():
                for hops, prefixes in targets.items():
                    for prefix in prefixes:
                        self._add_route(
                            batch, RouteSpec(prefix, self.table, self.protocol, self.metric, nexthops=hops)
                        )
        for prefix in removals:
            self._channel.add(
                batch,
                Op.ROUTE_DELETE,
                prefix,
                _builder_route(
                    rtnl.RTM_DELROUTE,
                    rtnl.NLM_F_REQUEST,
                    RouteSpec(prefix, self.table, self.protocol, self.metric),
                ),
            )
        self._plan_garbage(batch, removals)
        report.netlink_messages = len(batch.messages)
        if not batch.messages:
            return report
        failures = self._channel.send(batch)
        failed: dict[object, rtnl.Failure] = {f.subject: f for f in failures}
        self._commit(changes, removals, failed, report)
        return report

    def _add_route(self, batch: Batch, spec: RouteSpec) -> None:
        self._channel.add(
            batch, Op.ROUTE_REPLACE, spec.prefix, _builder_route(rtnl.RTM_NEWROUTE, REPLACE, spec)
        )

    def _plan_with_groups(
        self, batch: Batch, moves: dict[int | None, dict[tuple[NextHop, ...], list[Prefix]]]
    ) -> None:
        for old_gid, targets in moves.items():
            if old_gid is not None and len(targets) == 1:
                hops, prefixes = next(iter(targets.items()))
                group = self._groups[old_gid]
                if group.users == set(prefixes):
                    # Every user of this group moves to the same set: rewrite the group in place.
                    self._ensure_hops(batch, hops)
                    members = [self._hop_ids[h] for h in hops]
                    self._channel.add(
                        batch,
                        Op.NEXTHOP_REPLACE,
                        ("group", old_gid),
                        _builder_group(old_gid, self.protocol, members),
                    )
                    if self._group_by_set.get(group.members) == old_gid:
                        del self._group_by_set[group.members]
                    group.members = hops
                    self._group_by_set.setdefault(hops, old_gid)
                    for prefix in prefixes:
                        self._routes[prefix] = hops
                    continue
            for hops, prefixes in targets.items():
                gid = self._ensure_group(batch, hops)
                for prefix in prefixes:
                    self._add_route(
                        batch, RouteSpec(prefix, self.table, self.protocol, self.metric, nh_id=gid)
                    )
                    self._pending_group[prefix] = gid

    def _ensure_hops(self, batch: Batch, hops: tuple[NextHop, ...]) -> None:
        for hop in hops:
            if hop not in self._hop_ids:
                nh_id = self._new_id()
                self._hop_ids[hop] = nh_id
                self._channel.add(
                    batch, Op.NEXTHOP_REPLACE, ("hop", nh_id), _builder_hop(nh_id, self.protocol, hop)
                )

    def _ensure_group(self, batch: Batch, hops: tuple[NextHop, ...]) -> int:
        gid = self._group_by_set.get(hops)
        if gid is not None:
            return gid
        self._ensure_hops(batch, hops)
        gid = self._new_id()
        self._channel.add(
            batch,
            Op.NEXTHOP_REPLACE,
            ("group", gid),
            _builder_group(gid, self.protocol, [self._hop_ids[h] for h in hops]),
        )
        self._groups[gid] = _Group(hops)
        self._group_by_set[hops] = gid
        return gid

    def _plan_garbage(self, batch: Batch, removals: list[Prefix]) -> None:
        """Delete groups nobody will use after this batch, then nexthops no group uses (in that order)."""
        if not self._nexthop_objects:
            return
        pending = self._pending_group
        users: dict[int, int] = {gid: len(g.users) for gid, g in self._groups.items()}
        for prefix, gid in pending.items():
            users[gid] = users.get(gid, 0) + 1
            old = self._route_group.get(prefix)
            if old is not None and old != gid:
                users[old] -= 1
        for prefix in removals:
            old = self._route_group.get(prefix)
            if old is not None:
                users[old] -= 1
        dead_groups = [gid for gid, count in users.items() if count <= 0]
        for gid in dead_groups:
            self._channel.add(batch, Op.NEXTHOP_DELETE, ("group", gid), _builder_del_nexthop(gid))
        live_hops = {h for gid, g in self._groups.items() if gid not in dead_groups for h in g.members}
        for hop, nh_id in list(self._hop_ids.items()):
            if hop not in live_hops:
                self._channel.add(batch, Op.NEXTHOP_DELETE, ("hop", nh_id), _builder_del_nexthop(nh_id))
        self._dead = (dead_groups, [h for h in self._hop_ids if h not in live_hops])

    def _commit(
        self,
        changes: dict[Prefix, FibEntry | None],
        removals: list[Prefix],
        failed: dict[object, rtnl.Failure],
        report: WriteReport,
    ) -> None:
        """Record what the kernel accepted; report what it refused, per prefix."""
        pending = self._pending_group
        for prefix in removals:
            failure = failed.get(prefix)
            if failure is None or failure.errno == 3:  # ESRCH: already gone
                self._forget_route(prefix)
                report.removed += 1
        for prefix, entry in changes.items():
            if entry is None or prefix in removals or prefix in self._foreign:
                continue
            failure = failed.get(prefix)
            if failure is not None:
                reason = (
                    RejectReason.UNREACHABLE_NEXT_HOP
                    if failure.errno in (101, 113, 22)
                    else RejectReason.KERNEL_REFUSED
                )
                report.rejected.append(Rejection(prefix, reason, failure.reason))
                pending.pop(prefix, None)
                continue
            if prefix in pending:
                gid = pending.pop(prefix)
                old = self._route_group.get(prefix)
                if old is not None and old in self._groups:
                    self._groups[old].users.discard(prefix)
                self._route_group[prefix] = gid
                self._groups[gid].users.add(prefix)
                self._routes[prefix] = self._groups[gid].members
                report.installed += 1
            elif not self._nexthop_objects:
                hops = self._resolve_all(entry.nexthops)
                self._routes[prefix] = hops
                report.installed += 1
            elif prefix in self._routes:
                report.installed += 1  # moved by a group rewrite
        dead_groups, dead_hops = self._dead
        for gid in dead_groups:
            if ("group", gid) not in failed:
                group = self._groups.pop(gid, None)
                if group is not None and self._group_by_set.get(group.members) == gid:
                    del self._group_by_set[group.members]
        for hop in dead_hops:
            nh_id = self._hop_ids.get(hop)
            if nh_id is not None and ("hop", nh_id) not in failed:
                del self._hop_ids[hop]
        self._dead = ([], [])
        for failure in failed.values():
            if failure.op in (Op.NEXTHOP_REPLACE, Op.NEXTHOP_DELETE):
                log.warning(
                    "nexthop request failed",
                    extra={"subject": str(failure.subject), "reason": failure.reason},
                )

    def _forget_route(self, prefix: Prefix) -> None:
        self._routes.pop(prefix, None)
        gid = self._route_group.pop(prefix, None)
        if gid is not None and gid in self._groups:
            self._groups[gid].users.discard(prefix)


def _builder_route(op: int, flags: int, spec: RouteSpec) -> rtnl.Builder:
    return lambda seq: rtnl.encode_route(op, flags, seq, spec)


def _builder_hop(nh_id: int, protocol: int, hop: NextHop) -> rtnl.Builder:
    return lambda seq: rtnl.encode_nexthop(REPLACE, seq, nh_id, protocol, hop)


def _builder_group(gid: int, protocol: int, members: list[int]) -> rtnl.Builder:
    return lambda seq: rtnl.encode_group(REPLACE, seq, gid, protocol, members)


def _builder_del_nexthop(nh_id: int) -> rtnl.Builder:
    return lambda seq: rtnl.encode_del_nexthop(seq, nh_id)


def _route_get(gateway: Address) -> NextHop | None:
    """Ask the kernel how it reaches `gateway` (RTM_GETROUTE), recursing one level like the FIB does."""
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    try:
        with IPRoute() as ipr:
            answers = ipr.route("get", dst=str(gateway), family=family)
    except Exception:  # an unreachable gateway is reported as such, never raised
        return None
    for answer in answers:
        if answer.get("type", 1) != rtnl.RTN_UNICAST:
            continue
        oif = answer.get_attr("RTA_OIF")
        via = answer.get_attr("RTA_GATEWAY")
        if oif is None:
            continue
        return NextHop(ip_address(via) if via else gateway, int(oif))
    return None
