"""Build API objects and desired states compactly for controller tests."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

from controller.desired import DesiredState, NodeContext, Secrets
from controller.models.resources import RouteServer, RouteServerPeer, RouteTableAssociation, parse_resource
from controller.translate import translate

API = "routeserver.dev/v1alpha1"
NODE = NodeContext.of("node-a", {"role": "edge"}, IPv4Address("10.0.0.1"), [ip_address("10.0.0.1")])


def server(name: str = "vip", **spec: Any) -> RouteServer:
    body = {
        "apiVersion": API,
        "kind": "RouteServer",
        "metadata": {"name": name},
        "spec": {"asn": 64512, **spec},
    }
    resource = parse_resource(body)
    assert isinstance(resource, RouteServer)
    return resource


def peer(name: str, address: str, rs: str = "vip", **spec: Any) -> RouteServerPeer:
    body = {
        "apiVersion": API,
        "kind": "RouteServerPeer",
        "metadata": {"name": name},
        "spec": {"routeServerRef": {"name": rs}, "peerAddress": address, "peerASN": 65001, **spec},
    }
    resource = parse_resource(body)
    assert isinstance(resource, RouteServerPeer)
    return resource


def association(name: str, rs: str = "vip", **spec: Any) -> RouteTableAssociation:
    body = {
        "apiVersion": API,
        "kind": "RouteTableAssociation",
        "metadata": {"name": name},
        "spec": {"routeServerRef": {"name": rs}, "target": {"node": {"table": 100}}, **spec},
    }
    resource = parse_resource(body)
    assert isinstance(resource, RouteTableAssociation)
    return resource


def desired(
    servers: list[RouteServer],
    peers: list[RouteServerPeer] = (),  # type: ignore[assignment]
    associations: list[RouteTableAssociation] = (),  # type: ignore[assignment]
    secrets: Secrets | None = None,
) -> DesiredState:
    state = translate(servers, peers, associations, node=NODE, secrets=secrets)
    assert state.problems == (), state.problems
    return state
