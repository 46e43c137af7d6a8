"""The session object's body from a PeerView, its name and labels, merge patches, and writing only
on change (the writer against an in-memory stand-in for the custom-objects API)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import pytest

from controller.operator.kube import Kube
from controller.operator.sessions import (
    NODE_LABEL,
    SessionWriter,
    label_value,
    merge_patch,
    session_name,
    session_object,
    session_status,
)
from controller.status import BfdView
from tests.controller.operator_status.builders import agent_status, peer_view

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def test_status_of_an_established_bfd_peer() -> None:
    assert session_status(peer_view("p1")) == {
        "bgpState": "Established",
        "bfdState": "Up",
        "establishedTime": "2023-11-14T22:13:20Z",
        "lastTransitionTime": "2023-11-14T22:13:20Z",
        "lastTransitionReason": "KeepaliveReceived",
        "establishedTransitions": 2,
        "negotiated": {
            "holdTimeSeconds": 90,
            "keepaliveTimeSeconds": 30,
            "peerRouterID": "10.0.0.2",
            "fourOctetASN": True,
            "addressFamilies": ["IPv4Unicast", "IPv6Unicast"],
            "addPathReceive": False,
            "gracefulRestart": False,
            "bfdTransmitIntervalMilliseconds": 300,
            "bfdDetectionTimeMilliseconds": 900,
        },
        "prefixesReceived": 5,
        "prefixesAccepted": 3,
        "prefixesRejected": 2,
        "prefixesInstalled": 3,
    }


def test_status_of_a_peer_that_is_down_leaves_out_what_only_a_session_has() -> None:
    peer = peer_view(
        "p1",
        bgp_state="Active",
        bfd=BfdView(state="Down", tx_interval_ms=1000.0),
        last_transition_reason="HoldTimerExpires",
        last_transition_detail="x" * 2000,
        prefixes_installed=None,
    )
    status = session_status(peer)
    assert status["bgpState"] == "Active"
    assert status["bfdState"] == "Down"
    assert "establishedTime" not in status
    assert "negotiated" not in status
    assert "prefixesInstalled" not in status
    assert status["lastTransitionReason"] == "HoldTimerExpires"
    assert len(status["lastTransitionMessage"]) == 1024


def test_values_the_crd_would_refuse_are_left_out() -> None:
    peer = peer_view("p1", bfd=BfdView(state="-"), last_transition_reason="not camel", bgp_state="Weird")
    status = session_status(peer)
    assert "bgpState" not in status
    assert "bfdState" not in status
    assert "lastTransitionReason" not in status


def test_a_held_idle_peer_says_why_in_the_message() -> None:
    peer = peer_view("p1", bgp_state="Idle", held_idle_reason="MaxPrefixes", last_transition_detail="")
    assert session_status(peer)["lastTransitionMessage"] == "held Idle (MaxPrefixes)"


def test_name_is_peer_dot_node() -> None:
    assert session_name("peer-a", "node-1.example.com") == "peer-a.node-1.example.com"


@pytest.mark.parametrize(
    ("peer", "node"), [("p" * 200, "n" * 200), ("a" * 252, "b"), ("ab-" * 80 + "c", "b." * 60 + "c")]
)
def test_long_names_are_truncated_with_a_hash_and_stay_valid_and_distinct(peer: str, node: str) -> None:
    name = session_name(peer, node)
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name), name
    assert name == session_name(peer, node)
    assert name != session_name(peer, node + "x")


def test_long_label_values_are_truncated_with_a_hash() -> None:
    value = label_value("node-" + "x" * 100 + ".example.com")
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)
    assert label_value("node-1") == "node-1"


def test_object_has_spec_labels_and_a_non_blocking_owner_reference() -> None:
    body = session_object("p1.n1", "n1", "p1", "rs", "uid-1")
    assert body["spec"] == {"node": "n1", "peerRef": {"name": "p1"}}
    assert body["metadata"]["labels"] == {
        "routeserver.dev/node": "n1",
        "routeserver.dev/peer": "p1",
        "routeserver.dev/route-server": "rs",
    }
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "routeserver.dev/v1alpha1",
            "kind": "RouteServerPeer",
            "name": "p1",
            "uid": "uid-1",
            "blockOwnerDeletion": False,
        }
    ]


def test_merge_patch_sends_only_changes_and_nulls_for_removed_fields() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1], "gone": 3}
    new = {"a": 1, "b": {"x": 1, "y": 3}, "c": [1, 2], "new": {"z": 1}}
    assert merge_patch(old, new) == {"b": {"y": 3}, "c": [1, 2], "gone": None, "new": {"z": 1}}
    assert merge_patch(new, new) == {}
    assert merge_patch(None, {"a": 1}) == {"a": 1}
    assert merge_patch({"b": {"x": 1}}, {}) == {"b": None}


# -- the writer against an in-memory custom-objects API ------------------------------------------


class MemoryObjects:
    """create/get/list/patch-status/delete of cluster-scoped objects, in a dict; calls recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def _api_error(self, status: int) -> Exception:
        from kubernetes.client.exceptions import ApiException

        return ApiException(status=status, reason="Conflict" if status == 409 else "NotFound")

    def create_cluster_custom_object(self, group: str, version: str, plural: str, body: Any, **_: Any) -> Any:
        self.calls.append("create")
        name = body["metadata"]["name"]
        if name in self.objects:
            raise self._api_error(409)
        self.objects[name] = {**body, "status": {}}
        return body

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **_: Any) -> Any:
        self.calls.append("get")
        if name not in self.objects:
            raise self._api_error(404)
        return self.objects[name]

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kwargs: Any) -> Any:
        self.calls.append("list")
        key, _, value = kwargs["label_selector"].partition("=")
        return {"items": [o for o in self.objects.values() if o["metadata"]["labels"].get(key) == value]}

    def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Any, **_: Any
    ) -> Any:
        self.calls.append("patch")
        if name not in self.objects:
            raise self._api_error(404)
        status = self.objects[name]["status"]
        for key, value in body["status"].items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        return self.objects[name]

    def delete_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **_: Any) -> Any:
        self.calls.append("delete")
        if self.objects.pop(name, None) is None:
            raise self._api_error(404)
        return {}


