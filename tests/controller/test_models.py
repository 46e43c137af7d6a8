"""The pydantic models agree with the CRD YAML: same fields, constraints and defaults, and the same
invalid objects refused on the same fields (the standalone mode has no API server to do it)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from controller.models.common import LabelSelector, PrefixMatch, to_manifest
from controller.models.resources import (
    BfdProfile,
    EffectiveBfd,
    PeerBfd,
    RouteServer,
    RouteServerPeer,
    RouteServerPeerSpec,
    RouteServerSession,
    RouteServerSpec,
    RouteTableAssociation,
    TtlSecurity,
    parse_resource,
)
from tests.support.crd_cases import (
    FULL_PEER,
    FULL_SERVER,
    INVALID,
    KINDS,
    MIN_PEER,
    MIN_SERVER,
    STATUSES,
    VALID_OBJECTS,
    Invalid,
    apply_defaults,
    examples,
    merge,
    model_error_path,
    related,
    schema,
)

MODELS: dict[str, type[BaseModel]] = {
    "RouteServer": RouteServer,
    "RouteServerPeer": RouteServerPeer,
    "RouteTableAssociation": RouteTableAssociation,
    "RouteServerSession": RouteServerSession,
}


# -- structure: the model's JSON schema against the CRD's OpenAPI schema --------------------------


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and drop the null branch of Optional."""
    while True:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
            continue
        if "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if len(branches) == 1:
                node = branches[0]
                continue
        return node


