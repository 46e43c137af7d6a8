"""SessionWriter against a real kube-apiserver, as a ServiceAccount with only the chart's rights
on routeserversessions: objects with spec, labels, owner references and status; nothing written
when nothing changed; bursts coalesced to one write per interval with the last value landing;
objects of removed peers deleted, objects deleted by hand created again."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.operator.kube import Kube
from controller.operator.sessions import SessionWriter
from tests.controller.operator_status.builders import agent_status, peer_view
from tests.support.apiserver import ApiServer
from tests.support.crd_cases import install_crds
from tests.support.prereq import REPO_ROOT

pytestmark = pytest.mark.apiserver

CLUSTER_ROLE = REPO_ROOT / "charts/kube-route-server/templates/clusterrole.yaml"
NAMESPACE = "krs-sessions"
ACCOUNT = "agent"
ROLE = "krs-sessions-agent"
PEERS = ("sess-p1", "sess-p2", "sess-p3")


def _session_rules() -> list[dict[str, Any]]:
    """The chart's ClusterRole rules for routeserversessions(/status), and nothing else."""
    text = "\n".join(line for line in CLUSTER_ROLE.read_text().splitlines() if "{{" not in line)
    rules = []
    for rule in yaml.safe_load(text)["rules"]:
        resources = [r for r in rule["resources"] if r.split("/")[0] == "routeserversessions"]
        if resources:
            rules.append({"apiGroups": rule["apiGroups"], "resources": resources, "verbs": rule["verbs"]})
    return rules


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> Iterator[ApiServer]:
    install_crds(apiserver)
    yield apiserver


@pytest.fixture(scope="module")
def peer_uids(api: ApiServer) -> Iterator[dict[str, str]]:
    """RouteServerPeers (their uids go into the owner references)."""
    uids: dict[str, str] = {}
    for name in PEERS:
        manifest = {
            "apiVersion": "routeserver.dev/v1alpha1",
            "kind": "RouteServerPeer",
            "metadata": {"name": name},
            "spec": {"routeServerRef": {"name": "sess-rs"}, "peerAddress": "198.51.100.10", "peerASN": 65001},
        }
        api.apply(yaml.safe_dump(manifest))
        got = json.loads(api.kubectl("get", f"routeserverpeers.routeserver.dev/{name}", "-o", "json").stdout)
        uids[name] = got["metadata"]["uid"]
    yield uids
    for name in PEERS:
        api.kubectl("delete", f"routeserverpeers.routeserver.dev/{name}", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def agent_kubeconfig(api: ApiServer) -> Path:
    """A ServiceAccount bound to a ClusterRole with only the chart's rules for session objects."""
    api.create_service_account(NAMESPACE, ACCOUNT)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": ROLE},
        "rules": _session_rules(),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": ROLE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "krs-sessions-agent",
        },
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}],
    }
    api.apply(yaml.safe_dump_all([role, binding]))
    return api.kubeconfig_for_token(api.token_for(NAMESPACE, ACCOUNT), "sessions-agent")


@pytest.fixture
async def kube(agent_kubeconfig: Path) -> AsyncIterator[Kube]:
    kube = Kube.from_environment(str(agent_kubeconfig))
    yield kube
    await asyncio.to_thread(kube.close)


def _objects(api: ApiServer, node: str) -> dict[str, dict[str, Any]]:
    out = api.kubectl("get", "routeserversessions", "-l", f"routeserver.dev/node={node}", "-o", "json")
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


