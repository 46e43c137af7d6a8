"""`routeserver agent` on two "nodes" against a real API server, with BIRD and FRR appliances.

The chart is installed with `helm`; each agent runs in its node's namespace with the chart's
ServiceAccount token (exactly the chart's RBAC); the route server objects are applied with
`kubectl`. fw-a (BIRD, AS 65001) and fw-b (FRR, AS 65002, the VIP prepended twice) peer with both
nodes over BGP + BFD 100 ms x 3; node-a and node-b install the VIP in table 100.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.operator.conditions import NODE_CHECK_INTERVAL
from tests.support.netns import Lab, wait_until
from tests.support.operator_lab import (
    VIP,
    AgentProcess,
    Cluster,
    TwoNodes,
    kopf_traces,
    running,
)
from tests.support.route_server import PeerSpec, ServerSpec, kernel_routes

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.apiserver, pytest.mark.slow]

ENDPOINT = "routeserver.dev/endpoint"
SPEC = ServerSpec(
    (PeerSpec("fw-a", "10.0.1.11", 65001), PeerSpec("fw-b", "10.0.1.12", 65002)),
    node_selector={ENDPOINT: "true"},
)
NODE_LABELS = {"node-a": {ENDPOINT: "true", "zone": "a"}, "node-b": {ENDPOINT: "true", "zone": "b"}}
FW_A, FW_B = "10.0.1.11", "10.0.1.12"
DETECTION = 0.3  # 100 ms x 3


@pytest.fixture
def setup(lab: Lab, cluster: Cluster) -> Iterator[TwoNodes]:
    with running(lab, cluster, SPEC, NODE_LABELS) as nodes:
        yield nodes


def _vip(agent: AgentProcess) -> set[str] | None:
    return kernel_routes(agent.host, 100).get(VIP)


def _sessions(cluster: Cluster) -> dict[tuple[str, str], str]:
    """(node, peer) -> BGP state of every RouteServerSession object."""
    return {
        (o["spec"]["node"], o["spec"]["peerRef"]["name"]): (o.get("status") or {}).get("bgpState", "")
        for o in cluster.items("routeserversessions")
    }


_SUMMARY_UP = {
    "vip": ("True", "False", 2, 2),
    "fw-a": ("True", "False", 2, 2),
    "fw-b": ("True", "False", 2, 2),
    "vip-table": ("True", "False", 1, 1),
}


def _summary(cluster: Cluster) -> dict[str, tuple[object, ...]]:
    """name -> (Ready, Degraded, and two counts) of the route server, peers and association."""
    counts = {
        "routeservers": ("endpoints", "peersUp"),
        "routeserverpeers": ("sessions", "sessionsEstablished"),
        "routetableassociations": ("targets", "routesInstalled"),
    }
    out: dict[str, tuple[object, ...]] = {}
    for resource, (first, second) in counts.items():
        for obj in cluster.items(resource):
            status = obj.get("status") or {}
            state = {c["type"]: c["status"] for c in status.get("conditions") or ()}
            out[obj["metadata"]["name"]] = (
                state.get("Ready"),
                state.get("Degraded"),
                status.get(first),
                status.get(second),
            )
    return out


def _events(cluster: Cluster, regarding: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.items(
            "events.events.k8s.io", "-n", "default", f"--field-selector=regarding.name={regarding}"
        )
        if e.get("reason") == reason
    ]


def _wait_events(cluster: Cluster, regarding: str, reason: str, nodes: set[str]) -> list[dict[str, Any]]:
    """Until an Event with `reason` on `regarding` exists from each node; returns them."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = _events(cluster, regarding, reason)
        return {e.get("reportingInstance") for e in found} >= nodes

    wait_until(seen, 20, what=f"{reason} Events on {regarding} from {sorted(nodes)}")
    return found


def _wait_vip_on(agent: AgentProcess, hops: set[str] | None, timeout: float, what: str) -> None:
    agent.wait(lambda: _vip(agent) == hops, timeout, what)


def _wait_vip(setup: TwoNodes, hops: set[str] | None, timeout: float, what: str) -> None:
    setup.wait_all(lambda a: _vip(a) == hops, timeout, what)


