"""TCP-MD5 keys by Secret reference through `routeserver agent`: keyed, rotated, deleted, never leaked.

fw-a (BIRD) peers with both nodes with a TCP-MD5 key that the RouteServerPeer takes from a Secret
in the release namespace. A rotation (new key in the Secret and on the appliance) re-keys both
nodes' sessions; deleting the Secret keeps the last key in use (the session stays up, never
silently unkeyed) and reports the problem. No key ever appears in the agents' logs, /status,
/metrics, the Events or the session objects.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from tests.support.daemons.bird import BirdDaemon
from tests.support.helm import NAMESPACE
from tests.support.netns import Lab, wait_until
from tests.support.operator_lab import Cluster, TwoNodes, running
from tests.support.route_server import PeerSpec, ServerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.apiserver, pytest.mark.slow]

FIRST_KEY = "first-Key-7f3a91"
SECOND_KEY = "second-Key-c42e07"
SECRET = "fw-a-md5"
SPEC = ServerSpec(
    (PeerSpec("fw-a", "10.0.1.11", 65001, auth_secret=SECRET), PeerSpec("fw-b", "10.0.1.12", 65002)),
)
NODE_LABELS: dict[str, dict[str, str]] = {"node-a": {}, "node-b": {}}


def _secret(key: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {"password": base64.b64encode(key.encode()).decode()},
    }


@pytest.fixture
def setup(lab: Lab, cluster: Cluster) -> Iterator[TwoNodes]:
    cluster.apply([_secret(FIRST_KEY)])
    try:
        with running(lab, cluster, SPEC, NODE_LABELS, passwords={"fw-a": FIRST_KEY},
                     agent_args=["--secret-interval", "1"]) as nodes:  # fmt: skip
            yield nodes
    finally:
        cluster.kubectl("delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found", check=False)


def _established(setup: TwoNodes, peer: str) -> dict[str, int]:
    return {n: a.peer(peer)["established_count"] for n, a in setup.agents.items()}


def test_md5_key_from_a_secret_rotates_and_survives_the_secret_being_deleted(
    setup: TwoNodes, cluster: Cluster
) -> None:
    setup.wait_all(lambda a: a.peer("fw-a")["bgp_state"] == "Established", 60, "fw-a Established with MD5")
    fw_b_before = _established(setup, "fw-b")

    # Rotate: the appliance and the Secret change keys; both nodes' sessions come back keyed anew.
    fw_a = setup.appliances["fw-a"]
    assert isinstance(fw_a, BirdDaemon)
    rotated_at = time.time()
    for address in (setup.addresses["node-a"], setup.addresses["node-b"]):
        fw_a.set_password(address, SECOND_KEY)
    cluster.apply([_secret(SECOND_KEY)])
    setup.wait_all(
        lambda a: (
            a.peer("fw-a")["bgp_state"] == "Established" and a.peer("fw-a")["established_at"] > rotated_at
        ),
        60,
        "fw-a Established again with the rotated key",
    )
    assert _established(setup, "fw-b") == fw_b_before, "the rotation touched another session"

    # Delete the Secret: the session stays up with the last key; the problem is reported.
    cluster.kubectl("delete", "secret", SECRET, "-n", NAMESPACE)
    setup.wait_all(
        lambda a: any("SecretNotFound" in p or "not found" in p for p in a.status()["config"]["problems"]),
        20,
        "the missing Secret reported",
    )

    def auth_condition() -> dict[str, str]:
        peer = cluster.get("routeserverpeer", "fw-a") or {}
        conditions = (peer.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "AuthSecretMissing"), {})

    wait_until(lambda: auth_condition().get("status") == "True", 20, what="AuthSecretMissing on fw-a")
    assert SECRET in auth_condition()["message"]

    def auth_events() -> set[str]:
        events = json.loads(
            cluster.kubectl(
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "--field-selector=regarding.name=fw-a",
                "-o",
                "json",
            )
        )["items"]
        return {e.get("reportingInstance", "") for e in events if e.get("reason") == "AuthSecretMissing"}

    wait_until(
        lambda: auth_events() == {"node-a", "node-b"}, 20, what="an AuthSecretMissing Event from each node"
    )
    rotated = _established(setup, "fw-a")
    for agent in setup.agents.values():
        assert agent.peer("fw-a")["bgp_state"] == "Established"
    assert _established(setup, "fw-a") == rotated

    # No key anywhere a user or a scraper can read.
    places = {}
    for name, agent in setup.agents.items():
        places[f"{name} logs"] = "\n".join(
            p.read_text(errors="replace") for p in agent.host.workdir.glob("agent*.log")
        )
        places[f"{name} /status"] = json.dumps(agent.status())
        places[f"{name} /metrics"] = agent.metrics()
    places["events"] = cluster.kubectl("get", "events.events.k8s.io", "-A", "-o", "json")
    places["sessions"] = cluster.kubectl("get", "routeserversessions", "-o", "json")
    places["peers"] = cluster.kubectl("get", "routeserverpeers", "-o", "json")
    assert all(places.values()), [where for where, text in places.items() if not text]
    for key in (FIRST_KEY, SECOND_KEY):
        encoded = base64.b64encode(key.encode()).decode()
        leaked = [where for where, text in places.items() if key in text or encoded in text]
        assert leaked == [], f"key found in {leaked}"
