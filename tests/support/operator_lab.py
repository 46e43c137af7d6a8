"""A cluster for the operator tests: a real API server with the chart installed, "nodes" as lab hosts.

There is no kubelet: each "node" is a lab namespace holding one `routeserver agent` subprocess that
talks to the API server through a `NetnsRelay` (the server listens on the root namespace's loopback
only) with the token of the chart's own ServiceAccount, so the agent has exactly the chart's RBAC.
The chart is installed with the real `helm` (its DaemonSet exists but never runs: no kubelet), the
route server objects are applied with the real `kubectl`, and Node objects are created for the lab
hosts with the labels the test gives them.

- `Cluster` (module scope): API server, `helm install`, the agent's kubeconfig, kubectl helpers.
- `AgentProcess`: one agent in a lab host; its admin endpoint is read from inside the namespace
  (`RouteServerProcess` does the same for `routeserver run`, whose readers it reuses).
- `two_nodes`: node-a and node-b on one L2 segment with two appliances (BIRD fw-a, FRR fw-b),
  each appliance peering with both nodes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.apiserver import ApiServer
from tests.support.daemons.base import Neighbor, Route, RoutingDaemon
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.helm import CHART, FULLNAME, NAMESPACE, RELEASE, Helm
from tests.support.netns import Host, Lab
from tests.support.netns_relay import NetnsRelay
from tests.support.prereq import REPO_ROOT
from tests.support.route_server import ADMIN_PORT, FAST_BFD, RouteServerProcess, ServerSpec

KOPF_MARKERS = ("kopf.zalando.org", "kopf.dev")


class Cluster:
    """The API server with the chart installed and the agent's credentials."""

    def __init__(self, workdir: Path) -> None:
        self.api = ApiServer()
        self.workdir = workdir
        self.helm: Helm | None = None
        self.agent_kubeconfig: Path | None = None

    def start(self) -> None:
        self.api.start()
        self.helm = Helm(self.workdir / "helm", self.api.kubeconfig)
        self.helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "--wait=false")
        names = [
            f"crd/{p}.routeserver.dev"
            for p in ("routeservers", "routeserverpeers", "routetableassociations", "routeserversessions")
        ]
        self.api.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        token = self.api.token_for(NAMESPACE, FULLNAME, expiration_seconds=7200)
        self.agent_kubeconfig = self.api.kubeconfig_for_token(token, "agent")

    def close(self) -> None:
        self.api.close()

    # -- objects

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.api.kubectl(*args, check=check).stdout

    def apply(self, documents: Sequence[dict[str, Any]]) -> None:
        self.api.apply(yaml.safe_dump_all(list(documents), sort_keys=False))

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", resource, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args)
        return json.loads(out) if out.strip() else None

    def items(self, resource: str, *args: str) -> list[dict[str, Any]]:
        data = json.loads(self.kubectl("get", resource, "-o", "json", *args))
        items: list[dict[str, Any]] = data["items"]
        return items

    def node(self, name: str, labels: dict[str, str]) -> None:
        self.apply([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}])

    def label(self, kind: str, name: str, *labels: str) -> None:
        self.kubectl("label", kind, name, "--overwrite", *labels)

    def delete_route_server_objects(self) -> None:
        for plural in ("routetableassociations", "routeserverpeers", "routeservers", "routeserversessions"):
            self.kubectl("delete", plural, "--all", "--wait=false", check=False)


