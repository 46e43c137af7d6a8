"""KubeEventSink against a real kube-apiserver, as a ServiceAccount holding only the chart's rule
for Events: Events land on the right object, repeats become one Event's series, writes are
rate-limited, a burst never blocks emit() and drops beyond the queue, API errors never reach emit().
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import events as ev
from controller.operator.kube import Kube
from controller.operator.kube_events import AGGREGATION_WINDOW, KubeEventSink, describe
from tests.controller.operator_status.test_kube_event_body import CASES
from tests.support.apiserver import ApiServer
from tests.support.crd_cases import install_crds

pytestmark = pytest.mark.apiserver

CLUSTER_ROLE = Path(__file__).parents[3] / "charts/kube-route-server/templates/clusterrole.yaml"
SERVER = "kev-server"
ASSOCIATION = "kev-assoc"
BURST_PEERS = [f"kev-burst-{i:02d}" for i in range(20)]
PEERS = [
    "kev-down",
    "kev-repeat",
    "kev-spread",
    "kev-rate",
    "kev-denied",
    "kev-gone",
    "kev-window",
    *BURST_PEERS,
]
SA_NAMESPACE = "krs-events"


def _chart_event_rule() -> dict[str, Any]:
    """The one rule of the agent's ClusterRole that covers Events (template lines left out)."""
    text = "\n".join(line for line in CLUSTER_ROLE.read_text().splitlines() if "{{" not in line)
    rules = yaml.safe_load(text)["rules"]
    matching = [rule for rule in rules if "events" in rule["resources"]]
    assert len(matching) == 1, matching
    rule = dict(matching[0])
    assert sorted(rule["verbs"]) == ["create", "patch"] and set(rule["apiGroups"]) == {"events.k8s.io"}
    return rule


def _objects() -> list[dict[str, Any]]:
    server = {"kind": "RouteServer", "metadata": {"name": SERVER}, "spec": {"asn": 64512}}
    peers = [
        {
            "kind": "RouteServerPeer",
            "metadata": {"name": name},
            "spec": {
                "routeServerRef": {"name": SERVER},
                "peerAddress": f"198.51.100.{10 + i}",
                "peerASN": 65001,
            },
        }
        for i, name in enumerate(PEERS)
    ]
    association = {
        "kind": "RouteTableAssociation",
        "metadata": {"name": ASSOCIATION},
        "spec": {"routeServerRef": {"name": SERVER}, "target": {"node": {"table": 100}}},
    }
    return [{"apiVersion": "routeserver.dev/v1alpha1", **o} for o in (server, *peers, association)]


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> Iterator[ApiServer]:
    install_crds(apiserver)
    manifest = yaml.safe_dump_all(_objects())
    apiserver.apply(manifest)
    yield apiserver
    apiserver.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=manifest, check=False)


@pytest.fixture(scope="module")
def uids(api: ApiServer) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for plural in ("routeservers", "routeserverpeers", "routetableassociations"):
        listed = json.loads(api.kubectl("get", f"{plural}.routeserver.dev", "-o", "json").stdout)
        for item in listed["items"]:
            found[(item["kind"], item["metadata"]["name"])] = item["metadata"]["uid"]
    return found


@pytest.fixture(scope="module")
def agent_kubeconfig(api: ApiServer) -> Path:
    """A ServiceAccount bound (ClusterRoleBinding) to a ClusterRole with exactly the chart's Event rule."""
    api.create_service_account(SA_NAMESPACE, "agent")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kev-agent-events"},
        "rules": [_chart_event_rule()],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kev-agent-events"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kev-agent-events",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": SA_NAMESPACE}],
    }
    api.apply(yaml.safe_dump_all([role, binding]))
    return api.kubeconfig_for_token(api.token_for(SA_NAMESPACE, "agent"), "kev-agent")


@pytest.fixture
def kube(agent_kubeconfig: Path) -> Iterator[Kube]:
    client = Kube.from_environment(str(agent_kubeconfig))
    yield client
    client.close()


def _events_about(api: ApiServer, name: str) -> list[dict[str, Any]]:
    listed = api.kubectl(
        "get",
        "events.events.k8s.io",
        "-n",
        "default",
        "--field-selector",
        f"regarding.name={name}",
        "-o",
        "json",
    )
    return list(json.loads(listed.stdout)["items"])


def _down(peer: str, detail: str = "hold timer expired") -> ev.BgpSessionDown:
    return ev.BgpSessionDown(SERVER, peer, "198.51.100.10", "Established", "HoldTimerExpired", "4/0", detail)


