"""SummaryWriter's scheduling and error handling with an in-memory API (the real API server is in
tests/integration/operator_status/test_summary_writer.py): a change inside the interval is written
when it ends, a burst of publishes is one deferred pass with the latest state, a lost Lease writes
nothing, errors are logged once per state and never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

from controller.operator.conditions import SummaryWriter
from controller.operator.kube import Kube
from controller.status import AgentStatus

STATUS = AgentStatus(node="node-a", version="test", started_at=0.0, healthy=True)
INTERVAL = 0.3
EVENTUALLY = 10.0


class FakeCustom:
    """The two CustomObjectsApi calls the writer makes, against dicts."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []
        self.patches: list[tuple[str, str, dict[str, Any], float]] = []
        self.fail_with: dict[str, Exception] = {}
        self.lists = 0

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **_: Any) -> dict[str, Any]:
        self.lists += 1
        return {"items": list(self.sessions)}

    def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        if name in self.fail_with:
            raise self.fail_with[name]
        self.patches.append((plural, name, body, time.monotonic()))
        return body


class FakeKube:
    def __init__(self) -> None:
        self.custom = FakeCustom()

    async def call(self, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args, **kwargs)


def session(node: str, peer: str, bgp: str = "Established", accepted: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{peer}.{node}"},
        "spec": {"node": node, "peerRef": {"name": peer}},
        "status": {"bgpState": bgp, "bfdState": "Up", "prefixesAccepted": accepted},
    }


def objects() -> dict[str, list[dict[str, Any]]]:
    ref = {"routeServerRef": {"name": "rs1"}}
    return {
        "routeservers": [{"metadata": {"name": "rs1", "resourceVersion": "1"}, "spec": {"asn": 64512}}],
        "routeserverpeers": [
            {"metadata": {"name": name, "resourceVersion": "1"}, "spec": {**ref, "peerASN": 65001}}
            for name in ("p1", "p2")
        ],
        "routetableassociations": [],
    }


def writer(kube: FakeKube, leading: list[bool]) -> SummaryWriter:
    return SummaryWriter(
        cast(Kube, kube), "node-a", lambda _: leading[0], objects, list, min_interval=INTERVAL
    )


async def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + EVENTUALLY
    while not predicate():
        assert time.monotonic() < deadline, "not reached"
        await asyncio.sleep(0.01)


def written(kube: FakeKube, name: str) -> list[dict[str, Any]]:
    return [body for _, patched, body, _ in kube.custom.patches if patched == name]


async def test_a_change_inside_the_interval_is_written_once_when_it_ends() -> None:
    kube = FakeKube()
    kube.custom.sessions = [session("node-a", "p1"), session("node-a", "p2")]
    sink = writer(kube, [True])
    try:
        await sink.publish(STATUS)
        assert sink.writes == {"RouteServer": 1, "RouteServerPeer": 2} and kube.custom.lists == 1
        start = time.monotonic()
        kube.custom.sessions = [session("node-a", "p1", "Idle"), session("node-a", "p2")]
        await sink.publish(STATUS)
        assert sink.deferred and sink.writes == {"RouteServer": 1, "RouteServerPeer": 2}
        await until(lambda: not sink.deferred)
        assert time.monotonic() - start >= INTERVAL * 0.9
        assert sink.writes == {"RouteServer": 2, "RouteServerPeer": 3} and kube.custom.lists == 2
        (_, last) = written(kube, "p1")
        ready = {c["type"]: c["status"] for c in last["status"]["conditions"]}
        assert ready["Ready"] == "False"
        assert len(written(kube, "p2")) == 1
    finally:
        await sink.close()


async def test_a_burst_of_publishes_is_one_deferred_pass_with_the_latest_state() -> None:
    kube = FakeKube()
    kube.custom.sessions = [session("node-a", "p1"), session("node-a", "p2")]
    sink = writer(kube, [True])
    try:
        await sink.publish(STATUS)
        for accepted in range(2, 52):
            kube.custom.sessions = [session("node-a", "p1", accepted=accepted), session("node-a", "p2")]
            await sink.publish(STATUS)
        await until(lambda: not sink.deferred)
        assert (sink.passes, kube.custom.lists) == (2, 2)
        assert [w["status"]["prefixesAccepted"] for w in written(kube, "p1")] == [1, 51]
    finally:
        await sink.close()


async def test_losing_the_lease_before_a_deferred_pass_writes_nothing() -> None:
    kube = FakeKube()
    kube.custom.sessions = [session("node-a", "p1"), session("node-a", "p2")]
    leading = [True]
    sink = writer(kube, leading)
    try:
        await sink.publish(STATUS)
        kube.custom.sessions = [session("node-a", "p1", "Idle"), session("node-a", "p2")]
        await sink.publish(STATUS)
        assert sink.deferred
        leading[0] = False
        await until(lambda: not sink.deferred)
        assert sum(sink.writes.values()) == 3 and kube.custom.lists == 1
    finally:
        await sink.close()


@pytest.mark.parametrize("status", [404, 409, 500])
async def test_errors_are_logged_once_per_state_and_never_raised(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube()
    kube.custom.sessions = [session("node-a", "p1"), session("node-a", "p2")]
    kube.custom.fail_with["p2"] = ApiException(status=status, reason="Nope")
    sink = writer(kube, [True])
    sink.min_interval = 0.0
    try:
        with caplog.at_level(logging.INFO, logger="controller.operator.conditions"):
            for _ in range(3):
                await sink.publish(STATUS)
            assert sink.failures == {"RouteServerPeer": 3}  # tried at every publish
            assert len([r for r in caplog.records if getattr(r, "fields", {}).get("object") == "p2"]) == 1
            del kube.custom.fail_with["p2"]
            await sink.publish(STATUS)
        assert sink.writes == {"RouteServer": 1, "RouteServerPeer": 2}
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events[-1] == "summary_write_recovered"
    finally:
        await sink.close()