def _plain_string(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" and "format" not in node


def _compare(crd: dict[str, Any], model: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    node = _resolve(model, defs)
    if "properties" in crd:
        crd_props, model_props = crd["properties"], node.get("properties", {})
        if set(crd_props) != set(model_props):
            return [f"{path}: fields differ: crd-only {set(crd_props) - set(model_props)}, "
                    f"model-only {set(model_props) - set(crd_props)}"]  # fmt: skip
        if set(crd.get("required", [])) != set(node.get("required", [])):
            problems.append(f"{path}: required {crd.get('required')} != {node.get('required')}")
        for name, sub in crd_props.items():
            scalar_default = "default" in sub and not isinstance(sub["default"], dict)
            if scalar_default and model_props[name].get("default") != sub["default"]:
                problems.append(
                    f"{path}.{name}: default {sub['default']!r} != {model_props[name].get('default')!r}"
                )
            problems += _compare(sub, model_props[name], defs, f"{path}.{name}")
        return problems
    kind = crd.get("type")
    if kind == "array":
        if node.get("type") != "array" or node.get("maxItems") != crd.get("maxItems"):
            problems.append(f"{path}: array maxItems {crd.get('maxItems')} != {node}")
        return problems + _compare(crd["items"], node.get("items", {}), defs, f"{path}[]")
    if kind == "object" and isinstance(crd.get("additionalProperties"), dict):
        if node.get("maxProperties") != crd.get("maxProperties"):
            problems.append(
                f"{path}: maxProperties {crd.get('maxProperties')} != {node.get('maxProperties')}"
            )
        return problems + _compare(
            crd["additionalProperties"], node["additionalProperties"], defs, f"{path}{{}}"
        )
    if kind == "object":
        return problems  # metadata: free-form on both sides
    if kind in ("integer", "boolean") and node.get("type") != kind:
        problems.append(f"{path}: type {kind} != {node}")
    for key in ("minimum", "maximum", "pattern"):
        if key in crd and node.get(key) != crd[key]:
            problems.append(f"{path}: {key} {crd[key]!r} != {node.get(key)!r}")
    if "enum" in crd and set(node.get("enum", [])) != set(crd["enum"]):
        problems.append(f"{path}: enum {crd['enum']} != {node.get('enum')}")
    if kind == "string" and _plain_string(node):
        for key in ("minLength", "maxLength"):
            if node.get(key) != crd.get(key):
                problems.append(f"{path}: {key} {crd.get(key)!r} != {node.get(key)!r}")
    return problems


@pytest.mark.parametrize("kind", KINDS)
def test_model_fields_and_constraints_match_the_crd(kind: str) -> None:
    model_schema = MODELS[kind].model_json_schema(by_alias=True)
    defs = model_schema.get("$defs", {})
    crd = schema(kind)
    problems: list[str] = []
    for part in ("spec", "status"):
        problems += _compare(crd["properties"][part], model_schema["properties"][part], defs, part)
    assert problems == []


def test_every_crd_kind_has_a_model() -> None:
    from tests.support.crd_cases import load_crds

    assert set(load_crds()) == set(MODELS) == set(KINDS)


# -- defaults: the model fills in exactly what the API server's structural defaulting does --------


@pytest.mark.parametrize(
    "obj", [*VALID_OBJECTS, *examples()], ids=lambda o: f"{o['kind']}/{o['metadata']['name']}"
)
def test_model_defaults_equal_the_crd_defaults(obj: dict[str, Any]) -> None:
    expected = apply_defaults(obj, schema(obj["kind"]))
    assert to_manifest(parse_resource(obj))["spec"] == expected["spec"]


def test_empty_objects_get_the_documented_defaults() -> None:
    spec = to_manifest(parse_resource(MIN_PEER))["spec"]
    assert spec["liveness"] == "BFD"
    assert spec["timers"] == {"holdTimeSeconds": 90, "connectRetryTimeSeconds": 30}
    assert spec["maxPrefixes"] == {"limit": 10000, "action": "Teardown", "warningThresholdPercent": 75}
    server = to_manifest(parse_resource(MIN_SERVER))["spec"]
    assert server["routeSelection"] == {"mode": "ActivePassive", "maxPaths": 8, "alwaysCompareMED": False}
    assert server["persistRoutes"] == {"enabled": False, "durationSeconds": 120}
    assert server["bfdProfile"] == {"minTxIntervalMilliseconds": 300, "detectMultiplier": 3, "passive": False}


@pytest.mark.parametrize("kind", KINDS)
def test_status_round_trips_through_the_model(kind: str) -> None:
    base = next(o for o in VALID_OBJECTS if o["kind"] == kind)
    dumped = to_manifest(parse_resource({**base, "status": STATUSES[kind]}))
    assert dumped["status"] == STATUSES[kind]


def test_status_ignores_fields_from_a_newer_agent_but_spec_refuses_unknown_fields() -> None:
    newer = {**MIN_SERVER, "status": {"routes": 3, "futureCounter": 1}}
    assert to_manifest(parse_resource(newer))["status"] == {"routes": 3}
    with pytest.raises(ValidationError):
        parse_resource(merge(MIN_SERVER, {"spec": {"peerAdress": "10.0.0.1"}}))


def test_unknown_kind_or_api_version_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_resource({**MIN_SERVER, "kind": "RouteReflector"})
    with pytest.raises(ValidationError):
        parse_resource({**MIN_SERVER, "apiVersion": "routeserver.dev/v1"})


# -- invalid objects: refused on the same field as by the API server ---------------------------


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_model_refuses_what_the_api_server_refuses(case: Invalid) -> None:
    with pytest.raises(ValidationError) as info:
        parse_resource(case.obj)
    found = [(model_error_path(e["loc"]), e["msg"]) for e in info.value.errors()]
    assert any(related(path, case.path) and case.expected_model_text in msg for path, msg in found), found


# -- API semantics that live in the models ------------------------------------------------------


def test_bfd_overrides_inherit_field_by_field_and_min_rx_follows_min_tx() -> None:
    profile = BfdProfile.model_validate({"minTxIntervalMilliseconds": 300, "detectMultiplier": 3})
    assert profile.effective() == EffectiveBfd(300, 300, 3, passive=False, multihop=False, auth=None)
    faster = PeerBfd.model_validate({"minTxIntervalMilliseconds": 100, "multihop": True})
    assert profile.effective(faster) == EffectiveBfd(100, 100, 3, passive=False, multihop=True, auth=None)
    explicit = BfdProfile.model_validate({"minRxIntervalMilliseconds": 500, "passive": True})
    got = explicit.effective(PeerBfd.model_validate({"minTxIntervalMilliseconds": 50, "passive": False}))
    assert (got.min_tx_ms, got.min_rx_ms, got.passive) == (50, 500, False)


def test_peer_allow_list_replaces_the_servers_and_an_empty_one_accepts_nothing() -> None:
    server = RouteServerSpec.model_validate(FULL_SERVER["spec"])
    inherits = RouteServerPeerSpec.model_validate(MIN_PEER["spec"])
    assert [str(p.prefix) for p in inherits.import_allow_list(server)] == [
        "203.0.113.0/24",
        "2001:db8:1::/48",
        "198.51.100.0/24",
    ]
    own = RouteServerPeerSpec.model_validate(FULL_PEER["spec"])
    assert [str(p.prefix) for p in own.import_allow_list(server)] == ["2001:db8:1::/48"]
    empty = RouteServerPeerSpec.model_validate({**MIN_PEER["spec"], "allowedPrefixes": []})
    assert empty.import_allow_list(server) == ()
    bare = RouteServerSpec.model_validate(MIN_SERVER["spec"])
    assert inherits.import_allow_list(bare) == ()


@pytest.mark.parametrize(
    ("entry", "lengths"),
    [
        ({"prefix": "203.0.113.0/24"}, (24, 24)),
        ({"prefix": "203.0.113.0/24", "le": 28}, (24, 28)),
        ({"prefix": "203.0.113.0/24", "ge": 28}, (28, 32)),
        ({"prefix": "2001:db8::/32", "ge": 48}, (48, 128)),
        ({"prefix": "2001:db8::/32", "ge": 48, "le": 64}, (48, 64)),
    ],
)
def test_prefix_match_lengths_follow_prefix_list_semantics(
    entry: dict[str, Any], lengths: tuple[int, int]
) -> None:
    match = PrefixMatch.model_validate(entry)
    assert (match.min_length, match.max_length) == lengths
    assert match.prefix == ip_network(entry["prefix"])


def test_label_selector_matches_like_kubernetes() -> None:
    selector = LabelSelector.model_validate(FULL_SERVER["spec"]["nodeSelector"])
    labels = {"routeserver.dev/endpoint": "true", "topology.kubernetes.io/zone": "a"}
    assert selector.matches(labels)
    assert not selector.matches({**labels, "topology.kubernetes.io/zone": "c"})
    assert not selector.matches({**labels, "node-role.kubernetes.io/control-plane": ""})
    assert not selector.matches({"topology.kubernetes.io/zone": "a"})
    not_in = LabelSelector.model_validate(
        {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["x"]}]}
    )
    assert not_in.matches({}) and not_in.matches({"k": "y"}) and not not_in.matches({"k": "x"})
    assert LabelSelector().matches({"anything": "goes"})


def test_addresses_are_parsed_and_written_back_in_api_form() -> None:
    peer = RouteServerPeerSpec.model_validate(FULL_PEER["spec"])
    assert peer.peer_address == ip_address("2001:db8::10")
    assert peer.local_address == ip_address("2001:db8::1")
    assert TtlSecurity(hops=1).min_ttl == 255
    loopback = RouteServerPeerSpec.model_validate({**MIN_PEER["spec"], "peerAddress": "127.0.0.1"})
    assert str(loopback.peer_address) == "127.0.0.1"
    with pytest.raises(ValidationError):
        RouteServerPeerSpec.model_validate({**MIN_PEER["spec"], "peerAddress": "::ffff:198.51.100.1"})
    with pytest.raises(ValidationError):
        RouteServerSpec.model_validate({"asn": 1, "listenAddresses": ["10.0.0.1", "10.0.0.1"]})
