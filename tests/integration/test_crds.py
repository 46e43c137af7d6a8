"""The CRDs on a real kube-apiserver: they install, accept the examples and fully populated objects
with the same defaults as the pydantic models, refuse invalid objects naming the field, enforce
immutability, validate status writes, and print their columns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller.models.common import to_manifest
from controller.models.resources import parse_resource
from tests.support.apiserver import ApiServer
from tests.support.crd_cases import (
    INVALID,
    KINDS,
    MIN_ASSOCIATION,
    MIN_PEER,
    MIN_SERVER,
    MIN_SESSION,
    STATUSES,
    VALID_OBJECTS,
    Invalid,
    apply_defaults,
    examples,
    install_crds,
    load_crds,
    merge,
    schema,
)

pytestmark = pytest.mark.apiserver

PLURAL = {kind: crd["spec"]["names"]["plural"] for kind, crd in load_crds().items()}


def _manifest(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def _ref(obj: dict[str, Any]) -> str:
    return f"{PLURAL[obj['kind']]}.routeserver.dev/{obj['metadata']['name']}"


def _renamed(obj: dict[str, Any], prefix: str) -> dict[str, Any]:
    return merge(obj, {"metadata": {"name": f"{prefix}-{obj['metadata']['name']}"}})


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> Iterator[ApiServer]:
    install_crds(apiserver)
    yield apiserver


@pytest.fixture
def created(api: ApiServer) -> Iterator[list[dict[str, Any]]]:
    """Objects a test creates; deleted afterwards so tests do not see each other's objects."""
    objects: list[dict[str, Any]] = []
    yield objects
    for obj in objects:
        api.kubectl("delete", _ref(obj), "--ignore-not-found", "--wait=false", check=False)


def _create(api: ApiServer, created: list[dict[str, Any]], obj: dict[str, Any]) -> dict[str, Any]:
    result = api.kubectl("create", "-o", "json", "-f", "-", input=_manifest(obj), check=False)
    assert result.returncode == 0, result.stderr
    created.append(obj)
    return dict(json.loads(result.stdout))


def _get(api: ApiServer, obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(api.kubectl("get", _ref(obj), "-o", "json").stdout))


# -- installation ---------------------------------------------------------------------------------


def test_crds_are_cluster_scoped_with_short_names_and_the_routing_category(api: ApiServer) -> None:
    resources = api.kubectl("api-resources", "--api-group=routeserver.dev", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in resources.splitlines()[1:]}
    expected = {
        "routeservers": "rsrv",
        "routeserverpeers": "rspeer",
        "routetableassociations": "rtassoc",
        "routeserversessions": "rssess",
    }
    assert set(rows) == set(expected)
    for plural, short in expected.items():
        columns = rows[plural].split()
        assert columns[1] == short
        assert "routeserver.dev/v1alpha1" in columns and "false" in columns  # not namespaced
        assert "routing" in rows[plural]


# -- valid objects --------------------------------------------------------------------------------


def test_examples_are_created_and_read_back_with_the_model_defaults(
    api: ApiServer, created: list[dict[str, Any]]
) -> None:
    objects = examples()
    assert {o["kind"] for o in objects} >= {"RouteServer", "RouteServerPeer", "RouteTableAssociation"}
    for obj in objects:
        _create(api, created, obj)
    for obj in objects:
        stored = _get(api, obj)
        assert stored["spec"] == apply_defaults(obj, schema(obj["kind"]))["spec"]
        assert stored["spec"] == to_manifest(parse_resource(obj))["spec"]
    server = _get(api, next(o for o in objects if o["kind"] == "RouteServer"))
    assert server["spec"]["listenPort"] == 179
    assert server["spec"]["gracefulRestart"] == {"restartTimeSeconds": 120}
    peer = _get(api, next(o for o in objects if o["kind"] == "RouteServerPeer"))
    assert peer["spec"]["timers"] == {"holdTimeSeconds": 30, "connectRetryTimeSeconds": 30}
    assert peer["spec"]["gracefulRestart"] == {"enabled": False, "staleRoutesTimeSeconds": 360}


