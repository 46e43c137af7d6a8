"""Table target -> writer: which `RouteWriter` serves a `TableDesired` in this agent.

Owns: `WriterFactory` (the callable the runtime is given to open a table's writer),
`node_writer_factory` (node tables -> controller/writers/netlink.NodeTableWriter) and
`UnsupportedTargetError` (a target this agent has no writer for, such as AWS until its writer
exists). Only this module names concrete writers; the runtime receives a factory and never imports
one.

May not touch: anything above the writers (runtime, agent, sources, translation); it depends on
controller.desired and the writer modules only.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.desired import NodeTable, TableDesired
from controller.writers.base import RouteWriter
from controller.writers.netlink import DEFAULT_PROTOCOL, NodeTableWriter

WriterFactory = Callable[[TableDesired], RouteWriter]


class UnsupportedTargetError(Exception):
    """No writer exists for this kind of table in this agent."""


def node_writer_factory(table: TableDesired, protocol: int = DEFAULT_PROTOCOL) -> RouteWriter:
    """Node tables get a NodeTableWriter; other targets need a writer this agent does not have.

    `protocol` is the rtnetlink protocol number that marks our routes (ownership, DESIGN §7.8).
    """
    target = table.target
    if isinstance(target, NodeTable):
        # The runtime resyncs every table from the FIB (the source of truth) on its own schedule; the
        # writer keeps its notification watcher but needs no periodic full pass of its own.
        return NodeTableWriter(target.table, metric=target.metric, protocol=protocol, resync_interval=None)
    raise UnsupportedTargetError(f"{target}: this agent has no writer for AWS route tables")


__all__ = ["DEFAULT_PROTOCOL", "UnsupportedTargetError", "WriterFactory", "node_writer_factory"]
