"""`routeserver agent`: the operator's process -- the agent host fed by the API server.

Owns: reading the agent's settings (flags, and the environment the chart's DaemonSet sets from the
downward API: KRS_NODE_NAME, KRS_POD_NAME, KRS_NAMESPACE, KRS_ADMIN_HOST/KRS_ADMIN_PORT,
KRS_LOG_LEVEL, KRS_ROUTE_PROTOCOL), building the kubernetes client, the agent, the operator source
and the status sinks, and running them in one asyncio loop.

May not touch: the runtime's decisions, the tables, the sessions; it only wires the parts. The
differences from `routeserver run` are exactly the source of desired state and the status sinks,
and what SIGTERM does: in a cluster a SIGTERM is a rolling update, an eviction or node maintenance,
so the routes stay in the node's tables for the next agent to adopt (its restart deferral keeps
them until its sessions converge); a real removal (the node leaves the nodeSelector, the
RouteServer, peer or association is deleted) withdraws them through the desired state.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Address

from controller.admin import DEFAULT_ADMIN_ADDRESS
from controller.agent import Agent, AgentOptions
from controller.events import Event
from controller.operator.conditions import SummaryWriter
from controller.operator.kube import Kube
from controller.operator.kube_events import KubeEventSink
from controller.operator.lease import LeaseSet
from controller.operator.metrics import OperatorCollector
from controller.operator.sessions import SessionWriter
from controller.operator.source import (
    RESYNC_INTERVAL,
    SECRET_INTERVAL,
    STALE_AFTER,
    OperatorOptions,
    OperatorSource,
)
from controller.runtime import Runtime
from controller.writers.factory import DEFAULT_PROTOCOL

log = logging.getLogger(__name__)

# Events about our cluster-scoped objects: the API server accepts them only in default/kube-system.
EVENT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node_name: str
    namespace: str
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    kubeconfig: str | None = None
    router_id: IPv4Address | None = None
    pod_name: str = ""
    route_protocol: int = DEFAULT_PROTOCOL
    bfd: bool = True
    resync_interval: float = RESYNC_INTERVAL
    secret_interval: float = SECRET_INTERVAL
    stale_after: float = STALE_AFTER
    daemonset: str | None = None
    version: str = ""


def settings_from_args(args: argparse.Namespace, version: str = "") -> AgentSettings:
    """Flags win over the environment; the node name is required (KRS_NODE_NAME in the chart)."""
    node = args.node_name or os.environ.get("KRS_NODE_NAME", "")
    if not node:
        raise ValueError("no node name: pass --node-name or set KRS_NODE_NAME (the chart sets it)")
    admin = args.admin_address
    if admin is None:
        host = os.environ.get("KRS_ADMIN_HOST", "127.0.0.1")
        port = os.environ.get("KRS_ADMIN_PORT", DEFAULT_ADMIN_ADDRESS.rpartition(":")[2])
        admin = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return AgentSettings(
        node_name=node,
        namespace=args.namespace or os.environ.get("KRS_NAMESPACE", "default"),
        admin_address=admin,
        kubeconfig=args.kubeconfig,
        router_id=args.router_id,
        pod_name=os.environ.get("KRS_POD_NAME", ""),
        route_protocol=args.route_protocol,
        bfd=not args.no_bfd,
        resync_interval=args.resync_interval,
        secret_interval=args.secret_interval,
        stale_after=args.stale_after,
        daemonset=args.daemonset or os.environ.get("KRS_DAEMONSET") or None,
        version=version,
    )


class PublishOnEvent:
    """An event sink that has the status sinks called soon after any user-visible event, so the
    session objects follow a state change in about a second, not at the next periodic publish."""

    def __init__(self) -> None:
        self.agent: Agent | None = None

    def emit(self, event: Event) -> None:
        if self.agent is not None:
            self.agent.request_publish()


@dataclass
class Operator:
    """The parts of one agent process, wired; `run()` hosts them until SIGTERM."""

    kube: Kube
    source: OperatorSource
    events: KubeEventSink
    leases: LeaseSet
    sessions: SessionWriter
    summary: SummaryWriter
    agent: Agent

    async def run(self) -> int:
        self.events.start()
        try:
            return await self.agent.run(self.source)
        finally:
            await self.leases.stop()  # released: another endpoint takes the summary over at once
            await self.sessions.close()
            await self.summary.close()
            await self.events.stop()
            await asyncio.to_thread(self.kube.close)


def build(settings: AgentSettings) -> Operator:
    """The agent, its source and sinks, wired; raises ValueError/RuntimeError for bad settings."""
    kube = Kube.from_environment(settings.kubeconfig)
    source = OperatorSource(
        kube,
        OperatorOptions(
            node_name=settings.node_name,
            namespace=settings.namespace,
            router_id=settings.router_id,
            resync_interval=settings.resync_interval,
            secret_interval=settings.secret_interval,
            stale_after=settings.stale_after,
            daemonset=settings.daemonset,
        ),
    )
    events = KubeEventSink(kube, settings.node_name, EVENT_NAMESPACE, uid_of=source.uid_of)
    publisher = PublishOnEvent()
    agent = Agent(
        AgentOptions(
            admin_address=settings.admin_address,
            bfd=settings.bfd,
            node_name=settings.node_name,
            version=settings.version,
            route_protocol=settings.route_protocol,
            signal_keeps_routes=True,
        ),
        event_sinks=[events, publisher],
    )
    publisher.agent = agent
    if isinstance(agent.runtime, Runtime):
        source.emit = agent.runtime.events.emit  # the source's problems reach every event sink
    # A new Lease holder writes the summary at once instead of at the next periodic publish.
    leases = LeaseSet(
        kube, settings.namespace, settings.node_name, on_change=lambda _name, _leader: agent.request_publish()
    )
    source.on_desired(lambda desired: leases.ensure(rs.name for rs in desired.route_servers))
    sessions = SessionWriter(kube, settings.node_name, functools.partial(source.uid_of, "RouteServerPeer"))
    agent.add_status_sink(sessions)
    summary = SummaryWriter(
        kube, settings.node_name, leases.is_leader, source.objects, lambda: source.problems
    )
    agent.add_status_sink(summary)
    agent.runtime.metrics.registry.register(
        OperatorCollector(
            requests=kube.request_counts,
            failures=kube.failure_counts,
            watch_age=source.watch_age,
            events=lambda: {
                "written": events.written,
                "aggregated": events.aggregated,
                "dropped": events.dropped,
            },
            status_writes=lambda: {
                **{f"session_{k}": v for k, v in sessions.writes.items()},
                **{f"summary_{k}": v for k, v in summary.writes.items()},
            },
            leaders=leases.leaders,
        )
    )
    return Operator(kube, source, events, leases, sessions, summary, agent)


async def run_agent(settings: AgentSettings) -> int:
    try:
        operator = build(settings)
    except (ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return await operator.run()


def run(settings: AgentSettings) -> int:
    """`routeserver agent`: 0 stopped, 1 runtime failure, 2 bad settings."""
    return asyncio.run(run_agent(settings))


__all__ = ["AgentSettings", "Operator", "build", "run", "run_agent", "settings_from_args"]
