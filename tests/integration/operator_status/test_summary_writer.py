"""SummaryWriter against a real kube-apiserver, as a ServiceAccount holding only the chart's ClusterRole
rules: conditions and counts show in `kubectl get` columns and `-o json`; nothing is written when
nothing changed (also by a fresh writer that reads the status back); a session status change is
Degraded after one publish; a change inside min_interval is written when the interval ends; a
writer that does not lead writes nothing; a deleted object is logged once and never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from controller.desired import Problem
from controller.models.common import StatusModel
from controller.models.resources import RouteServerPeerStatus, RouteServerStatus, RouteTableAssociationStatus
from controller.operator.conditions import SummaryWriter
from controller.operator.kube import ASSOCIATIONS, GROUP, PEERS, ROUTE_SERVERS, SESSIONS, VERSION, Kube
from controller.operator.sessions import NODE_LABEL, PEER_LABEL, ROUTE_SERVER_LABEL, label_value
from controller.status import AgentStatus, PersistView, RouteServerView, TableView
from tests.support.apiserver import ApiServer
from tests.support.crd_cases import install_crds

pytestmark = pytest.mark.apiserver

CLUSTER_ROLE = Path(__file__).parents[3] / "charts/kube-route-server/templates/clusterrole.yaml"
SA_NAMESPACE = "krs-summary"
NODES = ("node-a", "node-b")
EVENTUALLY = 15.0  # seconds: generous on a loaded 2-core machine
MODELS: dict[str, type[StatusModel]] = {
    ROUTE_SERVERS: RouteServerStatus,
    PEERS: RouteServerPeerStatus,
    ASSOCIATIONS: RouteTableAssociationStatus,
}


def _chart_rules() -> list[dict[str, Any]]:
    """The agent ClusterRole's rules exactly as the chart renders them (template lines left out)."""
    text = "\n".join(line for line in CLUSTER_ROLE.read_text().splitlines() if "{{" not in line)
    rules: list[dict[str, Any]] = yaml.safe_load(text)["rules"]
    return rules


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> ApiServer:
    install_crds(apiserver)
    return apiserver


@pytest.fixture(scope="module")
def agent_kubeconfig(api: ApiServer) -> Path:
    api.create_service_account(SA_NAMESPACE, "agent")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "summary-agent"},
        "rules": _chart_rules(),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "summary-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "summary-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": SA_NAMESPACE}],
    }
    api.apply(yaml.safe_dump_all([role, binding]))
    return api.kubeconfig_for_token(api.token_for(SA_NAMESPACE, "agent"), "summary-agent")


@pytest.fixture(scope="module")
def admin(api: ApiServer) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api.client())


@pytest.fixture
def kube(agent_kubeconfig: Path) -> Iterator[Kube]:
    made = Kube.from_environment(str(agent_kubeconfig))
    yield made
    made.close()


