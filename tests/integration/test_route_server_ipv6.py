"""IPv6 VIP failover through `routeserver run`: IPv6 transport sessions, IPv6 BFD, a /128 VIP.

Topology: rs (table 100) with fw-a (FRR, AS 65001, 2001:db8:1::2, active) and fw-b (BIRD, AS
65002, 2001:db8:2::2, standby: prepends), each on its own link with IPv6 addresses only (the route
server's router ID is configured: it has no IPv4 address to take one from). BGP over IPv6 carries
IPv6 unicast only; BFD runs single-hop over IPv6 at 100 ms x 3. The VIP 2001:db8:ff::10/128 must
be installed via the active appliance's global address, move to the standby within BFD detection
time when the active one freezes (the 9 s hold time is not what moves it), and come back.
"""

from __future__ import annotations

import time

import pytest

from tests.support.daemons.base import Route
from tests.support.netns import Lab
from tests.support.route_server import (
    Allow,
    PeerSpec,
    RouteServerProcess,
    ServerSpec,
    appliance,
    route_details,
    star,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP6 = "2001:db8:ff::10/128"
HOLD = 9


def test_ipv6_vip_fails_over_on_bfd_and_comes_back(lab: Lab) -> None:
    rs = lab.host("rs")
    a, b = star(rs, [lab.host("fw-a"), lab.host("fw-b")], ipv6=True)
    spec = ServerSpec(
        (
            PeerSpec("fw-a", a.address, 65001, hold_time=HOLD),
            PeerSpec("fw-b", b.address, 65002, hold_time=HOLD),
        ),
        allowed=(Allow("2001:db8:ff::/64", 128, 128),),
        router_id="10.255.255.1",
    )
    server = RouteServerProcess(rs, spec)
    server.start()
    try:
        fw_a = appliance("frr", a, asn=65001, routes=[Route(VIP6)], hold_time=HOLD)
        fw_b = appliance("bird", b, asn=65002, routes=[Route(VIP6, as_path_prepend=2)], hold_time=HOLD)
        fw_a.start()
        fw_b.start()
        server.wait_established(["fw-a", "fw-b"])
        server.wait_routes({VIP6: {a.address}}, 30, "the IPv6 VIP via the active appliance")
        server.wait_bfd_up(["fw-a", "fw-b"])
        fw_a.wait_bfd(a.server_address, "Up", timeout=10)
        # The BFD timers in /status are refreshed from the BFD thread every couple of seconds.
        server.wait(
            lambda: all(p["bfd"]["detection_time_ms"] == 300 for p in server.peers().values()),
            10,
            "negotiated 300 ms detection on both sessions",
        )
        peers = server.peers()
        for name, spoke in (("fw-a", a), ("fw-b", b)):
            assert peers[name]["address"] == spoke.address
            assert peers[name]["prefixes_accepted"] == 1
            assert peers[name]["bfd"]["local_address"] == spoke.server_address
        (route,) = route_details(rs, 100, VIP6)
        assert route["dst"] in (VIP6, VIP6.removesuffix("/128"))
        assert server.route_server()["fib"] == [{"prefix": VIP6, "nexthops": [a.address]}]

        started = time.monotonic()
        a.host.freeze()
        server.wait_routes({VIP6: {b.address}}, 5, "IPv6 failover to the standby")
        elapsed = time.monotonic() - started
        assert elapsed < HOLD / 3, f"failover took {elapsed:.2f}s"
        fw_a_view = server.peer("fw-a")
        assert fw_a_view["last_transition_reason"] == "BfdDown" and fw_a_view["bfd"]["down_count"] == 1
        assert fw_a_view["bgp_state"] != "Established"

        a.host.unfreeze()
        server.wait_routes({VIP6: {a.address}}, 30, "the IPv6 VIP back on the active appliance")
        server.wait_bfd_up(["fw-a"])
        assert set(server.routes()) == {VIP6}
    finally:
        server.close()