@pytest.mark.parametrize("obj", VALID_OBJECTS, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_valid_objects_are_accepted_with_the_same_defaults_as_the_models(
    api: ApiServer, obj: dict[str, Any]
) -> None:
    result = api.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=_manifest(obj), check=False
    )
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert stored["spec"] == to_manifest(parse_resource(obj))["spec"]
    assert stored["spec"] == apply_defaults(obj, schema(obj["kind"]))["spec"]


# -- invalid objects ------------------------------------------------------------------------------


def _refusal_lines(api: ApiServer, obj: dict[str, Any]) -> list[str]:
    result = api.kubectl("create", "--dry-run=server", "-f", "-", input=_manifest(obj), check=False)
    assert result.returncode != 0, f"accepted: {obj}"
    return result.stderr.splitlines()


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_objects_are_refused_with_a_message_naming_the_field(api: ApiServer, case: Invalid) -> None:
    lines = _refusal_lines(api, case.obj)
    assert any(case.path in line and case.api_text in line for line in lines), "\n".join(lines)


IMMUTABLE = [
    ("route-server-ref", MIN_PEER, {"spec": {"routeServerRef": {"name": "other"}}}, "spec.routeServerRef"),
    (
        "target-kind",
        MIN_ASSOCIATION,
        {"spec": {"target": {"node": None, "aws": {"routeTableID": "rtb-12345678"}}}},
        "spec.target",
    ),
    ("table", MIN_ASSOCIATION, {"spec": {"target": {"node": {"table": 101}}}}, "spec.target.node.table"),
    (
        "table-to-name",
        MIN_ASSOCIATION,
        {"spec": {"target": {"node": {"table": None, "tableName": "main"}}}},
        "spec.target.node",
    ),
    ("session-spec", MIN_SESSION, {"spec": {"node": "node-b"}}, "spec"),
]


