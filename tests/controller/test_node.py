"""Node discovery: the default router ID, and address discovery from inside and outside a loop."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

from controller.node import discover, host_addresses, node_context, pick_router_id


def test_router_id_prefers_a_non_loopback_ipv4_address() -> None:
    addresses = [
        ip_address("127.0.0.1"),
        ip_address("2001:db8::1"),
        ip_address("10.0.0.9"),
        ip_address("10.0.0.2"),
    ]
    assert pick_router_id(addresses) == IPv4Address("10.0.0.2")
    assert pick_router_id([ip_address("127.0.0.1")]) == IPv4Address("127.0.0.1")
    assert pick_router_id([ip_address("::1")]) is None


def test_node_context_reads_the_hosts_addresses_and_keeps_what_is_given() -> None:
    node = node_context("n1", {"zone": "a"}, IPv4Address("10.9.9.9"), namespace="routing")
    assert node.name == "n1" and node.label_map() == {"zone": "a"} and node.namespace == "routing"
    assert node.router_id == IPv4Address("10.9.9.9")
    assert ip_address("127.0.0.1") in node.addresses  # lo is up in every namespace we run in


async def test_discovery_from_a_running_loop_does_not_use_the_loops_thread() -> None:
    node = await discover("n2")
    assert node.name == "n2" and ip_address("127.0.0.1") in node.addresses
    assert ip_address("127.0.0.1") in host_addresses()  # the blocking form works inside a loop too
