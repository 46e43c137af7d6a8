"""The real API server fixture: CRDs and custom resources, kubectl and the Python client, RBAC."""

from __future__ import annotations

import json
import os
from typing import Any, cast

import pytest

from tests.support.apiserver import ApiServer

pytestmark = pytest.mark.apiserver

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.routeserver.dev
spec:
  group: smoke.routeserver.dev
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""
WIDGET = """
apiVersion: smoke.routeserver.dev/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
"""


def _wait_crd(server: ApiServer) -> None:
    server.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.routeserver.dev", "--timeout=30s"
    )


def test_server_reports_its_real_version(apiserver: ApiServer) -> None:
    version = json.loads(apiserver.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.3")


def test_crd_and_custom_resource_round_trip(apiserver: ApiServer) -> None:
    apiserver.apply(CRD)
    _wait_crd(apiserver)
    apiserver.apply(WIDGET)
    got = json.loads(apiserver.kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"] == {"size": 3}

    from kubernetes import client

    api = client.CustomObjectsApi(apiserver.client())
    raw = api.get_cluster_custom_object("smoke.routeserver.dev", "v1", "widgets", "w1")
    obj = cast("dict[str, Any]", raw)
    assert obj["spec"]["size"] == 3
    bad = apiserver.kubectl("apply", "-f", "-", input=WIDGET.replace("size: 3", "size: 0"), check=False)
    assert bad.returncode != 0 and "spec.size" in bad.stderr


def test_service_account_without_rights_is_forbidden_until_granted(apiserver: ApiServer) -> None:
    apiserver.apply(CRD)
    _wait_crd(apiserver)
    apiserver.create_service_account("smoke", "reader")
    token = apiserver.token_for("smoke", "reader")
    kubeconfig = apiserver.kubeconfig_for_token(token, "reader")
    denied = apiserver.kubectl("get", "widgets", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and "system:serviceaccount:smoke:reader" in denied.stderr
    apiserver.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: widget-reader}
rules:
- apiGroups: [smoke.routeserver.dev]
  resources: [widgets]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: widget-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: widget-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: smoke}
""")
    allowed = apiserver.kubectl("get", "widgets", kubeconfig=kubeconfig, check=False)
    assert allowed.returncode == 0, allowed.stderr


def test_closing_the_server_stops_etcd_the_apiserver_and_the_controller_manager() -> None:
    with ApiServer() as server:
        pids = server.pids()
        assert len(pids) == 3  # etcd, kube-apiserver, kube-controller-manager
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_helm_renders_and_installs_a_chart(apiserver: ApiServer, tmp_path: os.PathLike[str]) -> None:
    """The cached helm binary works against the real API server (chart tests build on this)."""
    import subprocess

    from tests.support.prereq import require_binary

    helm = require_binary("helm")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{tmp_path}/cache",
        "HELM_CONFIG_HOME": f"{tmp_path}/config",
        "HELM_DATA_HOME": f"{tmp_path}/data",
        "KUBECONFIG": str(apiserver.kubeconfig),
    }
    chart = f"{tmp_path}/smoke"
    subprocess.run([helm, "create", chart], check=True, capture_output=True, env=env, timeout=60)
    rendered = subprocess.run(
        [helm, "template", "smoke", chart], check=True, capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert "kind: Deployment" in rendered
    apiserver.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: helm-smoke\n")
    installed = subprocess.run(
        [helm, "install", "smoke", chart, "-n", "helm-smoke", "--set", "serviceAccount.create=false"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run(
        [helm, "list", "-n", "helm-smoke", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout
    assert json.loads(listed)[0]["status"] == "deployed"
