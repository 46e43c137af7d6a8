"""OperatorSource against a real kube-apiserver: its own first listing, and kopf's.

kopf LISTs each kind itself before it watches, and never reports an object that was deleted before
its listing. An object deleted between the agent's first listing and kopf's must still leave the
store (and the submitted desired state) within seconds, not at the next full pass: a RouteTable-
Association deleted in that window would otherwise keep its routes installed for a resync interval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import cast

import pytest

from controller.agent import Agent
from controller.desired import DesiredState
from controller.operator.kube import ASSOCIATIONS, Kube
from controller.operator.source import KOPF_LISTING_RELISTS, OperatorOptions, OperatorSource
from tests.support.apiserver import ApiServer
from tests.support.crd_cases import install_crds

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

MARGIN = 5.0  # seconds of scheduling slack on a loaded 2-core machine


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> ApiServer:
    install_crds(apiserver)
    return apiserver


class RecordingAgent:
    """What OperatorSource uses of the agent: it records the sources of every submitted state."""

    def __init__(self) -> None:
        self.options = SimpleNamespace(handle_signals=False)
        self.submitted: list[tuple[str, ...]] = []
        self.new_submission = asyncio.Event()
        self.health_checks: list[Callable[[], bool]] = []

    def add_health_check(self, check: Callable[[], bool]) -> None:
        self.health_checks.append(check)

    async def submit(self, desired: DesiredState, sources: Sequence[str] = ()) -> None:
        self.submitted.append(tuple(sources))
        self.new_submission.set()

    def request_stop(self, keep_routes: bool | None = None) -> None:
        raise AssertionError("the source must not stop the agent here")


def _association(name: str) -> str:
    return f"""
apiVersion: routeserver.dev/v1alpha1
kind: RouteTableAssociation
metadata: {{name: {name}}}
spec:
  routeServerRef: {{name: vip}}
  target: {{node: {{table: 100}}}}
"""


async def test_an_object_deleted_before_kopfs_own_listing_leaves_the_store(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"gap-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(api.apply, _association(name))
    kube = Kube.from_environment(str(api.kubeconfig))
    # No full pass during the test: only the listings after kopf's can find the deletion.
    options = OperatorOptions(node_name="node-gap", namespace="default", resync_interval=3600)
    source = OperatorSource(kube, options)
    run_kopf = source._run_kopf

    async def delete_then_run_kopf() -> None:
        # After the source's first listing (it has the object), before kopf's (it will not).
        await asyncio.to_thread(api.kubectl, "delete", ASSOCIATIONS, name)
        await run_kopf()

    monkeypatch.setattr(source, "_run_kopf", delete_then_run_kopf)
    agent = RecordingAgent()
    source_name = f"RouteTableAssociation/{name}"
    try:
        await source.start(cast(Agent, agent))
        assert source_name in agent.submitted[0]  # the first listing saw it
        # The deletion reaches the store by a listing, and the agent by the submission after it.
        async with asyncio.timeout(sum(KOPF_LISTING_RELISTS) + MARGIN):
            while source_name in agent.submitted[-1]:
                agent.new_submission.clear()
                await agent.new_submission.wait()
        assert name not in {b["metadata"]["name"] for b in source.store.live(ASSOCIATIONS)}
        assert source_name not in agent.submitted[-1], agent.submitted[-1]
    finally:
        await source.stop()
        kube.close()
        await asyncio.to_thread(api.kubectl, "delete", ASSOCIATIONS, name, "--ignore-not-found", check=False)
