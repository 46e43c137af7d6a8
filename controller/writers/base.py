"""The RouteWriter protocol: where the FIB goes (a node's kernel table, a cloud route table).

Writers receive the desired state per prefix and report per-prefix failures with a reason; a route
that cannot be programmed never stops the others (DESIGN.md: bad input loses nothing).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

Prefix = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class FibEntry:
    """What one prefix should point at: one next hop (active/passive) or an ECMP set, in order."""

    prefix: Prefix
    nexthops: tuple[Address, ...]


class RejectReason(enum.Enum):
    """Why a writer could not program a route; bounded, so it can be a metric label."""

    UNREACHABLE_NEXT_HOP = "UnreachableNextHop"
    FOREIGN_ROUTE = "ConflictsWithForeignRoute"
    KERNEL_REFUSED = "KernelRefused"
    TABLE_MISSING = "TableMissing"


@dataclass(frozen=True, slots=True)
class Rejection:
    prefix: Prefix
    reason: RejectReason
    message: str


@dataclass(slots=True)
class WriteReport:
    """The outcome of one apply/resync: counts and the rejected routes with their reasons."""

    installed: int = 0
    removed: int = 0
    netlink_messages: int = 0
    rejected: list[Rejection] = field(default_factory=list)


class RouteWriter(Protocol):
    """A FIB target. `apply` takes only what changed (None removes); `resync` takes the whole FIB."""

    async def apply(self, changes: Mapping[Prefix, FibEntry | None]) -> WriteReport: ...

    async def resync(self, desired: Mapping[Prefix, FibEntry]) -> WriteReport: ...

    def installed(self) -> Mapping[Prefix, tuple[Address, ...]]: ...

    async def close(self) -> None: ...