async def _eventually(check: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def test_the_agent_account_may_not_change_session_objects_beyond_status(
    api: ApiServer, agent_kubeconfig: Path
) -> None:
    def can(verb: str, resource: str, *more: str) -> str:
        result = api.kubectl("auth", "can-i", verb, resource, *more, kubeconfig=agent_kubeconfig, check=False)
        return result.stdout.strip()

    assert can("create", "routeserversessions.routeserver.dev") == "yes"
    assert can("patch", "routeserversessions.routeserver.dev", "--subresource=status") == "yes"
    assert can("patch", "routeserversessions.routeserver.dev") == "no"
    assert can("update", "routeserversessions.routeserver.dev") == "no"


async def test_two_peers_make_two_objects_and_the_same_status_again_writes_nothing(
    api: ApiServer, kube: Kube, peer_uids: dict[str, str]
) -> None:
    node = "node-a"
    writer = SessionWriter(kube, node, peer_uids.get)
    status = agent_status(node, {"sess-rs": [peer_view("sess-p1"), peer_view("sess-p2", bfd=None)]})
    await writer.publish(status)
    assert writer.writes == {"create": 2, "patch": 2}
    objects = _objects(api, node)
    assert sorted(objects) == ["sess-p1.node-a", "sess-p2.node-a"]
    first = objects["sess-p1.node-a"]
    assert first["spec"] == {"node": node, "peerRef": {"name": "sess-p1"}}
    assert first["metadata"]["labels"] == {
        "routeserver.dev/node": node,
        "routeserver.dev/peer": "sess-p1",
        "routeserver.dev/route-server": "sess-rs",
    }
    assert first["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "routeserver.dev/v1alpha1",
            "kind": "RouteServerPeer",
            "name": "sess-p1",
            "uid": peer_uids["sess-p1"],
            "blockOwnerDeletion": False,
        }
    ]
    got = first["status"]
    assert got["bgpState"] == "Established" and got["bfdState"] == "Up"
    assert got["establishedTime"] == "2023-11-14T22:13:20Z"
    assert got["negotiated"]["holdTimeSeconds"] == 90
    assert got["negotiated"]["addressFamilies"] == ["IPv4Unicast", "IPv6Unicast"]
    assert got["negotiated"]["bfdDetectionTimeMilliseconds"] == 900
    assert (got["prefixesReceived"], got["prefixesAccepted"], got["prefixesRejected"]) == (5, 3, 2)
    assert got["prefixesInstalled"] == 3
    assert "lastUpdateTime" in got
    assert "bfdState" not in objects["sess-p2.node-a"]["status"]

    table = api.kubectl("get", "routeserversessions", "-l", f"routeserver.dev/node={node}").stdout
    rows = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]
    assert rows[0] == ["NAME", "NODE", "PEER", "BGP", "BFD", "ACCEPTED", "INSTALLED", "ESTABLISHED", "AGE"]
    assert rows[1][:7] == ["sess-p1.node-a", node, "sess-p1", "Established", "Up", "3", "3"]

    requests = sum(kube.request_counts().values())
    await writer.publish(status)
    assert writer.writes == {"create": 2, "patch": 2}
    assert sum(kube.request_counts().values()) == requests  # not even a read
    await writer.remove_all()
    assert _objects(api, node) == {}


async def test_a_burst_of_changes_is_one_write_per_interval_and_the_last_value_lands(
    api: ApiServer, kube: Kube, peer_uids: dict[str, str]
) -> None:
    node = "node-burst"
    writer = SessionWriter(kube, node, peer_uids.get, min_interval=1.0)
    names = ("sess-p1", "sess-p2")
    started = time.monotonic()
    for count in range(50):
        peers = [peer_view(name, prefixes_received=100 + count) for name in names]
        await writer.publish(agent_status(node, {"sess-rs": peers}))
        await asyncio.sleep(0.015)
    burst = time.monotonic() - started
    assert writer.writes["patch"] <= 3 * len(names), (writer.writes, burst)

    def landed() -> bool:
        objects = _objects(api, node)
        return all(objects[f"{n}.{node}"]["status"]["prefixesReceived"] == 149 for n in names)

    await _eventually(landed)
    assert writer.writes["create"] == len(names)
    assert writer.writes["patch"] <= 3 * len(names)
    print(f"burst of 50 publishes in {burst:.2f} s: writes {dict(writer.writes)}")
    await writer.remove_all()
    await writer.close()


