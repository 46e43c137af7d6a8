"""The Helm chart: strict lint, rendering with default and non-default values, values.schema.json,
CRDs identical to crds/, and a real `helm install` whose ServiceAccount gets exactly the rights the
agent needs (read the CRs and write their status; no Secrets outside its namespaces)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.apiserver import ApiServer
from tests.support.crd_cases import CRD_DIR, MIN_SERVER, STATUSES, load_crds
from tests.support.helm import CHART, FULLNAME, NAMESPACE, RELEASE, Helm


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm"))


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, [(d["kind"], d["metadata"]["name"]) for d in docs]
    return found[0]


def _kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


# -- static -------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_the_api_definition() -> None:
    top = {p.name: p.read_bytes() for p in CRD_DIR.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert len(top) == len(load_crds()) == 4
    assert chart == top


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "metrics.serviceMonitor.enabled=true", "--set", "rbac.secretNamespaces={routing}"]],
    ids=["default", "service-monitor"],
)
def test_helm_lint_strict_passes(helm: Helm, values: list[str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


def test_default_render_is_the_agent_daemonset_with_least_privilege(helm: Helm) -> None:
    docs = helm.template()
    assert _kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == FULLNAME
    (container,) = pod["containers"]
    assert container["image"] == "kube-route-server:0.1.0"
    assert container["args"] == ["agent"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_BIND_SERVICE"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["KRS_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["KRS_ADMIN_PORT"]["value"] == "9179"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9179, "protocol": "TCP"}]

    service = _one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == _one(docs, "DaemonSet")["spec"]["selector"]["matchLabels"]

    cluster_rules = _one(docs, "ClusterRole")["rules"]
    assert not any("secrets" in rule["resources"] for rule in cluster_rules)
    assert not any(
        verb in rule["verbs"] for rule in cluster_rules for verb in ("*", "update", "deletecollection")
    )
    role = _one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"leases", "secrets", "daemonsets"}
    (own,) = [rule for rule in role["rules"] if rule["resources"] == ["daemonsets"]]
    assert own == {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [f"{FULLNAME}-agent"],
                   "verbs": ["get"]}  # fmt: skip


def test_non_default_values_render(helm: Helm) -> None:
    docs = helm.template(
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=prometheus",
        "--set", "rbac.secretNamespaces={routing,firewalls}",
        "--set", "image.repository=registry.example/krs",
        "--set", "image.tag=1.2.3",
        "--set", "agent.adminPort=9500",
        "--set", "agent.logLevel=debug",
        "--set", "agent.priorityClassName=system-node-critical",
        "--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/krs",
    )  # fmt: skip
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    secret_roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == f"{FULLNAME}-secrets"]
    assert sorted(r["metadata"]["namespace"] for r in secret_roles) == ["firewalls", "routing"]
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == f"{FULLNAME}-secrets"
    ]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {NAMESPACE}
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/krs:1.2.3"
    assert container["ports"][0]["containerPort"] == 9500
    assert {e["name"]: e.get("value") for e in container["env"]}["KRS_LOG_LEVEL"] == "debug"
    assert pod["priorityClassName"] == "system-node-critical"
    sa = _one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/krs"}
    assert _one(docs, "Service")["spec"]["ports"][0]["port"] == 9500


def test_existing_service_account_and_no_rbac_render_only_the_workload(helm: Helm) -> None:
    docs = helm.template(
        "--set", "serviceAccount.create=false",
        "--set", "serviceAccount.name=prebuilt",
        "--set", "rbac.create=false",
        "--set", "metrics.service.enabled=false",
    )  # fmt: skip
    assert _kinds(docs) == ["DaemonSet"]
    assert _one(docs, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "prebuilt"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("agent.logLevel=loud", "/agent/logLevel"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("agent.adminPort=0", "/agent/adminPort"),
        ("agent.routeProtocol=2", "/agent/routeProtocol"),
        ("metrics.serviceMonitor.interval=30", "/metrics/serviceMonitor/interval"),
        ("rbac.secretNamespaces={Not_A_Namespace}", "/rbac/secretNamespaces/0"),
        ("agnet.logLevel=info", "agnet"),
    ],
)
def test_values_schema_rejects_bad_values(helm: Helm, setting: str, complaint: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_service_monitor_without_service_is_refused(helm: Helm) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART),
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "needs metrics.service.enabled" in result.stderr


# -- installed on a real API server -------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Helm]]:
    """A fresh API server (so the CRDs provably come from the chart) with the chart installed."""
    with ApiServer() as server:
        helm = Helm(tmp_path_factory.mktemp("helm-install"), server.kubeconfig)
        server.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: routing\n")
        helm.run(
            "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
            "--set", "rbac.secretNamespaces={routing}",
        )  # fmt: skip
        yield server, helm


@pytest.mark.apiserver
def test_install_creates_the_crds_and_rbac(installed: tuple[ApiServer, Helm]) -> None:
    server, helm = installed
    (release,) = json.loads(helm.run("list", "-n", NAMESPACE, "-o", "json").stdout)
    assert release["status"] == "deployed"
    names = [f"crd/{crd['spec']['names']['plural']}.routeserver.dev" for crd in load_crds().values()]
    server.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    server.kubectl("get", f"clusterrole/{FULLNAME}-agent", f"clusterrolebinding/{FULLNAME}-agent")
    server.kubectl("get", "-n", NAMESPACE, f"role/{FULLNAME}-agent", f"rolebinding/{FULLNAME}-agent")
    server.kubectl("get", "-n", NAMESPACE, f"serviceaccount/{FULLNAME}", f"daemonset/{FULLNAME}-agent")
    server.kubectl("get", "-n", "routing", f"role/{FULLNAME}-secrets", f"rolebinding/{FULLNAME}-secrets")


def _can(server: ApiServer, kubeconfig: Path, *args: str) -> bool:
    result = server.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.apiserver
def test_service_account_reads_routeservers_and_patches_status_but_not_secrets_cluster_wide(
    installed: tuple[ApiServer, Helm],
) -> None:
    server, _ = installed
    kubeconfig = server.kubeconfig_for_token(server.token_for(NAMESPACE, FULLNAME), "agent")
    server.apply(yaml.safe_dump({**MIN_SERVER, "metadata": {"name": "rbac-check"}}))
    for namespace in ("kube-system", NAMESPACE, "routing"):
        server.kubectl(
            "create", "secret", "generic", "md5", "-n", namespace, "--from-literal=password=s3cret"
        )

    got = server.kubectl("get", "routeservers", "-o", "json", kubeconfig=kubeconfig)  # a list, never a get
    assert [
        rs["spec"]["asn"] for rs in json.loads(got.stdout)["items"] if rs["metadata"]["name"] == "rbac-check"
    ] == [64512]
    # A merge patch of the status subresource, as the agent sends it (kubectl patch would GET first,
    # which the agent never needs and the chart does not grant).
    from kubernetes import client as k8s

    with server.client(kubeconfig) as api:
        k8s.CustomObjectsApi(api).patch_cluster_custom_object_status(
            "routeserver.dev", "v1alpha1", "routeservers", "rbac-check", {"status": STATUSES["RouteServer"]},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert (
        json.loads(server.kubectl("get", "routeserver", "rbac-check", "-o", "json").stdout)["status"][
            "routes"
        ]
        == 5
    )

    denied = server.kubectl("get", "secrets", "--all-namespaces", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    denied = server.kubectl("get", "secret", "md5", "-n", "kube-system", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    for namespace in (NAMESPACE, "routing"):
        secret = server.kubectl("get", "secret", "md5", "-n", namespace, "-o", "json", kubeconfig=kubeconfig)
        assert json.loads(secret.stdout)["data"]["password"]

    allowed = [
        ("list", "routeserverpeers.routeserver.dev"),
        ("watch", "routetableassociations.routeserver.dev"),
        ("patch", "routeserverpeers.routeserver.dev", "--subresource=status"),
        ("create", "routeserversessions.routeserver.dev"),
        ("delete", "routeserversessions.routeserver.dev"),
        ("patch", "routeserversessions.routeserver.dev", "--subresource=status"),
        ("watch", "nodes"),
        ("create", "events.events.k8s.io", "-n", "default"),
        ("create", "leases.coordination.k8s.io", "-n", NAMESPACE),
        ("update", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ]
    refused = [
        ("create", "routeservers.routeserver.dev"),
        ("delete", "routeservers.routeserver.dev"),
        ("update", "routeservers.routeserver.dev"),
        ("update", "routeservers.routeserver.dev", "--subresource=status"),
        ("patch", "routeserversessions.routeserver.dev"),
        ("create", "leases.coordination.k8s.io", "-n", "default"),
        ("get", "secrets", "-n", "default"),
        ("list", "secrets", "--all-namespaces"),
        ("list", "configmaps", "-n", NAMESPACE),
        ("create", "pods", "-n", NAMESPACE),
        ("patch", "nodes"),
        ("list", "nodes"),
        ("get", "routeservers.routeserver.dev"),
        ("create", "events", "-n", "default"),  # only events.k8s.io/v1 Events are written
        # No finalizer, so the configuration objects are never written; Secrets and Leases by name.
        ("patch", "routeserverpeers.routeserver.dev"),
        ("patch", "routeservers.routeserver.dev"),
        ("list", "secrets", "-n", NAMESPACE),
        ("watch", "secrets", "-n", NAMESPACE),
        ("delete", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ]
    assert [a for a in allowed if not _can(server, kubeconfig, *a)] == []
    assert [r for r in refused if _can(server, kubeconfig, *r)] == []


@pytest.mark.apiserver
def test_uninstall_removes_rbac_and_keeps_the_crds(installed: tuple[ApiServer, Helm]) -> None:
    server, helm = installed
    helm.run("uninstall", RELEASE, "-n", NAMESPACE)
    gone = server.kubectl("get", f"clusterrole/{FULLNAME}-agent", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # Helm never deletes CRDs (that would delete every route server object with them).
    names = [f"crd/{crd['spec']['names']['plural']}.routeserver.dev" for crd in load_crds().values()]
    server.kubectl("get", *names)
