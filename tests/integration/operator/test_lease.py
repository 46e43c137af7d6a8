"""Lease election against a real kube-apiserver: one writer per RouteServer among the agents.

Short timings keep it fast: duration 3 s, renew deadline 1.5 s, retry period 0.3 s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from controller.operator.kube import Kube
from controller.operator.lease import LeaseSet, lease_name
from tests.support.apiserver import ApiServer, free_port

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

DURATION = 3.0
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.3
MARGIN = 1.5  # seconds of scheduling slack on a loaded 2-core machine (still < DURATION - RETRY_PERIOD)
EVENTUALLY = 20.0

RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: agent-leases, namespace: {ns}}}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: agent-leases, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent-leases}}
subjects:
- {{kind: ServiceAccount, name: agent, namespace: {ns}}}
"""


@pytest.fixture
def namespace(apiserver: ApiServer) -> Iterator[str]:
    name = f"lease-{uuid.uuid4().hex[:8]}"
    apiserver.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    yield name
    apiserver.kubectl("delete", "namespace", name, "--wait=false", check=False)


class Agent:
    """One agent's LeaseSet and the on_change calls it saw."""

    def __init__(self, kubeconfig: Path, namespace: str, identity: str) -> None:
        self.kube = Kube.from_environment(str(kubeconfig))
        self.identity = identity
        self.changes: list[tuple[str, bool]] = []
        self.changed_at: list[float] = []  # monotonic time of each entry of `changes`
        self.leases = LeaseSet(
            self.kube,
            namespace,
            identity,
            on_change=self._changed,
            duration=DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
        )

    def _changed(self, route_server: str, leading: bool) -> None:
        self.changes.append((route_server, leading))
        self.changed_at.append(time.monotonic())

    def cut_off(self) -> None:
        """From now on every Lease call of this agent goes to a port nobody listens on."""
        configuration = copy.deepcopy(self.kube.configuration)
        configuration.host = f"https://127.0.0.1:{free_port()}"
        self.kube.coordination = client.CoordinationV1Api(client.ApiClient(configuration))


@pytest.fixture
async def agents(apiserver: ApiServer, namespace: str) -> AsyncIterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(identity: str, kubeconfig: Path | None = None, in_namespace: str | None = None) -> Agent:
        agent = Agent(kubeconfig or apiserver.kubeconfig, in_namespace or namespace, identity)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.leases.stop(release=False)
        agent.kube.close()


