"""`helm uninstall` withdraws the routes; a SIGTERM while the release exists (a rolling update) keeps them.

Without a kubelet the test plays its part: after `helm uninstall` (which deletes the DaemonSet and
the agents' RBAC) it sends SIGTERM to the agents, as the kubelet does when the garbage collector
deletes their pods. An agent that finds its DaemonSet gone (or its rights on it gone with the
release) withdraws its routes; the two-node tests show the other side (SIGTERM with the release in
place keeps them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.helm import CHART, NAMESPACE, RELEASE
from tests.support.netns import Lab
from tests.support.operator_lab import VIP, Cluster, TwoNodes, running
from tests.support.route_server import PeerSpec, ServerSpec, kernel_routes

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.apiserver, pytest.mark.slow]

SPEC = ServerSpec((PeerSpec("fw-a", "10.0.1.11", 65001), PeerSpec("fw-b", "10.0.1.12", 65002)))
NODE_LABELS: dict[str, dict[str, str]] = {"node-a": {}, "node-b": {}}


@pytest.fixture
def setup(lab: Lab, cluster: Cluster) -> Iterator[TwoNodes]:
    with running(lab, cluster, SPEC, NODE_LABELS) as nodes:
        yield nodes


def test_helm_uninstall_then_sigterm_withdraws_on_every_node(setup: TwoNodes, cluster: Cluster) -> None:
    setup.wait_all(lambda a: kernel_routes(a.host, 100).get(VIP) == {"10.0.1.11"}, 60, "the VIP via fw-a")
    assert cluster.helm is not None
    cluster.helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    for agent in setup.agents.values():
        assert agent.terminate() == 0, agent.log()
        assert "release_removed" in agent.log(), agent.log()
        assert kernel_routes(agent.host, 100) == {}, f"{agent.host.name} kept routes after uninstall"
    # Reinstall for any later test of this module's cluster.
    cluster.helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE)