def cluster_fixture(workdir: Path) -> Iterator[Cluster]:
    cluster = Cluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class AgentProcess(RouteServerProcess):
    """`routeserver agent` in a lab host, reaching the API server through a relay in its namespace."""

    def __init__(
        self,
        host: Host,
        cluster: Cluster,
        spec: ServerSpec,
        *,
        extra_args: Sequence[str] = (),
        name: str = "agent",
        kubeconfig: Path | None = None,
    ) -> None:
        """`kubeconfig`: the agent's credentials; None: the chart's ServiceAccount (the cluster's)."""
        super().__init__(host, spec, name=name, extra_args=extra_args)
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.relay = NetnsRelay(host.netns, cluster.api.port, cluster.api.port, host.workdir / "relay.log")

    def argv(self) -> list[str]:
        kubeconfig = self.kubeconfig or self.cluster.agent_kubeconfig
        assert kubeconfig is not None
        return [
            sys.executable, "-m", "controller.cli", "agent",
            "--kubeconfig", str(kubeconfig),
            "--node-name", self.host.name,
            "--namespace", NAMESPACE,
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            "--log-level", self.log_level, "--log-format", "text",
            "--daemonset", f"{FULLNAME}-agent",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        name = self.name if self.starts == 1 else f"{self.name}-{self.starts}"
        self.proc = self.host.popen(self.argv(), name=name, cwd=REPO_ROOT)
        if wait:
            self.wait(self._answers, 60, "the agent's admin endpoint")

    def healthz(self) -> int:
        from tests.support.route_server import http_get

        status, _ = self._thread.call(http_get, self.admin_port, "/healthz")
        return status

    def close(self) -> None:
        super().close()
        self.relay.close()


@dataclass
class TwoNodes:
    lab: Lab
    cluster: Cluster
    nodes: dict[str, Host]
    addresses: dict[str, str]  # host name -> its address on the segment
    appliances: dict[str, RoutingDaemon]
    agents: dict[str, AgentProcess]

    def wait_all(self, predicate: Callable[[AgentProcess], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        for agent in self.agents.values():
            remaining = max(1.0, deadline - time.monotonic())
            agent.wait(functools.partial(predicate, agent), remaining, f"{agent.host.name}: {what}")


SEGMENT = {"node-a": "10.0.1.1", "node-b": "10.0.1.2", "fw-a": "10.0.1.11", "fw-b": "10.0.1.12"}
VIP = "203.0.113.10/32"


def two_nodes(
    lab: Lab,
    cluster: Cluster,
    spec: ServerSpec,
    node_labels: dict[str, dict[str, str]],
    *,
    start_agents: bool = True,
    passwords: dict[str, str] | None = None,
    agent_args: Sequence[str] = (),
) -> TwoNodes:
    """node-a, node-b, fw-a (BIRD, AS 65001, active) and fw-b (FRR, AS 65002, VIP prepended twice).

    `passwords` gives an appliance's TCP-MD5 key towards both nodes; `agent_args` go to every agent.
    """
    passwords = passwords or {}
    hosts = {name: lab.host(name) for name in SEGMENT}
    lab.switch("sw", {hosts[n]: [f"{a}/24"] for n, a in SEGMENT.items()})
    nodes = {n: hosts[n] for n in ("node-a", "node-b")}
    for name, labels in node_labels.items():
        cluster.node(name, labels)

    def neighbors(appliance: str) -> list[Neighbor]:
        return [
            Neighbor(SEGMENT[n], spec.asn, password=passwords.get(appliance), bfd=FAST_BFD, hold_time=9,
                     connect_retry=1, families=("ipv4",))
            for n in nodes
        ]  # fmt: skip

    fw_a: RoutingDaemon = BirdDaemon(
        hosts["fw-a"], asn=65001, router_id=SEGMENT["fw-a"], neighbors=neighbors("fw-a"), routes=[Route(VIP)]
    )
    fw_b: RoutingDaemon = FrrDaemon(
        hosts["fw-b"],
        asn=65002,
        router_id=SEGMENT["fw-b"],
        neighbors=neighbors("fw-b"),
        routes=[Route(VIP, as_path_prepend=2)],
    )
    agents = {n: AgentProcess(h, cluster, spec, extra_args=agent_args) for n, h in nodes.items()}
    setup = TwoNodes(lab, cluster, nodes, dict(SEGMENT), {"fw-a": fw_a, "fw-b": fw_b}, agents)
    fw_a.start()
    fw_b.start()
    if start_agents:
        for agent in agents.values():
            agent.start()
    return setup


@contextlib.contextmanager
def running(
    lab: Lab,
    cluster: Cluster,
    spec: ServerSpec,
    node_labels: dict[str, dict[str, str]],
    *,
    passwords: dict[str, str] | None = None,
    agent_args: Sequence[str] = (),
) -> Iterator[TwoNodes]:
    """`two_nodes` with the route server objects applied and both agents started; afterwards the
    relays resumed, the API server running again, the agents' readers closed (the lab stops the
    processes), the objects and the Node objects deleted, also on failure."""
    nodes = two_nodes(
        lab, cluster, spec, node_labels, start_agents=False, passwords=passwords, agent_args=agent_args
    )
    try:
        cluster.apply(spec.documents())
        for agent in nodes.agents.values():
            agent.start()
        yield nodes
    finally:
        for agent in nodes.agents.values():
            agent.relay.resume()
        if not cluster.api.running():
            cluster.api.start_apiserver()
        for agent in nodes.agents.values():
            agent.close()
        cluster.delete_route_server_objects()
        for name in node_labels:
            cluster.kubectl("delete", "node", name, "--ignore-not-found", check=False)


def kopf_traces(obj: dict[str, Any]) -> list[str]:
    """Annotations, finalizers or status fields that kopf (not we) would have written on `obj`."""
    found = []
    metadata = obj.get("metadata", {})
    for key in metadata.get("annotations") or {}:
        if any(m in key for m in KOPF_MARKERS):
            found.append(f"annotation {key}")
    for finalizer in metadata.get("finalizers") or []:
        found.append(f"finalizer {finalizer}")
    for key in obj.get("status") or {}:
        if "kopf" in key.lower():
            found.append(f"status.{key}")
    return found


__all__ = [
    "ADMIN_PORT",
    "VIP",
    "AgentProcess",
    "Cluster",
    "TwoNodes",
    "cluster_fixture",
    "kopf_traces",
    "running",
    "two_nodes",
]