async def eventually(predicate: Callable[[], bool], within: float = EVENTUALLY) -> float:
    """Seconds until `predicate()` holds (polled every 20 ms); fails after `within` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def lease_spec(apiserver: ApiServer, namespace: str, route_server: str) -> dict[str, object]:
    out = apiserver.kubectl("get", "lease", lease_name(route_server), "-n", namespace, "-o", "json").stdout
    spec: dict[str, object] = json.loads(out)["spec"]
    return spec


def leaders(*agents: Agent, route_server: str = "rs1") -> list[str]:
    return [agent.identity for agent in agents if agent.leases.is_leader(route_server)]


async def two_agents_one_leader(make: Callable[..., Agent], **kwargs: object) -> tuple[Agent, Agent]:
    """node-a and node-b elect for rs1; returns (leader, follower) once both agree on the holder."""
    a, b = make("node-a", **kwargs), make("node-b", **kwargs)
    a.leases.ensure(["rs1"])
    b.leases.ensure(["rs1"])
    await eventually(lambda: len(leaders(a, b)) == 1 and a.leases.holder("rs1") == b.leases.holder("rs1"))
    leader, follower = (a, b) if a.leases.is_leader("rs1") else (b, a)
    assert follower.leases.holder("rs1") == leader.identity
    return leader, follower


async def test_two_agents_elect_exactly_one_leader(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    leader, follower = await two_agents_one_leader(agents)
    # Several renewals later (longer than a duration) still one leader, the same one.
    for _ in range(int(DURATION / RETRY_PERIOD) * 2):
        await asyncio.sleep(RETRY_PERIOD)
        assert leaders(leader, follower) == [leader.identity]
    spec = lease_spec(apiserver, namespace, "rs1")
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseDurationSeconds"] == int(DURATION)
    assert leader.changes == [("rs1", True)] and follower.changes == []
    assert leader.leases.leaders() == {"rs1"} and follower.leases.leaders() == set()


async def test_a_released_lease_is_taken_over_within_a_retry_period(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    leader, follower = await two_agents_one_leader(agents)
    await leader.leases.stop(release=True)
    released = time.monotonic()
    assert leader.changes == [("rs1", True), ("rs1", False)]
    took = await eventually(lambda: follower.leases.is_leader("rs1"))
    took_over = time.monotonic() - released
    print(f"takeover after release: {took_over:.3f} s (retry period {RETRY_PERIOD} s)")
    # Waiting out the old term would take at least DURATION - RETRY_PERIOD.
    assert took <= RETRY_PERIOD + MARGIN < DURATION - RETRY_PERIOD
    assert follower.changes == [("rs1", True)]
    spec = lease_spec(apiserver, namespace, "rs1")
    assert spec["holderIdentity"] == follower.identity and spec["leaseTransitions"] == 1


async def test_removing_a_route_server_releases_its_lease(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    leader, follower = await two_agents_one_leader(agents)
    leader.leases.ensure(["rs2"])
    took = await eventually(lambda: follower.leases.is_leader("rs1"))
    assert took <= RETRY_PERIOD + MARGIN
    assert not leader.leases.is_leader("rs1") and ("rs1", False) in leader.changes
    await eventually(lambda: leader.leases.is_leader("rs2"))
    assert leader.leases.route_servers() == {"rs2"}
    assert lease_spec(apiserver, namespace, "rs2")["holderIdentity"] == leader.identity


async def test_a_crashed_leader_is_replaced_after_the_lease_duration(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    leader, follower = await two_agents_one_leader(agents)
    await asyncio.sleep(RETRY_PERIOD * 3)
    assert leader.leases.is_leader("rs1")
    await leader.leases.stop(release=False)  # its tasks cancelled: no release, no more renewals
    crashed = time.monotonic()
    assert lease_spec(apiserver, namespace, "rs1")["holderIdentity"] == leader.identity
    await eventually(lambda: follower.leases.is_leader("rs1"))
    took_over = time.monotonic() - crashed
    print(f"takeover after crash: {took_over:.3f} s (duration {DURATION} s)")
    # The crashed leader renewed within its deadline before the crash, and the follower waits a
    # full duration from its sight of that renewal: never earlier than this.
    assert took_over > DURATION - RENEW_DEADLINE
    assert took_over <= DURATION + 2 * RETRY_PERIOD + MARGIN
    assert lease_spec(apiserver, namespace, "rs1")["holderIdentity"] == follower.identity


async def test_a_leader_cut_off_from_the_api_server_steps_down_before_anyone_takes_over(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    leader, follower = await two_agents_one_leader(agents)
    await asyncio.sleep(RETRY_PERIOD * 3)
    leader.cut_off()
    cut = time.monotonic()
    await eventually(lambda: not leader.leases.is_leader("rs1"))
    # The step-down is reported by the deadline timer even though no renew ever answers.
    await eventually(lambda: leader.changes[-1] == ("rs1", False))
    stepped_down = leader.changed_at[-1] - cut
    await eventually(lambda: follower.leases.is_leader("rs1"))
    took_over = follower.changed_at[-1] - cut
    print(f"cut off: step-down after {stepped_down:.3f} s, takeover after {took_over:.3f} s")
    assert stepped_down <= RENEW_DEADLINE + MARGIN
    assert leader.changed_at[-1] < follower.changed_at[-1]
    assert follower.changes == [("rs1", True)] and leader.changes == [("rs1", True), ("rs1", False)]
    assert leader.kube.failures["lease"] >= 2
    assert lease_spec(apiserver, namespace, "rs1")["holderIdentity"] == follower.identity


async def test_a_service_account_with_only_the_charts_lease_rights_can_elect(
    apiserver: ApiServer, namespace: str, agents: Callable[..., Agent]
) -> None:
    apiserver.create_service_account(namespace, "agent")
    apiserver.apply(RBAC.format(ns=namespace))
    token = apiserver.token_for(namespace, "agent")
    kubeconfig = apiserver.kubeconfig_for_token(token, f"agent-{namespace}")
    # The Role's verbs, exactly those of charts/kube-route-server/templates/role.yaml.
    role = Path(__file__).parents[3] / "charts/kube-route-server/templates/role.yaml"
    assert "verbs: [get, create, update]" in role.read_text()

    leader, follower = await two_agents_one_leader(agents, kubeconfig=kubeconfig)
    assert lease_spec(apiserver, namespace, "rs1")["holderIdentity"] == leader.identity
    # Nothing beyond those rights: the account cannot delete the Lease it holds.
    denied = apiserver.kubectl(
        "delete", "lease", lease_name("rs1"), "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    await leader.leases.stop(release=True)
    await eventually(lambda: follower.leases.is_leader("rs1"))

    # The rights are namespaced: in another namespace the same account cannot elect.
    elsewhere = f"{namespace}-other"
    apiserver.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {elsewhere}\n")
    try:
        outsider = agents("node-c", kubeconfig=kubeconfig, in_namespace=elsewhere)
        outsider.leases.ensure(["rs1"])
        await eventually(lambda: outsider.kube.failures["lease"] >= 2)
        assert not outsider.leases.is_leader("rs1") and outsider.changes == []
    finally:
        apiserver.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)