async def test_objects_of_removed_peers_are_deleted_and_those_deleted_by_hand_come_back(
    api: ApiServer, kube: Kube, peer_uids: dict[str, str]
) -> None:
    node = "node-b"
    writer = SessionWriter(kube, node, peer_uids.get, min_interval=0.0)
    await writer.publish(agent_status(node, {"sess-rs": [peer_view("sess-p1"), peer_view("sess-p2")]}))
    assert sorted(_objects(api, node)) == ["sess-p1.node-b", "sess-p2.node-b"]

    await writer.publish(agent_status(node, {"sess-rs": [peer_view("sess-p1")]}))
    assert sorted(_objects(api, node)) == ["sess-p1.node-b"]
    assert writer.writes["delete"] == 1

    api.kubectl("delete", "routeserversessions.routeserver.dev/sess-p1.node-b")
    await writer.publish(agent_status(node, {"sess-rs": [peer_view("sess-p1", prefixes_accepted=7)]}))
    objects = _objects(api, node)
    assert objects["sess-p1.node-b"]["status"]["prefixesAccepted"] == 7
    assert objects["sess-p1.node-b"]["metadata"]["ownerReferences"][0]["uid"] == peer_uids["sess-p1"]
    assert writer.writes["create"] == 3

    await writer.remove_all()
    assert _objects(api, node) == {}


async def test_a_new_run_adopts_the_objects_of_the_previous_one(
    api: ApiServer, kube: Kube, peer_uids: dict[str, str]
) -> None:
    node = "node-c"
    status = agent_status(node, {"sess-rs": [peer_view("sess-p1"), peer_view("sess-p3")]})
    await SessionWriter(kube, node, peer_uids.get).publish(status)
    again = SessionWriter(kube, node, peer_uids.get)
    await again.publish(status)
    assert again.writes == {}  # listed at start: same status, nothing to write
    changed = agent_status(node, {"sess-rs": [peer_view("sess-p3", bgp_state="Active")]})
    await again.publish(changed)
    assert again.writes == {"patch": 1, "delete": 1}
    status_now = _objects(api, node)["sess-p3.node-c"]["status"]
    assert status_now["bgpState"] == "Active"
    assert "establishedTime" not in status_now
    # the BGP values are removed (merge-patch nulls), BFD's stay: its session is still Up
    assert status_now["negotiated"] == {
        "bfdTransmitIntervalMilliseconds": 300,
        "bfdDetectionTimeMilliseconds": 900,
    }
    await again.remove_all()


async def test_a_hundred_peers_cost_two_writes_each_once_and_nothing_while_unchanged(
    api: ApiServer, kube: Kube
) -> None:
    node = "node-scale"
    names = [f"scale-{n:03d}" for n in range(100)]
    manifests = [
        {
            "apiVersion": "routeserver.dev/v1alpha1",
            "kind": "RouteServerPeer",
            "metadata": {"name": name},
            "spec": {"routeServerRef": {"name": "sess-rs"}, "peerAddress": "198.51.100.10", "peerASN": 65001},
        }
        for name in names
    ]
    api.apply(yaml.safe_dump_all(manifests))
    listed = json.loads(api.kubectl("get", "routeserverpeers", "-o", "json").stdout)["items"]
    uids = {o["metadata"]["name"]: o["metadata"]["uid"] for o in listed}
    writer = SessionWriter(kube, node, uids.get, min_interval=0.0)
    status = agent_status(node, {"sess-rs": [peer_view(name) for name in names]})
    try:
        started = time.perf_counter()
        await writer.publish(status)
        first = time.perf_counter() - started
        assert writer.writes == {"create": 100, "patch": 100}
        assert len(_objects(api, node)) == 100
        started = time.perf_counter()
        await writer.publish(status)
        unchanged = time.perf_counter() - started
        assert writer.writes == {"create": 100, "patch": 100}
        changed = agent_status(node, {"sess-rs": [peer_view(name, prefixes_received=9) for name in names]})
        started = time.perf_counter()
        await writer.publish(changed)
        patched = time.perf_counter() - started
        assert writer.writes == {"create": 100, "patch": 200}
        print(
            f"100 peers: first publish {first:.2f} s (200 writes), unchanged {unchanged * 1000:.1f} ms"
            f" (0 writes), all changed {patched:.2f} s (100 patches)"
        )
    finally:
        await writer.remove_all()
        api.kubectl("delete", "routeserverpeers", *names, "--wait=false", check=False)
    assert _objects(api, node) == {}