@dataclass
class Cluster:
    """One route server with two peers and a table, session objects on two nodes, and the writer's inputs."""

    api: ApiServer
    admin: client.CustomObjectsApi
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    leading: bool = True
    problems: list[Problem] = field(default_factory=list)
    cache: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"sum-{self.suffix}"

    @property
    def peers(self) -> list[str]:
        return [f"sum-{self.suffix}-p1", f"sum-{self.suffix}-p2"]

    @property
    def table(self) -> str:
        return f"sum-{self.suffix}-t"

    def manifests(self) -> list[dict[str, Any]]:
        base = {"apiVersion": f"{GROUP}/{VERSION}"}
        ref = {"routeServerRef": {"name": self.server}}
        objs: list[dict[str, Any]] = [
            {**base, "kind": "RouteServer", "metadata": {"name": self.server}, "spec": {"asn": 64512}}
        ]
        for i, name in enumerate(self.peers):
            spec = {**ref, "peerAddress": f"198.51.100.{20 + i}", "peerASN": 65001}
            objs.append({**base, "kind": "RouteServerPeer", "metadata": {"name": name}, "spec": spec})
        spec = {**ref, "target": {"node": {"table": 100}}}
        objs.append({**base, "kind": "RouteTableAssociation", "metadata": {"name": self.table}, "spec": spec})
        return objs

    def set_session(self, node: str, peer: str, bgp: str = "Established", bfd: str = "Up") -> None:
        name = f"{peer}.{node}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RouteServerSession",
            "metadata": {
                "name": name,
                "labels": {
                    NODE_LABEL: label_value(node),
                    PEER_LABEL: label_value(peer),
                    ROUTE_SERVER_LABEL: label_value(self.server),
                },
            },
            "spec": {"node": node, "peerRef": {"name": peer}},
        }
        try:
            self.admin.create_cluster_custom_object(GROUP, VERSION, SESSIONS, body)
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        status = {"bgpState": bgp, "bfdState": bfd, "prefixesAccepted": 3, "prefixesReceived": 3}
        self.admin.patch_cluster_custom_object_status(GROUP, VERSION, SESSIONS, name, {"status": status})

    def refresh(self) -> None:
        """The operator cache: the objects as listed now (it ignores later status-only changes)."""
        for plural in (ROUTE_SERVERS, PEERS, ASSOCIATIONS):
            listed = cast(dict[str, Any], self.admin.list_cluster_custom_object(GROUP, VERSION, plural))
            self.cache[plural] = [i for i in listed["items"] if i["metadata"]["name"].startswith(self.server)]

    def objects(self) -> Mapping[str, list[dict[str, Any]]]:
        return self.cache

    def writer(self, kube: Kube, min_interval: float = 0.0) -> SummaryWriter:
        return SummaryWriter(
            kube,
            "node-a",
            lambda name: self.leading and name == self.server,
            self.objects,
            lambda: self.problems,
            min_interval=min_interval,
        )

    def status(self, in_sync: bool = True) -> AgentStatus:
        table = TableView(
            name=self.table,
            target="table 100",
            table_id=100,
            routes_desired=5,
            routes_installed=5 if in_sync else 4,
            routes_rejected=0,
            rejected_by_reason={},
            in_sync=in_sync,
            installed=(),
            rejected=(),
            last_sync_at=1_790_000_000.0,
            last_write_at=None,
            last_error=None,
        )
        view = RouteServerView(
            name=self.server,
            asn=64512,
            router_id="10.0.0.1",
            listening=("0.0.0.0:179",),
            selection="ActivePassive",
            max_paths=8,
            persist=PersistView(False, 120, "Live", 0, None),
            sessions_up=2,
            fib_routes=5,
            fib=(),
            peers=(),
            tables=(table,),
        )
        return AgentStatus(node="node-a", version="test", started_at=0.0, healthy=True, route_servers=(view,))

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.admin.get_cluster_custom_object(GROUP, VERSION, plural, name))

    def table_row(self, resource: str, name: str) -> dict[str, str]:
        """One row of `kubectl get`, by header (cells cut at the header's column offsets)."""
        header, row = self.api.kubectl("get", resource, name).stdout.splitlines()[:2]
        starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")]
        bounds = [*starts, max(len(header), len(row)) + 1]
        return {
            header[bounds[k] : bounds[k + 1]].strip(): row[bounds[k] : bounds[k + 1]].strip()
            for k in range(len(starts))
        }


@pytest.fixture
async def cluster(api: ApiServer, admin: client.CustomObjectsApi) -> AsyncIterator[Cluster]:
    made = Cluster(api, admin)
    # The nodes exist: the Lease holder deletes the session objects of nodes that do not.
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}} for node in NODES]
    await asyncio.to_thread(api.apply, yaml.safe_dump_all(nodes))
    manifest = yaml.safe_dump_all(made.manifests())
    await asyncio.to_thread(api.apply, manifest)
    for node in NODES:
        for peer in made.peers:
            await asyncio.to_thread(made.set_session, node, peer)
    await asyncio.to_thread(made.refresh)
    yield made
    await asyncio.to_thread(
        api.kubectl, "delete", "-f", "-", "--ignore-not-found", "--wait=false", input=manifest, check=False
    )
    for node in NODES:
        for peer in made.peers:
            await asyncio.to_thread(
                api.kubectl,
                "delete",
                f"{SESSIONS}.{GROUP}",
                f"{peer}.{node}",
                "--ignore-not-found",
                check=False,
            )


def conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


async def test_conditions_show_in_columns_and_json_and_nothing_changed_writes_nothing(
    cluster: Cluster, kube: Kube
) -> None:
    writer = cluster.writer(kube)
    await writer.publish(cluster.status())
    assert writer.writes == {"RouteServer": 1, "RouteServerPeer": 2, "RouteTableAssociation": 1}
    assert sum(writer.failures.values()) == 0

    row = await asyncio.to_thread(cluster.table_row, "routeservers", cluster.server)
    assert {k: row[k] for k in ("READY", "ENDPOINTS", "PEERS UP", "ROUTES")} == {
        "READY": "True",
        "ENDPOINTS": "2",
        "PEERS UP": "2",
        "ROUTES": "5",
    }
    row = await asyncio.to_thread(cluster.table_row, "routeserverpeers", cluster.peers[0])
    assert {k: row[k] for k in ("READY", "ESTABLISHED", "SESSIONS", "ACCEPTED")} == {
        "READY": "True",
        "ESTABLISHED": "2",
        "SESSIONS": "2",
        "ACCEPTED": "3",
    }
    row = await asyncio.to_thread(cluster.table_row, "routetableassociations", cluster.table)
    assert (row["READY"], row["INSTALLED"], row["REJECTED"]) == ("True", "5", "0")

    out = await asyncio.to_thread(cluster.api.kubectl, "get", "routeservers", cluster.server, "-o", "json")
    server = json.loads(out.stdout)
    assert conditions(server)["Ready"]["reason"] == "AllSessionsEstablished"
    assert conditions(server)["Degraded"]["status"] == "False"
    assert server["status"]["leaseHolder"] == "node-a"
    for plural, name in [
        (ROUTE_SERVERS, cluster.server),
        *[(PEERS, p) for p in cluster.peers],
        (ASSOCIATIONS, cluster.table),
    ]:
        obj = await asyncio.to_thread(cluster.get, plural, name)
        MODELS[plural].model_validate(obj["status"])

    before = kube.request_counts()["summary"]
    await writer.publish(cluster.status())  # the cache still holds the objects without our status
    assert sum(writer.writes.values()) == 4
    assert kube.request_counts()["summary"] == before + 1  # the session listing only

    await asyncio.to_thread(cluster.refresh)  # a fresh cache, and a fresh writer (another agent start)
    fresh = cluster.writer(kube)
    await fresh.publish(cluster.status())
    assert sum(fresh.writes.values()) == 0