class Sampler:
    """Reads the VIP route of every node every 20 ms on a thread; counts samples without it."""

    def __init__(self, setup: TwoNodes) -> None:
        self.setup = setup
        self.samples = 0
        self.missing: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, agent in self.setup.agents.items():
                if not _vip(agent):
                    self.missing.append((name, time.time()))
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_both_nodes_route_the_vip_fail_over_and_follow_the_objects(setup: TwoNodes, cluster: Cluster) -> None:
    setup.wait_all(
        lambda a: all(p["bgp_state"] == "Established" for p in a.peers().values()),
        60,
        "both sessions Established",
    )
    _wait_vip(setup, {FW_A}, 30, "the VIP via fw-a")
    for agent in setup.agents.values():
        agent.wait_bfd_up(["fw-a", "fw-b"], 20)
    columns = cluster.kubectl(
        "get", "routeservers,routeserverpeers,routetableassociations,routeserversessions"
    )
    assert "fw-a" in columns and "vip-table" in columns
    # One session object per node x peer, written by that node's agent, owned by the peer.
    four = {(node, peer): "Established" for node in NODE_LABELS for peer in ("fw-a", "fw-b")}
    wait_until(lambda: _sessions(cluster) == four, 20, what="four Established session objects")
    wait_until(
        lambda: all(
            (o["status"].get("bfdState"), o["status"].get("prefixesAccepted")) == ("Up", 1)
            for o in cluster.items("routeserversessions")
        ),
        20,
        what="every session object with BFD Up and the VIP accepted",
    )
    for obj in cluster.items("routeserversessions"):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("RouteServerPeer", obj["spec"]["peerRef"]["name"])
    table = cluster.kubectl("get", "routeserversessions")
    assert table.split("\n")[0].split()[:6] == ["NAME", "NODE", "PEER", "BGP", "BFD", "ACCEPTED"], table
    # The Lease holder (one of the nodes) writes the summary status of every object.
    wait_until(lambda: _summary(cluster) == _SUMMARY_UP, 30, what="the summary status of every object")
    (server,) = cluster.items("routeservers")
    assert server["status"]["leaseHolder"] in NODE_LABELS

    # Freeze the active appliance: both nodes move the VIP to fw-b within detection + a margin.
    frozen = time.monotonic()
    setup.lab.hosts["fw-a"].freeze()
    _wait_vip(setup, {FW_B}, 5, "the VIP via fw-b after freezing fw-a")
    took = time.monotonic() - frozen
    assert took < DETECTION + 2.0, f"failover took {took:.3f} s"
    setup.lab.hosts["fw-a"].unfreeze()
    # One Event per state change, from each node: BFD down on the peer, the failover on the server.
    _wait_events(cluster, "fw-a", "BFDDown", {"node-a", "node-b"})
    failovers = _wait_events(cluster, "vip", "Failover", {"node-a", "node-b"})
    assert all("to [10.0.1.12]" in e["note"] for e in failovers), failovers
    _wait_vip(setup, {FW_A}, 40, "the VIP back via fw-a")

    # node-b leaves the nodeSelector: it withdraws; node-a keeps routing.
    cluster.label("node", "node-b", f"{ENDPOINT}=false")
    setup.agents["node-b"].wait(lambda: _vip(setup.agents["node-b"]) is None, 15, "node-b withdrew")
    assert _vip(setup.agents["node-a"]) == {FW_A}
    wait_until(lambda: {n for n, _ in _sessions(cluster)} == {"node-a"}, 20, what="node-b's sessions gone")
    cluster.label("node", "node-b", f"{ENDPOINT}=true")
    setup.agents["node-b"].wait(lambda: _vip(setup.agents["node-b"]) == {FW_A}, 40, "node-b joined again")

    # Delete the active peer: both nodes route via fw-b; the other session is not touched.
    established = {n: a.peer("fw-b")["established_count"] for n, a in setup.agents.items()}
    cluster.kubectl("delete", "routeserverpeer", "fw-a")
    _wait_vip(setup, {FW_B}, 15, "the VIP via fw-b after deleting peer fw-a")
    for name, agent in setup.agents.items():
        assert "fw-a" not in agent.peers()
        assert agent.peer("fw-b")["established_count"] == established[name]
    wait_until(lambda: {p for _, p in _sessions(cluster)} == {"fw-b"}, 30, what="fw-a's sessions gone")
    assert [o["metadata"]["name"] for o in cluster.items("routeserversessions")
            if o["metadata"].get("deletionTimestamp")] == []  # fmt: skip

    # kopf wrote nothing on our objects.
    for resource in ("routeservers", "routeserverpeers", "routetableassociations"):
        for obj in cluster.items(resource):
            assert kopf_traces(obj) == [], f"{resource}/{obj['metadata']['name']}"