class MemoryKube:
    def __init__(self) -> None:
        self.custom = MemoryObjects()

    async def call(self, what: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def _writer(uids: dict[str, str], min_interval: float = 1.0) -> tuple[SessionWriter, MemoryObjects]:
    kube = MemoryKube()
    return SessionWriter(cast(Kube, kube), "n1", uids.get, min_interval=min_interval), kube.custom


async def test_the_same_status_again_writes_nothing() -> None:
    writer, api = _writer({"p1": "u1"})
    await writer.publish(agent_status("n1", {"rs": [peer_view("p1")]}))
    assert writer.writes == {"create": 1, "patch": 1}
    stored = api.objects["p1.n1"]
    assert stored["metadata"]["labels"][NODE_LABEL] == "n1"
    assert stored["status"]["prefixesAccepted"] == 3
    assert "lastUpdateTime" in stored["status"]
    await writer.publish(agent_status("n1", {"rs": [peer_view("p1", uptime_seconds=99.0)]}))
    assert writer.writes == {"create": 1, "patch": 1}
    assert api.calls == ["list", "create", "patch"]


async def test_a_peer_without_a_known_uid_is_skipped_until_it_is_known() -> None:
    uids: dict[str, str] = {}
    writer, api = _writer(uids)
    status = agent_status("n1", {"rs": [peer_view("p1")]})
    await writer.publish(status)
    assert api.objects == {}
    uids["p1"] = "u1"
    await writer.publish(status)
    assert list(api.objects) == ["p1.n1"]


async def test_a_change_inside_the_interval_is_written_when_it_ends() -> None:
    writer, api = _writer({"p1": "u1"}, min_interval=0.3)
    await writer.publish(agent_status("n1", {"rs": [peer_view("p1")]}))
    for count in range(10, 20):
        await writer.publish(agent_status("n1", {"rs": [peer_view("p1", prefixes_received=count)]}))
    assert writer.writes["patch"] == 1
    for _ in range(100):
        if api.objects["p1.n1"]["status"]["prefixesReceived"] == 19:
            break
        await asyncio.sleep(0.05)
    assert api.objects["p1.n1"]["status"]["prefixesReceived"] == 19
    assert writer.writes["patch"] == 2
    await writer.close()


async def test_an_existing_object_is_adopted_and_one_of_a_gone_peer_deleted() -> None:
    writer, api = _writer({"p1": "u1", "p2": "u2"})
    await writer.publish(agent_status("n1", {"rs": [peer_view("p1"), peer_view("p2")]}))
    restarted, _ = _writer({"p1": "u1", "p2": "u2"})
    restarted.kube = writer.kube  # a new run of the agent, same API
    await restarted.publish(agent_status("n1", {"rs": [peer_view("p1", prefixes_accepted=4)]}))
    assert restarted.writes == {"patch": 1, "delete": 1}
    assert list(api.objects) == ["p1.n1"]
    assert api.objects["p1.n1"]["status"]["prefixesAccepted"] == 4


async def test_an_object_created_meanwhile_is_adopted_on_conflict() -> None:
    writer, api = _writer({"p1": "u1"})
    await writer.publish(agent_status("n1", {"rs": []}))  # listed: nothing yet
    api.objects["p1.n1"] = {**session_object("p1.n1", "n1", "p1", "rs", "u1"), "status": {}}
    await writer.publish(agent_status("n1", {"rs": [peer_view("p1")]}))
    assert api.calls == ["list", "create", "get", "patch"]
    assert writer.writes == {"patch": 1}
    assert api.objects["p1.n1"]["status"]["bgpState"] == "Established"


async def test_errors_are_logged_once_and_retried_at_the_next_publish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer, api = _writer({"p1": "u1"})
    failing = api.create_cluster_custom_object

    def refuse(*args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        raise ApiException(status=500, reason="Internal")

    api.create_cluster_custom_object = refuse  # type: ignore[method-assign]
    status = agent_status("n1", {"rs": [peer_view("p1")]})
    for _ in range(3):
        await writer.publish(status)
    failures = [r for r in caplog.records if getattr(r, "event", None) == "session_write_failed"]
    assert len(failures) == 1
    api.create_cluster_custom_object = failing  # type: ignore[method-assign]
    await writer.publish(status)
    assert api.objects["p1.n1"]["status"]["prefixesReceived"] == 5
    assert writer.writes == {"create": 1, "patch": 1}