async def test_a_session_going_down_is_degraded_after_one_publish(cluster: Cluster, kube: Kube) -> None:
    writer = cluster.writer(kube)
    await writer.publish(cluster.status())
    first = conditions(await asyncio.to_thread(cluster.get, ROUTE_SERVERS, cluster.server))

    await asyncio.to_thread(cluster.set_session, "node-b", cluster.peers[0], "Idle", "Down")
    await writer.publish(cluster.status())
    server = await asyncio.to_thread(cluster.get, ROUTE_SERVERS, cluster.server)
    degraded = conditions(server)["Degraded"]
    assert degraded["status"] == "True"
    assert f"node-b/{cluster.peers[0]} (Idle)" in degraded["message"]
    assert conditions(server)["Ready"]["lastTransitionTime"] == first["Ready"]["lastTransitionTime"]
    assert (server["status"]["peersUp"], server["status"]["endpoints"]) == (2, 2)
    peer = await asyncio.to_thread(cluster.get, PEERS, cluster.peers[0])
    assert conditions(peer)["Ready"]["status"] == "False" and peer["status"]["sessionsEstablished"] == 1
    other = await asyncio.to_thread(cluster.get, PEERS, cluster.peers[1])
    assert conditions(other)["Ready"]["status"] == "True"
    assert writer.writes == {"RouteServer": 2, "RouteServerPeer": 3, "RouteTableAssociation": 1}


async def test_a_change_inside_the_interval_is_written_when_it_ends(cluster: Cluster, kube: Kube) -> None:
    writer = cluster.writer(kube, min_interval=1.0)
    try:
        await writer.publish(cluster.status())
        written = writer.writes["RouteTableAssociation"]
        await writer.publish(cluster.status(in_sync=False))  # within the interval: deferred
        deadline = time.monotonic() + EVENTUALLY
        assert writer.deferred and writer.writes["RouteTableAssociation"] == written
        while writer.writes["RouteTableAssociation"] == written:
            assert time.monotonic() < deadline, "the deferred write never happened"
            await asyncio.sleep(0.05)
        table = await asyncio.to_thread(cluster.get, ASSOCIATIONS, cluster.table)
        assert conditions(table)["Ready"]["status"] == "False" and table["status"]["routesInstalled"] == 4
        assert not writer.deferred
    finally:
        await writer.close()


async def test_a_writer_that_does_not_lead_writes_nothing(cluster: Cluster, kube: Kube) -> None:
    cluster.leading = False
    writer = cluster.writer(kube)
    await writer.publish(cluster.status())
    assert sum(writer.writes.values()) == 0 and kube.request_counts().get("summary", 0) == 0
    server = await asyncio.to_thread(cluster.get, ROUTE_SERVERS, cluster.server)
    assert "status" not in server


async def test_an_object_gone_is_logged_once_and_never_raised(
    cluster: Cluster, kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    gone = cluster.peers[1]
    await asyncio.to_thread(cluster.api.kubectl, "delete", f"{PEERS}.{GROUP}", gone, "--wait=true")
    # cluster.cache was listed before the deletion: the writer still believes the peer exists.
    writer = cluster.writer(kube)
    with caplog.at_level(logging.INFO, logger="controller.operator.conditions"):
        await writer.publish(cluster.status())
        await writer.publish(cluster.status())
    assert writer.failures == {"RouteServerPeer": 2}  # tried at each publish
    assert [r.getMessage() for r in caplog.records].count(
        "object gone before its summary status was written"
    ) == 1
    assert writer.writes == {"RouteServer": 1, "RouteServerPeer": 1, "RouteTableAssociation": 1}
