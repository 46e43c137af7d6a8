"""Node discovery: who this agent is -- its name, labels, addresses and default router ID.

Owns: `node_context` (the `NodeContext` translation runs against), `host_addresses` (every address
of this network namespace), `pick_router_id` (the default BGP Identifier), and `discover`, the same
for code that runs on the event loop (the lookup runs on a worker thread).

May not touch: routes, links or addresses (it only reads them), the runtime or any source. The
Kubernetes side (node labels from the Node object) belongs to the operator, which passes them in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, ip_address

from pyroute2 import IPRoute

from bgp.types import IPAddress
from controller.desired import NodeContext

DEFAULT_NAMESPACE = "default"


def host_addresses() -> list[IPAddress]:
    """Every address configured in this network namespace (lo included).

    Read on a thread of its own: pyroute2's synchronous IPRoute runs an event loop internally and
    cannot be used from a thread whose loop is already running. Blocking: from a coroutine, use
    `discover`.
    """
    if not _loop_running():
        return _read_addresses()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="addresses") as pool:
        return pool.submit(_read_addresses).result()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _read_addresses() -> list[IPAddress]:
    found: list[IPAddress] = []
    with contextlib.suppress(OSError), IPRoute() as ipr:
        for message in ipr.get_addr():
            value = message.get_attr("IFA_ADDRESS") or message.get_attr("IFA_LOCAL")
            if value:
                with contextlib.suppress(ValueError):
                    found.append(ip_address(str(value).split("%")[0]))
    return found


def pick_router_id(addresses: Iterable[IPAddress]) -> IPv4Address | None:
    """The first global-looking IPv4 address (lowest), or loopback's when nothing else exists."""
    v4 = sorted(a for a in addresses if isinstance(a, IPv4Address) and not a.is_unspecified)
    usable = [a for a in v4 if not a.is_loopback and not a.is_link_local]
    chosen = usable or v4
    return chosen[0] if chosen else None


def node_context(
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    router_id: IPv4Address | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> NodeContext:
    """This node as translation sees it; unset fields come from the host (blocking)."""
    addresses = host_addresses()
    return NodeContext.of(
        name or socket.gethostname(),
        labels or {},
        router_id or pick_router_id(addresses),
        addresses,
        namespace,
    )


async def discover(
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    router_id: IPv4Address | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> NodeContext:
    """`node_context` from a coroutine: the netlink dump runs on a worker thread, never the loop."""
    return await asyncio.to_thread(node_context, name, labels, router_id, namespace)


__all__ = ["DEFAULT_NAMESPACE", "discover", "host_addresses", "node_context", "pick_router_id"]
