"""A small in-memory rtnetlink kernel, standing in for NetlinkChannel in unit tests.

It decodes the writer's real messages (the same bytes a kernel gets) and keeps routes and nexthop
objects the way Linux does where the writer depends on it: routes are keyed by (table, prefix,
metric); NLM_F_EXCL refuses an existing key with EEXIST; a delete matches only a route of the named
protocol (ESRCH otherwise); a route or group naming a missing nexthop id is refused; deleting a
nexthop removes it from groups and removes routes left without one. Faults are injected per
gateway, prefix or group id, and error reports can be "lost" as on a receive-buffer overflow.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address, ip_network

from bgp.types import prefix_key
from controller.desired import RouteKey
from controller.writers import rtnl
from controller.writers.rtnl import (
    Batch,
    Builder,
    Failure,
    KernelNexthop,
    KernelRoute,
    NextHop,
    Op,
    SendResult,
)

Address = IPv4Address | IPv6Address


@dataclass
class FakeKernel:
    """Route tables and nexthop objects of one namespace, and what was sent to them."""

    reachable: dict[Address, int]  # on-link gateway -> ifindex
    fib: dict[tuple[int, RouteKey, int], KernelRoute] = field(default_factory=dict)
    objects: dict[int, KernelNexthop] = field(default_factory=dict)
    tables: set[tuple[int, int]] = field(default_factory=set)  # (family, table) that exist
    refuse_hops: set[Address] = field(default_factory=set)  # nexthop objects the kernel refuses
    refuse_routes: set[RouteKey] = field(default_factory=set)
    refuse_groups: set[int] = field(default_factory=set)  # group ids whose create/replace fails
    refuse_nexthop_deletes: bool = False  # every RTM_DELNEXTHOP fails (EBUSY)
    lose_errors: bool = False
    messages: list[int] = field(default_factory=list)  # message types, in order
    portid: int = 4242
    _seq: int = 0

    # -- the NetlinkChannel interface ---------------------------------------------------------

    def close(self) -> None:
        pass

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, batch: Batch, op: Op, subject: object, build: Builder) -> None:
        seq = self.next_seq()
        batch.messages.append(build(seq))
        batch.subjects[seq] = (op, subject)

    def send(self, batch: Batch) -> SendResult:
        result = SendResult(lost=self.lose_errors)
        for message in batch.messages:
            for kind, flags, seq, _pid, payload in rtnl.iter_messages(message):
                self.messages.append(kind)
                code, text = self._handle(kind, flags, payload)
                if code and not self.lose_errors:
                    op, subject = batch.subjects[seq]
                    result.failures.append(Failure(op, subject, code, text))
        return result

    def dump(
        self, kind: int, family: int = socket.AF_UNSPEC, table: int | None = None
    ) -> Iterator[memoryview]:
        if table is not None and (family, table) not in self.tables:
            raise OSError(errno.ENOENT, "FIB table does not exist")
        return iter(())

    def routes(self, family: int = socket.AF_UNSPEC, table: int | None = None) -> Iterator[KernelRoute]:
        """A generator, like NetlinkChannel.routes: a missing table fails when it is iterated."""
        if table is not None and (family, table) not in self.tables:
            raise OSError(errno.ENOENT, "FIB table does not exist")
        selected = [
            replace(r, nexthops=self._hops_of(r))
            for (t, _p, _m), r in self.fib.items()
            if (table is None or t == table) and family in (socket.AF_UNSPEC, r.family)
        ]
        yield from selected

    def nexthops(self) -> list[KernelNexthop]:
        return list(self.objects.values())

    def route_get(self, destination: Address) -> KernelRoute | None:
        if destination not in self.reachable:
            return None
        family = socket.AF_INET if destination.version == 4 else socket.AF_INET6
        prefix = prefix_key(ip_network(destination))
        return KernelRoute(
            family, prefix, 254, 2, rtnl.RTN_UNICAST, None, None, (), self.reachable[destination]
        )

    # -- helpers for tests ----------------------------------------------------------------------

    def add_foreign(
        self, table: int, prefix: RouteKey, metric: int, gateway: Address, protocol: int = 3
    ) -> None:
        """What `ip route add ... table T metric M` does (protocol boot)."""
        family = socket.AF_INET if prefix < rtnl.V6_FLAG else socket.AF_INET6
        hop = NextHop(gateway, self.reachable[gateway])
        self.fib[(table, prefix, metric)] = KernelRoute(
            family, prefix, table, 3, rtnl.RTN_UNICAST, metric, None, (hop,), hop.ifindex
        )
        self.tables.add((family, table))

    def gateways(self, table: int, prefix: RouteKey, metric: int) -> list[str]:
        route = self.fib[(table, prefix, metric)]
        return sorted(str(h.gateway) for h in self._hops_of(route))

    def count(self, kind: int) -> int:
        return self.messages.count(kind)

    # -- the kernel's side ------------------------------------------------------------------------

    def _hops_of(self, route: KernelRoute) -> tuple[NextHop, ...]:
        """Compat mode: a route via a nexthop object is reported with that object's gateways."""
        if route.nh_id is None:
            return route.nexthops
        obj = self.objects.get(route.nh_id)
        if obj is None:
            return ()
        members = [self.objects[i] for i in obj.members] if obj.members else [obj]
        return tuple(NextHop(m.gateway, m.ifindex) for m in members if m.gateway and m.ifindex)

    def _handle(self, kind: int, flags: int, payload: memoryview) -> tuple[int, str]:
        if kind == rtnl.RTM_NEWROUTE:
            return self._new_route(flags, payload)
        if kind == rtnl.RTM_DELROUTE:
            return self._del_route(payload)
        if kind == rtnl.RTM_NEWNEXTHOP:
            return self._new_nexthop(flags, payload)
        if kind == rtnl.RTM_DELNEXTHOP:
            return self._del_nexthop(payload)
        return errno.EOPNOTSUPP, "unexpected message"

    @staticmethod
    def _key(route: KernelRoute) -> tuple[int, RouteKey, int]:
        metric = route.metric or (0 if route.key < rtnl.V6_FLAG else 1024)
        return (route.table, route.key, metric)

    def _new_route(self, flags: int, payload: memoryview) -> tuple[int, str]:
        route = rtnl.decode_route(payload)
        assert route is not None
        key = self._key(route)
        if route.key in self.refuse_routes:
            return errno.EINVAL, "refused by the test"
        if key in self.fib and flags & rtnl.NLM_F_EXCL:
            return errno.EEXIST, "File exists"
        if route.nh_id is not None and route.nh_id not in self.objects:
            return errno.EINVAL, "Nexthop id does not exist"
        if any(h.gateway not in self.reachable for h in route.nexthops):
            return errno.ENETUNREACH, "Nexthop has invalid gateway"
        self.fib[key] = replace(route, metric=key[2])
        self.tables.add((route.family, route.table))
        return 0, ""

    def _del_route(self, payload: memoryview) -> tuple[int, str]:
        request = rtnl.decode_route(payload)
        assert request is not None
        key = self._key(request)
        found = self.fib.get(key)
        if found is None or found.protocol != request.protocol:
            return errno.ESRCH, "No such process"
        del self.fib[key]
        return 0, ""

    def _new_nexthop(self, flags: int, payload: memoryview) -> tuple[int, str]:
        obj = rtnl.decode_nexthop(payload)
        assert obj is not None
        if obj.nh_id in self.objects and flags & rtnl.NLM_F_EXCL:
            return errno.EEXIST, "Nexthop id already exists"
        if obj.members:
            if obj.nh_id in self.refuse_groups:
                return errno.EINVAL, "refused by the test"
            if any(m not in self.objects for m in obj.members):
                return errno.EINVAL, "Invalid nexthop id"
        elif obj.gateway in self.refuse_hops or obj.gateway not in self.reachable:
            return errno.EINVAL, "Nexthop has invalid gateway"
        self.objects[obj.nh_id] = obj
        return 0, ""

    def _del_nexthop(self, payload: memoryview) -> tuple[int, str]:
        obj = rtnl.decode_nexthop(payload)
        assert obj is not None
        if obj.nh_id not in self.objects:
            return errno.ENOENT, "Nexthop id does not exist"
        if self.refuse_nexthop_deletes:
            return errno.EBUSY, "refused by the test"
        del self.objects[obj.nh_id]
        for group in list(self.objects.values()):
            if obj.nh_id in group.members:
                group.members = tuple(m for m in group.members if m != obj.nh_id)
                if not group.members:
                    del self.objects[group.nh_id]
        self.fib = {k: r for k, r in self.fib.items() if r.nh_id is None or r.nh_id in self.objects}
        return 0, ""
