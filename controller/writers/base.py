"""The one writer protocol: where the FIB goes (a node's kernel table, a cloud route table).

Owns: `RouteWriter`, the protocol every table target implements (controller/writers/netlink.py for
node tables; an AWS writer next) and the runtime drives, and its result types (`WriteReport`,
`Rejection`, `RejectReason`). The route types it takes (`RouteKey`, `Hops`, `RouteChanges`) are
controller/desired.py's: a route is keyed by the Loc-RIB's compact prefix key (an int) all the way
to the target, and its next-hop tuple is shared by every route with the same set.

May not touch: anything above the writers (the runtime, the agent, sources, translation): writers
depend on controller.desired only (import-linter enforces it).

Writers receive the desired state per prefix and report per-prefix failures with a reason; a route
that cannot be programmed never stops the others (DESIGN.md: bad input loses nothing).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.desired import Address, Hops, RouteChanges, RouteKey


class RejectReason(enum.Enum):
    """Why a writer could not program a route; bounded, so it can be a metric label."""

    UNREACHABLE_NEXT_HOP = "UnreachableNextHop"
    FOREIGN_ROUTE = "ConflictsWithForeignRoute"
    KERNEL_REFUSED = "KernelRefused"
    TABLE_MISSING = "TableMissing"


@dataclass(frozen=True, slots=True)
class Rejection:
    prefix: RouteKey
    reason: RejectReason
    message: str


@dataclass(slots=True)
class WriteReport:
    """The outcome of one start/apply/resync/withdraw: counts and the rejected routes with reasons."""

    installed: int = 0
    removed: int = 0
    netlink_messages: int = 0
    rejected: list[Rejection] = field(default_factory=list)


class WantedRoutes(Protocol):
    """What a table should hold now, as its owner (the runtime's table, reading the FIB) knows it.

    A writer that follows it reads it when it repairs drift, instead of keeping its own copy of
    every route it was given (a million-route FIB would be held twice).
    """

    def get(self, prefix: RouteKey) -> Hops | None:
        """The next hops `prefix` should have (None: no route of ours should be there)."""
        ...

    def snapshot(self) -> Mapping[RouteKey, Hops]:
        """Every route the table should hold, as a mapping the caller may keep (a copy)."""
        ...


class RouteWriter(Protocol):
    """A FIB target, driven by one table of the runtime.

    - `start`: open the target and adopt what we own there from a previous run (nothing removed yet).
    - `apply`: only what changed (key -> next hops; None removes).
    - `resync`: the whole FIB; repairs drift and removes what we own but no longer want.
    - `withdraw_all`: remove every route we own (a table or route server that goes away).
    - `installed`: what is programmed now, as read back (key -> next hops).
    - `installed_route`: the same for one prefix (None: no route of ours), without building the
      whole mapping (the per-route view, controller/runtime/routes.py, reads it once per route).
    - `installed_count`, `first_installed` and `matches`: what status and metrics read at every
      scrape (how many, the first few in address order, whether the target holds exactly what the
      table wants), answered without a copy of every route (a million-route mapping kept alive
      by a scrape would cost as much as the writer's own records).
    - `follow`: read what the table should hold from its owner when repairing (no copy of it kept).
    - `fail_over`: BFD declared these gateways dead: move what uses them to what is left of each
      route's next hops, or to its backup (`Backed`), now and without looking at single routes where
      the target allows it (a nexthop-group rewrite); a writer that cannot returns None and waits
      for the FIB's changes, which follow at once and are the source of truth either way.
    - `close`: release the target, leaving its routes as they are.
    """

    def follow(self, wanted: WantedRoutes) -> None: ...

    def fail_over(self, gateways: Collection[Address]) -> WriteReport | None: ...

    async def start(self) -> WriteReport: ...

    async def apply(self, changes: RouteChanges) -> WriteReport: ...

    async def resync(self, desired: Mapping[RouteKey, Hops]) -> WriteReport: ...

    async def withdraw_all(self) -> WriteReport: ...

    def installed(self) -> Mapping[RouteKey, Hops]: ...

    def installed_route(self, prefix: RouteKey) -> Hops | None: ...

    def installed_count(self) -> int: ...

    def first_installed(self, limit: int) -> list[tuple[RouteKey, Hops]]:
        """Up to `limit` of our routes, in key order (family, address, length)."""
        ...

    def matches(self, desired: Mapping[RouteKey, Hops], version: int) -> bool:
        """Whether our routes are exactly `desired` (prefixes and next hops). `version` is the
        caller's count of changes to `desired`: the answer may be kept until it or our routes change."""
        ...

    async def close(self) -> None: ...


__all__ = [
    "RejectReason",
    "Rejection",
    "RouteWriter",
    "WantedRoutes",
    "WriteReport",
]
