"""The controller manager in the test cluster (tests/support/apiserver.py) does what the operator
relies on: ownerReferences garbage collection of our custom resources (background and foreground),
complete namespace deletion, the `default` ServiceAccount, legacy token Secrets and the
`kube-root-ca.crt` ConfigMap in new namespaces; and the kube-apiserver alone can be stopped and
started again with the cluster's objects intact.

One cluster of its own for this module (not the session's shared one): the outage test stops its
API server.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.support.apiserver import ApiServer
from tests.support.crd_cases import API_VERSION, CRD_DIR, MIN_PEER, MIN_SESSION, load_crds, merge

pytestmark = pytest.mark.apiserver

# The garbage collector rescans discovery every 30 s, so it may need that long to start watching
# CRDs created after it started; the bound leaves a wide margin on a loaded machine.
EVENTUALLY_S = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.kubectl("apply", "-f", str(CRD_DIR))
        names = [f"crd/{crd['spec']['names']['plural']}.routeserver.dev" for crd in load_crds().values()]
        server.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        yield server


def _eventually(predicate: Callable[[], bool], what: str, timeout: float = EVENTUALLY_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not {what} within {timeout:.0f} s")


def _create(cluster: ApiServer, obj: dict[str, Any]) -> dict[str, Any]:
    result = cluster.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _exists(cluster: ApiServer, *ref: str) -> bool:
    result = cluster.kubectl("get", *ref, "--ignore-not-found", "-o", "name")
    return result.stdout.strip() != ""


def _get(cluster: ApiServer, *ref: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *ref, "-o", "json").stdout))


def _peer_with_owned_session(cluster: ApiServer, prefix: str) -> tuple[str, str]:
    """A RouteServerPeer and a RouteServerSession it owns; returns their kubectl references."""
    peer_name = f"{prefix}-peer"
    peer = _create(cluster, merge(MIN_PEER, {"metadata": {"name": peer_name}}))
    owner = {
        "apiVersion": API_VERSION,
        "kind": "RouteServerPeer",
        "name": peer_name,
        "uid": peer["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }
    session = _create(
        cluster,
        merge(
            MIN_SESSION,
            {
                "metadata": {"name": f"{peer_name}.node-a", "ownerReferences": [owner]},
                "spec": {"peerRef": {"name": peer_name}},
            },
        ),
    )
    assert session["metadata"]["ownerReferences"][0]["uid"] == peer["metadata"]["uid"]
    return (
        f"routeserverpeers.routeserver.dev/{peer_name}",
        f"routeserversessions.routeserver.dev/{peer_name}.node-a",
    )


def test_deleting_the_owner_peer_garbage_collects_its_session(cluster: ApiServer) -> None:
    peer, session = _peer_with_owned_session(cluster, "gc-background")
    cluster.kubectl("delete", peer, "--timeout=60s")
    assert not _exists(cluster, peer)
    _eventually(lambda: not _exists(cluster, session), "the owned session garbage-collected")


def test_foreground_deletion_leaves_nothing_terminating(cluster: ApiServer) -> None:
    peer, session = _peer_with_owned_session(cluster, "gc-foreground")
    result = cluster.kubectl(
        "delete", peer, "--cascade=foreground", f"--timeout={EVENTUALLY_S:.0f}s", check=False
    )
    assert result.returncode == 0, result.stderr
    _eventually(
        lambda: not _exists(cluster, peer) and not _exists(cluster, session),
        "the peer (foregroundDeletion finalizer removed) and its session gone",
    )
    left = _get(cluster, "routeserverpeers.routeserver.dev,routeserversessions.routeserver.dev")["items"]
    terminating = [o["metadata"]["name"] for o in left if o["metadata"].get("deletionTimestamp")]
    assert terminating == []


def test_a_deleted_namespace_is_emptied_and_disappears(cluster: ApiServer) -> None:
    ns = "kcm-delete-me"
    cluster.create_service_account(ns, "worker")
    cluster.apply(f"""
apiVersion: v1
kind: Secret
metadata:
  name: worker-token
  namespace: {ns}
  annotations: {{kubernetes.io/service-account.name: worker}}
type: kubernetes.io/service-account-token
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {{name: worker-lock, namespace: {ns}}}
spec: {{holderIdentity: worker, leaseDurationSeconds: 15}}
""")

    def token_filled_in() -> bool:
        data = _get(cluster, "secret", "worker-token", "-n", ns).get("data") or {}
        return "token" in data

    _eventually(token_filled_in, "the legacy token Secret filled in by the token controller")
    token = base64.b64decode(_get(cluster, "secret", "worker-token", "-n", ns)["data"]["token"]).decode()
    assert token.count(".") == 2  # a signed JWT
    for ref in ("serviceaccount/worker", "secret/worker-token", "lease.coordination.k8s.io/worker-lock"):
        assert _exists(cluster, ref, "-n", ns)

    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    _eventually(lambda: not _exists(cluster, "namespace", ns), f"namespace {ns} deleted completely")


def test_a_new_namespace_gets_the_root_ca_and_a_default_service_account(cluster: ApiServer) -> None:
    ns = "kcm-fresh"
    cluster.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
    _eventually(
        lambda: _exists(cluster, "configmap/kube-root-ca.crt", "-n", ns), "kube-root-ca.crt published"
    )
    published = _get(cluster, "configmap/kube-root-ca.crt", "-n", ns)["data"]["ca.crt"]
    assert published.strip() == (cluster.dir / "pki" / "ca.crt").read_text().strip()
    _eventually(lambda: _exists(cluster, "serviceaccount/default", "-n", ns), "the default ServiceAccount")


def test_the_apiserver_alone_stops_and_starts_with_objects_intact(cluster: ApiServer) -> None:
    ns = "kcm-outage"
    cluster.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
    cluster.apply(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: survivor, namespace: {ns}}}\ndata: {{k: v}}\n"
    )
    peer = _create(cluster, merge(MIN_PEER, {"metadata": {"name": "outage-peer"}}))
    etcd_pid, apiserver_pid, controller_manager_pid = cluster.pids()
    url = cluster.url

    cluster.stop_apiserver()
    with pytest.raises(ProcessLookupError):
        os.kill(apiserver_pid, 0)
    down = cluster.kubectl("get", "namespace", ns, "--request-timeout=5s", check=False)
    assert down.returncode != 0
    os.kill(etcd_pid, 0)  # etcd and the controller manager keep running through the outage
    os.kill(controller_manager_pid, 0)

    cluster.start_apiserver()
    assert cluster.url == url
    assert cluster.pids()[0] == etcd_pid and cluster.pids()[2] == controller_manager_pid
    assert cluster.pids()[1] != apiserver_pid
    assert _get(cluster, "configmap/survivor", "-n", ns)["data"] == {"k": "v"}
    again = _get(cluster, "routeserverpeers.routeserver.dev/outage-peer")
    assert again["metadata"]["uid"] == peer["metadata"]["uid"]
    # The controller manager reconnects: a namespace made after the outage is served too.
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kcm-after-outage\n")
    _eventually(
        lambda: _exists(cluster, "configmap/kube-root-ca.crt", "-n", "kcm-after-outage"),
        "kube-root-ca.crt published after the outage",
    )
