"""ECMP scale-out through `routeserver run`: three appliances, one anycast prefix, a multipath route.

Topology: rs (the route server, table 100) with fw-a (FRR, AS 65001, 10.0.1.2), fw-b (BIRD, AS
65002, 10.0.2.2) and fw-c (FRR, AS 65003, 10.0.3.2), each on its own link, BGP + BFD 100 ms x 3.
All three advertise 203.0.113.50/32 with an AS path of equal length (different neighbour ASes:
the decision process relaxes multipath across ASes, bgp/rib/decision.py), so with ECMP and
maxPaths 3 the kernel route has three next hops. A frozen appliance leaves the set within BFD
detection time (well inside the 9 s hold time), comes back when it thaws, and maxPaths 2 (a
SIGHUP reload) caps the set at two.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.daemons.base import Route, RoutingDaemon
from tests.support.netns import Lab
from tests.support.route_server import (
    PeerSpec,
    RouteServerProcess,
    ServerSpec,
    Spoke,
    appliance,
    route_details,
    star,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

ANYCAST = "203.0.113.50/32"
HOLD = 9


@dataclass
class Ecmp:
    server: RouteServerProcess
    spokes: list[Spoke]
    daemons: list[RoutingDaemon]

    def hops(self, *indexes: int) -> set[str]:
        return {self.spokes[i].address for i in indexes}


@pytest.fixture
def ecmp(lab: Lab) -> Iterator[Ecmp]:
    rs = lab.host("rs")
    spokes = star(rs, [lab.host("fw-a"), lab.host("fw-b"), lab.host("fw-c")])
    peers = tuple(
        PeerSpec(name, spoke.address, asn, hold_time=HOLD)
        for name, spoke, asn in zip(("fw-a", "fw-b", "fw-c"), spokes, (65001, 65002, 65003), strict=True)
    )
    spec = ServerSpec(peers, selection="ECMP", max_paths=3)
    server = RouteServerProcess(rs, spec)
    server.start()
    daemons = [
        appliance(kind, spoke, asn=asn, routes=[Route(ANYCAST)])
        for kind, spoke, asn in zip(("frr", "bird", "frr"), spokes, (65001, 65002, 65003), strict=True)
    ]
    for daemon in daemons:
        daemon.start()
    try:
        yield Ecmp(server, spokes, daemons)
    finally:
        server.close()


def test_ecmp_set_shrinks_on_freeze_grows_back_and_is_capped_by_max_paths(ecmp: Ecmp) -> None:
    s = ecmp.server
    all_three = ecmp.hops(0, 1, 2)
    s.wait_routes({ANYCAST: all_three}, 40, "a multipath route through all three appliances")
    s.wait_bfd_up(["fw-a", "fw-b", "fw-c"])
    rs = s.route_server()
    assert rs["selection"] == "ECMP" and rs["max_paths"] == 3
    (entry,) = rs["fib"]
    assert entry["prefix"] == ANYCAST and set(entry["nexthops"]) == all_three
    (route,) = route_details(s.host, 100, ANYCAST)
    assert route["protocol"] != "static" and "nhid" in route  # one route, a nexthop group of three
    assert s.table()["in_sync"]

    # fw-b (BIRD) freezes: BFD takes it out of the set, long before its hold timer would.
    started = time.monotonic()
    ecmp.spokes[1].host.freeze()
    s.wait_routes({ANYCAST: ecmp.hops(0, 2)}, 5, "fw-b out of the ECMP set")
    assert time.monotonic() - started < HOLD / 3
    assert s.peer("fw-b")["last_transition_reason"] == "BfdDown"
    assert s.peer("fw-a")["bgp_state"] == s.peer("fw-c")["bgp_state"] == "Established"

    # It thaws: the session and BFD come back and it rejoins the set.
    ecmp.spokes[1].host.unfreeze()
    s.wait_routes({ANYCAST: all_three}, 30, "fw-b back in the ECMP set")
    s.wait_bfd_up(["fw-b"])

    # maxPaths 2: the set is capped at two of the three (the RIB's deterministic order).
    s.reload(s.spec.with_(max_paths=2))
    s.wait(lambda: len(s.routes().get(ANYCAST, ())) == 2, 10, "the ECMP set capped at two next hops")
    capped = s.routes()[ANYCAST]
    assert capped < all_three
    (entry,) = s.route_server()["fib"]
    assert set(entry["nexthops"]) == capped and s.route_server()["max_paths"] == 2

    # A member of the capped set freezes: the third appliance takes its place.
    (index,) = [i for i, spoke in enumerate(ecmp.spokes) if spoke.address == sorted(capped)[0]]
    ecmp.spokes[index].host.freeze()
    s.wait_routes({ANYCAST: all_three - {ecmp.spokes[index].address}}, 5, "the spare appliance in the set")
    ecmp.spokes[index].host.unfreeze()