def test_sigterm_and_sigkill_of_an_agent_keep_the_vip_without_persist_routes(setup: TwoNodes) -> None:
    setup.wait_all(
        lambda a: all(p["bgp_state"] == "Established" for p in a.peers().values()),
        60,
        "both sessions Established",
    )
    _wait_vip(setup, {FW_A}, 30, "the VIP via fw-a")
    with Sampler(setup) as sampler:
        for agent in setup.agents.values():  # a rolling update: one node after the other
            assert agent.terminate() == 0, agent.log()
            agent.start()
            agent.wait_established(["fw-a", "fw-b"], 60)
        agent = setup.agents["node-a"]
        assert agent.proc is not None
        agent.kill()
        agent.start()
        agent.wait_established(["fw-a", "fw-b"], 60)
    assert sampler.samples > 50
    logs = "\n".join(
        f"{name} {log.name}: {line}"
        for name, agent in setup.agents.items()
        for log in sorted(agent.host.workdir.glob("agent*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if any(w in line for w in ("table", "deferral", "adopt", "withdr", "stopping", "started"))
    )
    assert sampler.missing == [], f"VIP missing in {sampler.missing} of {sampler.samples} samples\n{logs}"


def test_deleting_the_route_server_withdraws_on_every_node(setup: TwoNodes, cluster: Cluster) -> None:
    _wait_vip(setup, {FW_A}, 60, "the VIP via fw-a")
    cluster.kubectl("delete", "routetableassociation", "vip-table")
    _wait_vip(setup, None, 15, "the VIP withdrawn")
    for agent in setup.agents.values():
        assert agent.healthz() == 200
        assert agent.route_server()["tables"] == []


def test_a_peer_deleted_while_an_agent_is_down_is_gone_when_it_returns(
    setup: TwoNodes, cluster: Cluster
) -> None:
    setup.wait_all(lambda a: all(p["bgp_state"] == "Established" for p in a.peers().values()), 60,
                   "both sessions Established")  # fmt: skip
    _wait_vip(setup, {FW_A}, 30, "the VIP via fw-a")
    node_b = setup.agents["node-b"]
    assert node_b.terminate() == 0  # SIGTERM: node-b's routes stay for the next agent
    assert _vip(node_b) == {FW_A}
    cluster.kubectl("delete", "routeserverpeer", "fw-a")
    _wait_vip_on(setup.agents["node-a"], {FW_B}, 15, "node-a moved to fw-b")
    node_b.start()
    _wait_vip_on(node_b, {FW_B}, 30, "node-b, started again, routes via fw-b only")
    assert set(node_b.peers()) == {"fw-b"}
    wait_until(lambda: {p for _, p in _sessions(cluster)} == {"fw-b"}, 30, what="fw-a's sessions gone")


def test_healthz_fails_while_the_watches_are_stale_and_recovers(setup: TwoNodes) -> None:
    node_b = setup.agents["node-b"]
    node_b.extra_args = ["--stale-after", "6"]
    assert node_b.terminate() == 0
    node_b.start()
    node_b.wait(lambda: node_b.healthz() == 200, 30, "healthy")
    node_b.relay.pause()  # every request of node-b hangs
    try:
        node_b.wait(lambda: node_b.healthz() == 503, 20, "/healthz failing on stale watches")
    finally:
        node_b.relay.resume()
    node_b.wait(lambda: node_b.healthz() == 200, 20, "/healthz recovered")
    assert node_b.proc is not None and node_b.proc.alive()


def test_killing_the_lease_holder_hands_the_summary_to_the_other_node(
    setup: TwoNodes, cluster: Cluster
) -> None:
    def holder() -> str | None:
        rs = cluster.get("routeserver", "vip") or {}
        value = (rs.get("status") or {}).get("leaseHolder")
        return str(value) if value else None

    wait_until(
        lambda: holder() in NODE_LABELS and _summary(cluster) == _SUMMARY_UP, 60, what="a summary writer"
    )
    first = holder()
    assert first is not None
    (other,) = set(NODE_LABELS) - {first}
    killed = setup.agents[first]
    killed.kill()  # SIGKILL: no release; the other node waits out the lease (15 s)
    started = time.monotonic()
    wait_until(lambda: holder() == other, 15 + 5, what=f"{other} writing the summary within the lease")
    print(f"\nsummary taken over {time.monotonic() - started:.1f} s after the holder was killed")
    assert _vip(killed) == {FW_A}  # the killed agent's routes stay in its table
    killed.start()
    killed.wait_established(["fw-a", "fw-b"], 60)
    assert holder() == other  # the restarted agent does not take the Lease back


def test_changing_a_peers_bfd_profile_and_timers_touches_only_that_session(
    setup: TwoNodes, cluster: Cluster
) -> None:
    setup.wait_all(lambda a: all(p["bgp_state"] == "Established" for p in a.peers().values()), 60,
                   "both sessions Established")  # fmt: skip
    for agent in setup.agents.values():
        agent.wait_bfd_up(["fw-a", "fw-b"], 20)

    def counts() -> dict[str, tuple[int, int, int, int]]:
        out = {}
        for name, agent in setup.agents.items():
            peers = agent.peers()
            out[name] = (
                peers["fw-a"]["established_count"],
                peers["fw-a"]["bfd"]["down_count"],
                peers["fw-b"]["established_count"],
                peers["fw-b"]["bfd"]["down_count"],
            )
        return out

    before = counts()
    # BFD intervals: changed live through Poll/Final (RFC 5880 §6.8.3), no session flaps.
    bfd = '{"spec":{"bfd":{"minTxIntervalMilliseconds":200,"minRxIntervalMilliseconds":200}}}'
    cluster.kubectl("patch", "routeserverpeer", "fw-b", "--type", "merge", "-p", bfd)
    setup.wait_all(lambda a: a.peer("fw-b")["bfd"]["min_tx_ms"] == 200, 20, "fw-b's BFD at 200 ms")
    assert counts() == before, "a BFD interval change flapped a session"
    # Hold time: negotiated in OPEN, so fw-b's session restarts; fw-a's is not touched.
    timers = '{"spec":{"timers":{"holdTimeSeconds":6}}}'
    cluster.kubectl("patch", "routeserverpeer", "fw-b", "--type", "merge", "-p", timers)
    setup.wait_all(
        lambda a: (
            a.peer("fw-b")["bgp_state"] == "Established"
            and (a.peer("fw-b").get("negotiated") or {}).get("hold_time") == 6
        ),  # min(ours 6, FRR's 9)
        40,
        "fw-b re-established with the new hold time",
    )
    after = counts()
    for name in setup.agents:
        assert after[name][:2] == before[name][:2], f"{name}: fw-a was touched"


def test_the_lease_holder_deletes_the_sessions_of_a_node_that_was_deleted(
    setup: TwoNodes, cluster: Cluster
) -> None:
    four = {(node, peer): "Established" for node in NODE_LABELS for peer in ("fw-a", "fw-b")}
    wait_until(lambda: _sessions(cluster) == four, 60, what="four Established session objects")
    assert setup.agents["node-b"].terminate() == 0  # released its Lease, if it held it
    wait_until(
        lambda: (
            ((cluster.get("routeserver", "vip") or {}).get("status") or {}).get("leaseHolder") == "node-a"
        ),
        20,
        what="node-a writing the summary",
    )
    cluster.kubectl("delete", "node", "node-b")
    # The holder looks a node up at most every NODE_CHECK_INTERVAL (60 s), at a publish (<= 10 s).
    bound = NODE_CHECK_INTERVAL + 10 + 15
    wait_until(
        lambda: {n for n, _ in _sessions(cluster)} == {"node-a"}, bound, what="node-b's sessions deleted"
    )
