"""A 60 s API outage through `routeserver agent`: routing goes on, a freeze still fails over, no crash.

For 60 s the API server is stopped (node-b's requests are refused) and node-a's relay is frozen
(its requests hang until they time out: a slow API, not a dead one). During it: no route, BGP
session or BFD state changes by itself, `/healthz` stays 200 (the staleness bound is longer than
an outage worth riding out), the event loop is never blocked, and freezing the active appliance
still moves the VIP on both nodes within the detection time. When the API returns the session
objects catch up within seconds, and neither agent restarted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.support.netns import Lab, wait_until
from tests.support.operator_lab import VIP, AgentProcess, Cluster, TwoNodes, running
from tests.support.route_server import PeerSpec, ServerSpec, kernel_routes

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.apiserver, pytest.mark.slow]

SPEC = ServerSpec((PeerSpec("fw-a", "10.0.1.11", 65001), PeerSpec("fw-b", "10.0.1.12", 65002)))
NODE_LABELS: dict[str, dict[str, str]] = {"node-a": {}, "node-b": {}}
FW_A, FW_B = "10.0.1.11", "10.0.1.12"
OUTAGE = 60.0
LOOP_LAG_BOUND = 0.1  # s: "never blocked" with a margin for a shared 2-core machine


@pytest.fixture
def setup(lab: Lab, cluster: Cluster) -> Iterator[TwoNodes]:
    with running(lab, cluster, SPEC, NODE_LABELS) as nodes:
        yield nodes


def _vip(agent: AgentProcess) -> set[str] | None:
    return kernel_routes(agent.host, 100).get(VIP)


def _metric(agent: AgentProcess, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", agent.metrics(), re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _snapshot(setup: TwoNodes) -> dict[str, tuple[tuple[object, ...], ...]]:
    """What must not change by itself: per node, each peer's BGP/BFD state and establishments."""
    result: dict[str, tuple[tuple[object, ...], ...]] = {}
    for name, agent in setup.agents.items():
        peers = agent.peers()
        result[name] = tuple(
            (
                p,
                peers[p]["bgp_state"],
                peers[p]["established_count"],
                (peers[p].get("bfd") or {}).get("state"),
            )
            for p in sorted(peers)
        )
    return result


def _session_states(cluster: Cluster) -> dict[tuple[str, str], str]:
    return {
        (o["spec"]["node"], o["spec"]["peerRef"]["name"]): (o.get("status") or {}).get("bgpState", "")
        for o in cluster.items("routeserversessions")
    }


def test_a_60s_api_outage_changes_nothing_and_a_freeze_still_fails_over(
    setup: TwoNodes, cluster: Cluster
) -> None:
    setup.wait_all(
        lambda a: all(p["bgp_state"] == "Established" for p in a.peers().values()), 60, "Established"
    )
    for agent in setup.agents.values():
        agent.wait_bfd_up(["fw-a", "fw-b"], 20)
    setup.wait_all(lambda a: _vip(a) == {FW_A}, 30, "the VIP via fw-a")
    four = {(node, peer): "Established" for node in NODE_LABELS for peer in ("fw-a", "fw-b")}
    wait_until(lambda: _session_states(cluster) == four, 20, what="four Established session objects")
    pids = {n: a.proc.pid for n, a in setup.agents.items() if a.proc is not None}
    before = _snapshot(setup)
    lag_before = {n: _metric(a, "routeserver_event_loop_lag_max_seconds") for n, a in setup.agents.items()}

    started = time.monotonic()
    setup.agents["node-a"].relay.pause()  # node-a: every request hangs
    cluster.api.stop_apiserver()  # node-b: every request is refused
    try:
        time.sleep(20)
        assert _snapshot(setup) == before, "a session changed during the outage"
        for agent in setup.agents.values():
            assert _vip(agent) == {FW_A}
            assert agent.healthz() == 200, agent.log()

        frozen = time.monotonic()
        setup.lab.hosts["fw-a"].freeze()
        setup.wait_all(lambda a: _vip(a) == {FW_B}, 5, "the VIP via fw-b during the outage")
        failover = time.monotonic() - frozen
        assert failover < 0.3 + 2.0, f"failover took {failover:.3f} s"

        time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
        for name, agent in setup.agents.items():
            assert agent.healthz() == 200, f"{name} unhealthy after {OUTAGE:.0f} s without the API"
            assert _metric(agent, "routeserver_watch_last_event_age_seconds") > 30
            lag = _metric(agent, "routeserver_event_loop_lag_max_seconds")
            assert lag < max(LOOP_LAG_BOUND, lag_before[name]), f"{name}: the loop was blocked {lag:.3f} s"
    finally:
        setup.agents["node-a"].relay.resume()
        cluster.api.start_apiserver()
    returned = time.monotonic()

    # Status catches up within seconds: fw-a's sessions are down on both nodes.
    def caught_up() -> bool:
        states = _session_states(cluster)
        return all(states.get((n, "fw-a")) not in (None, "Established") for n in NODE_LABELS)

    wait_until(caught_up, 20, what="the session objects caught up")
    print(f"\nfailover during the outage {failover * 1000:.0f} ms; status caught up "
          f"{time.monotonic() - returned:.1f} s after the API returned")  # fmt: skip
    assert {n: a.proc.pid for n, a in setup.agents.items() if a.proc is not None} == pids
    for agent in setup.agents.values():
        assert agent.proc is not None and agent.proc.alive()
    setup.lab.hosts["fw-a"].unfreeze()
    setup.wait_all(lambda a: _vip(a) == {FW_A}, 40, "the VIP back via fw-a")
