"""`/routes` of a real `routeserver run` with two real appliances: every path, the best one, the table.

Topology: rs (table 100) with fw-a (FRR, AS 65001, 10.0.1.2) announcing the VIP and a second
prefix, and fw-b (BIRD, AS 65002, 10.0.2.2) announcing the VIP with its AS prepended twice (the
standby) and a prefix the import policy does not allow. BGP + BFD 100 ms x 3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.daemons.base import Route, RoutingDaemon
from tests.support.netns import Lab
from tests.support.route_server import PeerSpec, RouteServerProcess, ServerSpec, Spoke, appliance, star

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"
SECOND = "203.0.113.20/32"
NOT_ALLOWED = "10.99.0.0/16"  # outside the import policy: fw-b's path is rejected, never stored


@dataclass
class Setup:
    a: Spoke
    b: Spoke
    server: RouteServerProcess
    fw_a: RoutingDaemon

    def page(self, query: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.server.get(f"/routes?routeServer=vip&{query}"))
        return data

    def route(self, prefix: str) -> dict[str, Any]:
        (route,) = self.page(f"prefix={prefix}")["routes"]
        result: dict[str, Any] = route
        return result


@pytest.fixture
def setup(lab: Lab) -> Iterator[Setup]:
    rs = lab.host("rs")
    a, b = star(rs, [lab.host("fw-a"), lab.host("fw-b")])
    spec = ServerSpec((PeerSpec("fw-a", a.address, 65001), PeerSpec("fw-b", b.address, 65002)))
    server = RouteServerProcess(rs, spec)
    server.start()
    fw_a = appliance("frr", a, asn=65001, routes=[Route(VIP), Route(SECOND)])
    fw_b = appliance("bird", b, asn=65002, routes=[Route(VIP, as_path_prepend=2), Route(NOT_ALLOWED)])
    fw_a.start()
    fw_b.start()
    try:
        yield Setup(a, b, server, fw_a)
    finally:
        server.close()


def test_routes_show_both_appliances_paths_the_best_and_the_table(setup: Setup) -> None:
    s = setup
    a, b = s.a.address, s.b.address
    s.server.wait_routes({VIP: {a}, SECOND: {a}}, 40, "the VIP and the second prefix via fw-a")
    s.server.wait(lambda: len(s.route(VIP)["rib"]) == 2, 10, "both appliances' paths for the VIP")
    s.server.wait(lambda: s.server.table()["in_sync"], 10, "the table in sync")

    route = s.route(VIP)
    paths = {p["peer"]: p for p in route["rib"]}
    assert set(paths) == {"fw-a", "fw-b"}
    fw_a, fw_b = paths["fw-a"], paths["fw-b"]
    assert (fw_a["peerAddress"], fw_a["nextHop"], fw_a["asPath"], fw_a["origin"]) == (a, a, "65001", "IGP")
    assert (fw_b["peerAddress"], fw_b["nextHop"], fw_b["asPath"]) == (b, b, "65002 65002 65002")
    assert fw_a["status"] == fw_b["status"] == "Accepted" and not fw_a["stale"]
    assert fw_a["best"] and not fw_b["best"]
    assert route["best"] == {"peers": ["fw-a"], "reason": "AsPathLength"}
    assert route["fib"] == {"nextHops": [a], "held": False}
    assert route["tables"] == [{"table": "vip-table", "state": "Installed", "nextHops": [a], "inSync": True}]

    # Paged in address order; the rejected-only prefix has no route (rejections are not stored).
    first = s.page("limit=1")
    assert [r["prefix"] for r in first["routes"]] == [VIP] and first["next"] == VIP and first["total"] == 2
    second = s.page(f"limit=1&after={VIP}")
    assert [r["prefix"] for r in second["routes"]] == [SECOND] and second["next"] is None
    assert "not kept in the RIB" in first["rejectedPaths"]

    # fw-a withdraws the VIP: fw-b's path is the only one, and the table follows.
    s.fw_a.withdraw([VIP])
    s.server.wait_routes({VIP: {b}, SECOND: {a}}, 10, "the VIP via fw-b")
    s.server.wait(lambda: s.route(VIP)["tables"][0].get("nextHops") == [b], 10, "/routes shows the table")
    route = s.route(VIP)
    assert [(p["peer"], p["best"]) for p in route["rib"]] == [("fw-b", True)]
    assert route["best"] == {"peers": ["fw-b"], "reason": "OnlyPath"} and route["fib"]["nextHops"] == [b]