@pytest.mark.parametrize(("name", "base", "patch", "path"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_identity_fields_are_immutable(
    api: ApiServer,
    created: list[dict[str, Any]],
    name: str,
    base: dict[str, Any],
    patch: dict[str, Any],
    path: str,
) -> None:
    obj = _renamed(base, f"immutable-{name}")
    _create(api, created, obj)
    refused = api.kubectl(
        "patch", _ref(obj), "--type=merge", "--dry-run=server", "-p", json.dumps(patch), check=False
    )
    assert refused.returncode != 0
    assert f"{path}: " in refused.stderr and "immutable" in refused.stderr, refused.stderr


def test_mutable_fields_can_change(api: ApiServer, created: list[dict[str, Any]]) -> None:
    association = _renamed(MIN_ASSOCIATION, "mutable")
    _create(api, created, association)
    api.kubectl(
        "patch", _ref(association), "--type=merge", "-p", '{"spec":{"target":{"node":{"metric":50}}}}'
    )
    assert _get(api, association)["spec"]["target"]["node"] == {"table": 100, "metric": 50}
    peer = _renamed(MIN_PEER, "mutable")
    _create(api, created, peer)
    api.kubectl("patch", _ref(peer), "--type=merge", "-p", '{"spec":{"peerAddress":"2001:db8::7"}}')
    assert _get(api, peer)["spec"]["peerAddress"] == "2001:db8::7"


# -- status ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_status_is_written_through_the_subresource_only(
    api: ApiServer, created: list[dict[str, Any]], kind: str
) -> None:
    base = next(o for o in (MIN_SERVER, MIN_PEER, MIN_ASSOCIATION, MIN_SESSION) if o["kind"] == kind)
    obj = _renamed(base, "status")
    stored = _create(api, created, {**obj, "status": STATUSES[kind]})
    assert "status" not in stored  # status in a create is dropped: the subresource owns it
    api.kubectl(
        "patch",
        _ref(obj),
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": STATUSES[kind]}),
    )
    got = _get(api, obj)
    assert got["status"] == STATUSES[kind]
    assert to_manifest(parse_resource(got))["status"] == STATUSES[kind]


@pytest.mark.parametrize(
    ("base", "status", "path"),
    [
        (MIN_SESSION, {"bgpState": "Up"}, "status.bgpState"),
        (MIN_SESSION, {"lastTransitionReason": "hold timer expired"}, "status.lastTransitionReason"),
        (MIN_SERVER, {"persistState": "Frozen"}, "status.persistState"),
        (MIN_PEER, {"sessionsEstablished": -1}, "status.sessionsEstablished"),
        (
            MIN_ASSOCIATION,
            {"rejectedRoutes": [{"prefix": "203.0.113.7/32"}]},
            "status.rejectedRoutes[0].reason",
        ),
    ],
    ids=["bgp-state", "reason-not-camel-case", "persist-state", "negative-count", "rejection-without-reason"],
)
def test_invalid_status_is_refused(
    api: ApiServer, created: list[dict[str, Any]], base: dict[str, Any], status: dict[str, Any], path: str
) -> None:
    obj = _renamed(base, f"bad-status-{path.replace('.', '-').replace('[0]', '').lower()}")
    _create(api, created, obj)
    refused = api.kubectl(
        "patch",
        _ref(obj),
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=False,
    )
    assert refused.returncode != 0 and path in refused.stderr, refused.stderr


# -- printing -------------------------------------------------------------------------------------


def _table(api: ApiServer, *args: str) -> list[list[str]]:
    """kubectl's table output split on runs of two or more spaces (headers contain single spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in api.kubectl("get", *args).stdout.splitlines()]


def test_printer_columns_show_state_peers_and_routes(api: ApiServer, created: list[dict[str, Any]]) -> None:
    server = _renamed(MIN_SERVER, "printed")
    _create(api, created, server)
    api.kubectl(
        "patch",
        _ref(server),
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": STATUSES["RouteServer"]}),
    )
    header, *rows = _table(api, "routeservers", server["metadata"]["name"])
    assert header == ["NAME", "ASN", "MODE", "READY", "ENDPOINTS", "PEERS UP", "ROUTES", "AGE"]
    assert rows[0][:7] == ["printed-min-server", "64512", "ActivePassive", "True", "2", "2", "5"]
    wide_header, *_ = _table(api, "routeservers", server["metadata"]["name"], "-o", "wide")
    assert "PERSIST" in wide_header

    session = _renamed(MIN_SESSION, "printed")
    _create(api, created, session)
    api.kubectl(
        "patch",
        _ref(session),
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": STATUSES["RouteServerSession"]}),
    )
    header, *rows = _table(api, "rssess", session["metadata"]["name"])
    assert header == ["NAME", "NODE", "PEER", "BGP", "BFD", "ACCEPTED", "INSTALLED", "ESTABLISHED", "AGE"]
    assert rows[0][:7] == ["printed-min-peer.node-a", "node-a", "min-peer", "Established", "Up", "2", "2"]

    peer = _renamed(MIN_PEER, "printed")
    _create(api, created, peer)
    header, *rows = _table(api, "rspeer", peer["metadata"]["name"])
    assert header[:4] == ["NAME", "ADDRESS", "ASN", "ROUTE SERVER"]
    assert rows[0][:4] == ["printed-min-peer", "198.51.100.10", "65001", "min-server"]

    association = _renamed(MIN_ASSOCIATION, "printed")
    _create(api, created, association)
    header, *rows = _table(api, "rtassoc", association["metadata"]["name"])
    assert header[:3] == ["NAME", "ROUTE SERVER", "TABLE"]
    assert rows[0][:3] == ["printed-min-assoc", "min-server", "100"]


def test_the_routing_category_lists_every_kind(api: ApiServer, created: list[dict[str, Any]]) -> None:
    for obj in (MIN_SERVER, MIN_PEER, MIN_ASSOCIATION, MIN_SESSION):
        _create(api, created, _renamed(obj, "category"))
    names = api.kubectl("get", "routing", "-o", "name").stdout.split()
    for obj in (MIN_SERVER, MIN_PEER, MIN_ASSOCIATION, MIN_SESSION):
        assert f"{obj['kind'].lower()}.routeserver.dev/category-{obj['metadata']['name']}" in names