def _sink(kube: Kube, uids: dict[tuple[str, str], str], **kwargs: Any) -> KubeEventSink:
    return KubeEventSink(kube, "node-a", uid_of=lambda kind, name: uids.get((kind, name)), **kwargs)


async def _until(condition: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_session_down_is_an_event_on_the_peer(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids)
    sink.start()
    sink.emit(_down("kev-down"))
    await sink.stop()
    assert (sink.written, sink.failed, sink.dropped) == (1, 0, 0)

    (event,) = _events_about(api, "kev-down")
    assert event["regarding"] == {
        "apiVersion": "routeserver.dev/v1alpha1",
        "kind": "RouteServerPeer",
        "name": "kev-down",
        "uid": uids[("RouteServerPeer", "kev-down")],
    }
    assert (event["reason"], event["type"], event["action"]) == (
        "BGPSessionDown",
        "Warning",
        "BgpSessionDown",
    )
    assert event["reportingController"] == "routeserver.dev/agent" and event["reportingInstance"] == "node-a"
    assert "HoldTimerExpired" in event["note"] and "series" not in event
    # The core/v1 view that `kubectl get events` and `kubectl describe` show.
    core = api.kubectl(
        "get", "events", "-n", "default", "--field-selector", "involvedObject.name=kev-down", "-o", "json"
    )
    (legacy,) = json.loads(core.stdout)["items"]
    assert legacy["involvedObject"]["kind"] == "RouteServerPeer" and legacy["reason"] == "BGPSessionDown"
    table = api.kubectl("get", "events", "-n", "default", "--field-selector", "involvedObject.name=kev-down")
    assert "BGPSessionDown" in table.stdout and "routeserverpeer/kev-down" in table.stdout.lower()


async def test_a_hundred_repeats_are_one_event_with_a_series(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids)
    sink.start()
    sink.emit(_down("kev-repeat"))
    await _until(lambda: sink.written == 1)
    for _ in range(99):
        sink.emit(_down("kev-repeat"))
    await sink.stop()

    (event,) = _events_about(api, "kev-repeat")
    assert event["series"]["count"] == 100
    assert event["series"]["lastObservedTime"] >= event["eventTime"]
    assert sink.aggregated == 99 and sink.failed == 0
    assert kube.request_counts()["events"] == sink.written == 2  # one create, one series patch


async def test_repeats_spread_over_time_keep_patching_the_same_event(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids)
    sink.start()
    for _ in range(10):
        for _ in range(10):
            sink.emit(_down("kev-spread"))
        await asyncio.sleep(0.05)
    await sink.stop()

    (event,) = _events_about(api, "kev-spread")
    assert event["series"]["count"] == 100
    writes = kube.request_counts()["events"]
    assert writes == sink.written <= 11 and sink.failed == 0
    print(f"\n100 repeats in 10 batches: {writes} API writes")


async def test_writes_are_rate_limited_by_the_token_bucket(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    burst, per_second, total = 5, 10.0, 40
    sink = _sink(kube, uids, burst=burst, per_second=per_second)
    sink.start()
    started = time.monotonic()
    for i in range(total):
        sink.emit(_down("kev-rate", f"attempt {i}"))  # distinct notes: 40 Events
    most_ahead = 0.0
    while sink.written < total:
        elapsed = time.monotonic() - started
        # The bucket allows burst + per_second * elapsed writes; never more, however fast the server.
        most_ahead = max(most_ahead, sink.written - (burst + per_second * elapsed))
        assert sink.written <= burst + per_second * elapsed + 1
        assert elapsed < 60, sink.written
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await sink.stop()
    assert elapsed >= (total - burst) / per_second * 0.9
    assert len(_events_about(api, "kev-rate")) == total
    print(f"\n{total} Events at burst {burst}, {per_second}/s: {elapsed:.2f}s (bucket minimum 3.5s)")


async def test_a_burst_of_2000_never_blocks_emit_and_drops_beyond_the_queue(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids)  # queue of 1000, burst 25, 5/s
    sink.start()
    durations = []
    for i in range(2000):
        event = _down(BURST_PEERS[i % len(BURST_PEERS)])
        begin = time.perf_counter()
        sink.emit(event)
        durations.append(time.perf_counter() - begin)
    assert sink.dropped == 1000  # nothing ran between the emits: the queue took exactly 1000
    await sink.stop()
    assert sink.dropped == 1000 and sink.failed == 0
    assert sink.written == len(BURST_PEERS)  # 20 keys, each one Event, within the burst

    recorded = 0
    for peer in BURST_PEERS:
        (stored,) = _events_about(api, peer)
        recorded += stored.get("series", {}).get("count", 1)
    assert recorded == 1000
    durations.sort()
    print(
        f"\n2000 emits: total {sum(durations) * 1e3:.2f} ms, median {durations[1000] * 1e6:.1f} us, "
        f"p99 {durations[1980] * 1e6:.1f} us, max {durations[-1] * 1e6:.1f} us; "
        f"dropped {sink.dropped}, API writes {kube.request_counts()['events']}"
    )


async def test_every_mapped_event_is_accepted_by_the_api_server(api: ApiServer, kube: Kube) -> None:
    sink = KubeEventSink(kube, "node-a")
    sink.start()
    for case in CASES:
        sink.emit(case[0])
    await sink.stop()
    keys = {spec.key for case in CASES if (spec := describe(case[0])) is not None}
    assert (sink.written, sink.failed) == (len(keys), 0)
    reasons = {e["reason"] for name in ("rs-a", "peer-a", "assoc-a") for e in _events_about(api, name)}
    assert reasons == {case[3] for case in CASES}


async def test_api_errors_are_counted_logged_once_and_never_raised(
    api: ApiServer, uids: dict[tuple[str, str], str], caplog: pytest.LogCaptureFixture
) -> None:
    api.create_service_account(SA_NAMESPACE, "no-rights")
    kubeconfig = api.kubeconfig_for_token(api.token_for(SA_NAMESPACE, "no-rights"), "kev-no-rights")
    kube = Kube.from_environment(str(kubeconfig))
    try:
        sink = _sink(kube, uids)
        sink.start()
        with caplog.at_level(logging.WARNING, logger="controller.operator.kube_events"):
            for i in range(5):
                sink.emit(_down("kev-denied", f"attempt {i}"))  # returns: the write fails later
            await sink.stop()
        assert (sink.written, sink.failed) == (0, 5)
        warnings = [r for r in caplog.records if r.name == "controller.operator.kube_events"]
        assert len(warnings) == 1 and "403" in warnings[0].getMessage()
    finally:
        kube.close()
    assert _events_about(api, "kev-denied") == []


async def test_stop_gives_up_after_its_bound_and_counts_the_rest_as_dropped(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids, burst=1, per_second=1.0)
    sink.start()
    for i in range(100):
        sink.emit(_down("kev-rate", f"slow {i}"))  # 100 Events at 1/s: more than stop() waits for
    begun = time.monotonic()
    await sink.stop()
    waited = time.monotonic() - begun
    assert 0 < sink.written < 100 and sink.failed == 0
    assert sink.written + sink.dropped == 100
    assert waited < 30  # bounded (5 s, generous margin for a loaded machine)
    print(f"\nstop(): waited {waited:.2f}s, wrote {sink.written}, dropped {sink.dropped}")


async def test_a_repeat_after_its_event_was_deleted_creates_a_new_event(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    sink = _sink(kube, uids)
    sink.start()
    sink.emit(_down("kev-gone"))
    await _until(lambda: sink.written == 1)
    (first,) = _events_about(api, "kev-gone")
    api.kubectl("delete", "events.events.k8s.io", "-n", "default", first["metadata"]["name"])  # as if expired
    sink.emit(_down("kev-gone"))
    await sink.stop()
    (second,) = _events_about(api, "kev-gone")
    assert second["metadata"]["name"] != first["metadata"]["name"] and "series" not in second
    assert (sink.written, sink.failed) == (2, 0)
    assert kube.request_counts()["events"] == 3  # create, the patch that found nothing, create


async def test_a_repeat_after_the_aggregation_window_is_a_new_event(
    api: ApiServer, kube: Kube, uids: dict[tuple[str, str], str]
) -> None:
    now = [1000.0]
    sink = _sink(kube, uids, clock=lambda: now[0])  # the bucket's burst of 25 covers both writes
    sink.start()
    sink.emit(_down("kev-window"))
    await _until(lambda: sink.written == 1)
    now[0] += AGGREGATION_WINDOW - 1
    sink.emit(_down("kev-window"))
    await _until(lambda: sink.written == 2)
    now[0] += AGGREGATION_WINDOW + 1
    sink.emit(_down("kev-window"))
    await sink.stop()
    counts = sorted(e.get("series", {}).get("count", 1) for e in _events_about(api, "kev-window"))
    assert counts == [1, 2]  # within the window: a series of 2; after it: a new Event
    assert kube.request_counts()["events"] == sink.written == 3
